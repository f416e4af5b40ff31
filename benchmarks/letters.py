"""Chapter 7's comparison: MAF, IAF, RealNVP, NICE and NSF on the moons and on "SIGGRAPH".

Every flow gets the same depth, the same hidden layers and the same recipe (the splines of NSF
have ``--bins`` bins on ``[-bound, bound]``, 64 on [-3, 3] by default as in chapter 7): the data
standardised by a fixed affine map (the training set's mean and standard deviation per
coordinate), Adam with a cosine decay of the learning rate over the whole budget, and a fixed
number of steps. The held-out NLL is scored at regular checkpoints (scoring excluded from the
time), for several seeds. The table gives, per data set and flow, the median held-out NLL at
the end with its range over the seeds, the median at half the budget (a curve that has
flattened changes little in the second half), the gap from the floor (the data's entropy) and
the median training seconds, tracing included.

Data: ``moons(10000, noise=0.05, seed=0)``, held out ``moons(10000, seed=1)``; ``text("SIGGRAPH",
20000, seed=0)``, held out ``text("SIGGRAPH", 10000, seed=1)``, uniform inside the glyphs, whose
entropy is the log of the glyphs' area.

Run from the repository root::

    .venv/bin/python benchmarks/letters.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402
import tf_keras as keras  # noqa: E402
from matplotlib.font_manager import FontProperties  # noqa: E402
from matplotlib.textpath import TextPath  # noqa: E402

import nfbook  # noqa: E402

from report import fmt, median, write  # noqa: E402

tfb = tfp.bijectors

BUILDERS: dict[str, Callable[..., object]] = {
    "MAF": nfbook.maf, "IAF": nfbook.iaf, "RealNVP": nfbook.realnvp, "NICE": nfbook.nice,
    "NSF": nfbook.nsf,
}


def glyph_entropy(text: str) -> float:
    r"""log A, the entropy of the uniform density on the glyphs of ``text`` at the scale of
    :func:`nfbook.data.text` (text width 4): the shoelace area of the signed outlines."""
    path = TextPath((0, 0), text, size=1000, prop=FontProperties(family="DejaVu Sans",
                                                                 weight="bold"))
    polygons = path.to_polygons(closed_only=True)
    signed = sum(0.5 * np.sum(p[:-1, 0] * p[1:, 1] - p[1:, 0] * p[:-1, 1]) for p in polygons)
    corners = np.concatenate(polygons)
    scale = 4.0 / (corners[:, 0].max() - corners[:, 0].min())
    return float(np.log(abs(signed) * scale**2))


def data_sets() -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """Training set, held-out set and entropy (the floor of the held-out NLL) per data set."""
    return {
        "moons": (nfbook.data.moons(10000, seed=0), nfbook.data.moons(10000, seed=1),
                  nfbook.data.moons_entropy(noise=0.05)),
        "SIGGRAPH": (nfbook.data.text("SIGGRAPH", 20000, seed=0),
                     nfbook.data.text("SIGGRAPH", 10000, seed=1), glyph_entropy("SIGGRAPH")),
    }


def train(flow_name: str, train_x: np.ndarray, test_x: np.ndarray, seed: int,
          args: argparse.Namespace) -> tuple[list[float], float]:
    """Held-out NLL at each checkpoint, and the training seconds (tracing included)."""
    nfbook.set_seed(seed)
    spline = {"num_bins": args.bins, "bound": args.bound} if flow_name == "NSF" else {}
    flow = BUILDERS[flow_name](2, hidden_units=(args.hidden,) * 2, num_layers=args.layers,
                               seed=seed, **spline)
    standardise = nfbook.affine(train_x.mean(axis=0), train_x.std(axis=0))
    model = nfbook.FlowModel(tfb.Chain([standardise, flow]), ndim=2)
    schedule = keras.optimizers.schedules.CosineDecay(args.lr, decay_steps=args.steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule))
    held_out = tf.constant(test_x)
    score = tf.function(lambda: -tf.reduce_mean(model(held_out)))
    steps_per_epoch = len(train_x) // args.batch_size
    epochs = args.steps // steps_per_epoch
    stops = sorted({max(1, round(epochs * (i + 1) / args.checkpoints))
                    for i in range(args.checkpoints)})
    curve, seconds, done = [], 0.0, 0
    for stop in stops:
        start = time.perf_counter()
        model.fit(train_x, batch_size=args.batch_size, epochs=stop, initial_epoch=done,
                  verbose=0)
        seconds += time.perf_counter() - start
        curve.append(float(score()))
        done = stop
    return curve, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--flows", nargs="+", default=list(BUILDERS), choices=list(BUILDERS))
    parser.add_argument("--data", nargs="+", default=["moons", "SIGGRAPH"])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=128, help="units of both hidden layers")
    parser.add_argument("--bins", type=int, default=64, help="NSF: bins per spline")
    parser.add_argument("--bound", type=float, default=3.0, help="NSF: splines on [-B, B]")
    parser.add_argument("--steps", type=int, default=3000, help="training steps per run")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=2e-3, help="initial learning rate")
    parser.add_argument("--checkpoints", type=int, default=6,
                        help="held-out scores per run, evenly spaced (even: one at half)")
    parser.add_argument("--report", default="letters", help="name of the results file")
    args = parser.parse_args()

    sets = {name: value for name, value in data_sets().items() if name in args.data}
    curves: dict[tuple[str, str], list[list[float]]] = {}
    seconds: dict[tuple[str, str], list[float]] = {}
    for done, seed in enumerate(args.seeds, start=1):  # seed by seed: the machine's pace
        for data_name, (train_x, test_x, _) in sets.items():  # weighs on every row alike
            for flow_name in args.flows:
                curve, spent = train(flow_name, train_x, test_x, seed, args)
                curves.setdefault((data_name, flow_name), []).append(curve)
                seconds.setdefault((data_name, flow_name), []).append(spent)
                print(f"{data_name} {flow_name} seed {seed}: "
                      + " ".join(f"{v:.3f}" for v in curve) + f" ({spent:.0f} s)", flush=True)
        write(args.report, table(args, args.seeds[:done], sets, curves, seconds))


def table(args: argparse.Namespace, seeds: list[int],
          sets: dict[str, tuple[np.ndarray, np.ndarray, float]],
          curves: dict[tuple[str, str], list[list[float]]],
          seconds: dict[tuple[str, str], list[float]]) -> list[str]:
    """The report's lines: one row per data set and flow, over the seeds run so far."""
    lines = [
        f"Seeds {', '.join(map(str, seeds))}; every flow {args.layers} layers "
        f"with hidden layers [{args.hidden}, {args.hidden}] (NSF: {args.bins} bins on "
        f"[-{args.bound:g}, {args.bound:g}]), {args.steps} steps of batch "
        f"{args.batch_size}, Adam {args.lr:g} with a cosine decay to 0, data standardised per "
        f"coordinate. Held-out NLL in nats: \"median\" and \"range\" (lowest to highest) over "
        f"the seeds at the end, \"at half\" the median after half the steps, \"gap\" the "
        f"median minus the floor (the data's entropy); seconds of training, tracing included.",
        "",
        "| data | floor | flow | median | range | at half | gap | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for data_name, (_, _, floor) in sets.items():
        for flow_name in args.flows:
            runs = np.array(curves[data_name, flow_name])
            final, half = runs[:, -1], runs[:, max(runs.shape[1] // 2 - 1, 0)]
            spent = fmt(median(seconds[data_name, flow_name]), 0)
            lines.append(
                f"| {data_name} | {floor:.3f} | {flow_name} | {np.median(final):.3f} | "
                f"{final.min():.3f} to {final.max():.3f} | {np.median(half):.3f} | "
                f"{np.median(final) - floor:.3f} | {spent} |")
    return lines


if __name__ == "__main__":
    main()
