"""Chapter 5's recipe over several seeds: an affine MAF against a spline MAF on the moons.

Both flows are trained exactly as in chapter 5: ``moons(10000, seed=0)`` standardised by a fixed
``Shift``/``Scale`` of the training set's mean and standard deviation, 40 epochs of batches of
128, Adam from 1e-3 with a cosine decay to zero, in ``nfbook.FlowModel``; the held-out NLL is
scored on ``moons(10000, seed=1)``. The affine MAF is ``nfbook.maf(2, num_layers=5)``, the
spline MAF ``nfbook.nsf(2, autoregressive=True)`` (4 layers of rational-quadratic splines with 8
bins, conditioned by MADE networks). The table gives every seed's held-out NLL, their median and
worst, and the median training seconds (tracing included). The flows take turns seed by seed.

Run from the repository root::

    .venv/bin/python benchmarks/moons_seeds.py --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402
import tf_keras as keras  # noqa: E402

import nfbook  # noqa: E402

from report import median, write  # noqa: E402

tfb = tfp.bijectors

FLOWS: dict[str, Callable[[], tfb.Chain]] = {
    "affine MAF, 5 layers": lambda: nfbook.maf(2, num_layers=5),
    "spline MAF, 4 layers": lambda: nfbook.nsf(2, autoregressive=True),
}


def run_one(build: Callable[[], tfb.Chain], x_train: np.ndarray, x_val: np.ndarray,
            seed: int) -> tuple[float, float]:
    """Chapter 5's recipe for one flow and seed: held-out NLL and training seconds."""
    nfbook.set_seed(seed)
    standardise = tfb.Chain([tfb.Shift(x_train.mean(axis=0)), tfb.Scale(x_train.std(axis=0))])
    model = nfbook.FlowModel(tfb.Chain([standardise, *build().bijectors]), ndim=2)
    epochs, batch_size = 40, 128
    steps = epochs * int(np.ceil(len(x_train) / batch_size))
    model.compile(optimizer=keras.optimizers.Adam(
        keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=steps)))
    start = time.perf_counter()
    model.fit(x_train, epochs=epochs, batch_size=batch_size, verbose=0)
    seconds = time.perf_counter() - start
    return float(model.evaluate(x_val, verbose=0)), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--report", default="moons_seeds")
    args = parser.parse_args()

    x_train, x_val = nfbook.data.moons(10000, seed=0), nfbook.data.moons(10000, seed=1)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in FLOWS}
    for seed in args.seeds:
        for name, build in FLOWS.items():
            nll, seconds = run_one(build, x_train, x_val, seed)
            results[name].append((nll, seconds))
            print(f"  seed {seed} {name}: NLL {nll:.4f} in {seconds:.0f} s", flush=True)

    lines = [
        f"Held-out NLL (nats) of chapter 5's recipe for each seed; the moons' entropy, the floor, "
        f"is {nfbook.data.moons_entropy():.3f}.",
        "",
        "| flow | " + " | ".join(f"seed {s}" for s in args.seeds)
        + " | median | worst | training (s) |",
        "| --- | " + " | ".join("---" for _ in args.seeds) + " | --- | --- | --- |",
    ]
    for name, runs in results.items():
        nlls = [nll for nll, _ in runs]
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in nlls)
                     + f" | {median(nlls):.3f} | {max(nlls):.3f} | "
                     f"{median([s for _, s in runs]):.0f} |")
    write(args.report, lines)


if __name__ == "__main__":
    main()
