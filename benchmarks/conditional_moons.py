"""Conditional moons: held-out NLL of p(x | moon) for every nfbook builder, against its floor.

The data are the two moons with noise 0.1 (``nfbook.data.moons(..., labels=True)``), the
context is the moon's label (one column, 0 or 1). Every builder is made conditional with
``context_dim=1`` at its default size and trains on 10,000 points (seed 0) for a fixed number
of epochs: batches of 256, Adam with a cosine-decaying rate from 2e-3 and gradient clipping,
the data standardised by a fixed ``Shift``/``Scale`` from the training set (its log-determinant
counted). It is scored on 10,000 held-out points (seed 1). The floor is the conditional entropy
H(X | moon) of the exact density (``nfbook.data.moons_log_prob(..., moon=k)``), a Monte Carlo
mean over 40,000 fresh points. Medians over seeds, with min and max, and training seconds.

Run from the repository root::

    .venv/bin/python benchmarks/conditional_moons.py --seeds 0 1 2
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

from report import fmt, median, median_range, write  # noqa: E402

tfb = tfp.bijectors

NOISE = 0.1
EPOCHS = 40
BATCH_SIZE = 256
LEARNING_RATE = 2e-3

BUILDERS: dict[str, Callable[[], tfb.Bijector]] = {
    "MAF": lambda: nfbook.maf(2, num_layers=5, context_dim=1),
    "IAF": lambda: nfbook.iaf(2, num_layers=5, context_dim=1),
    "RealNVP": lambda: nfbook.realnvp(2, num_layers=8, context_dim=1),
    "NICE": lambda: nfbook.nice(2, num_layers=8, context_dim=1),
    "NSF": lambda: nfbook.nsf(2, context_dim=1),
    "NSF, autoregressive": lambda: nfbook.nsf(2, autoregressive=True, context_dim=1),
}


def labelled_moons(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x, moon = nfbook.data.moons(n, noise=NOISE, seed=seed, labels=True)
    return x, moon[:, None].astype(np.float32)


def floor(n: int = 40000, seed: int = 12345) -> tuple[float, float]:
    """H(X | moon) by Monte Carlo over ``n`` fresh points, and its standard error."""
    x, moon = nfbook.data.moons(n, noise=NOISE, seed=seed, labels=True)
    log_p = np.where(moon == 0, nfbook.data.moons_log_prob(x, NOISE, moon=0),
                     nfbook.data.moons_log_prob(x, NOISE, moon=1))
    return float(-log_p.mean()), float(log_p.std(ddof=1) / np.sqrt(n))


def run_one(name: str, x: np.ndarray, c: np.ndarray, x_test: np.ndarray, c_test: np.ndarray,
            seed: int) -> tuple[float, float]:
    """Train one conditional flow; its held-out NLL and training seconds."""
    nfbook.set_seed(seed)
    loc, scale = x.mean(axis=0), x.std(axis=0)
    bijector = tfb.Chain([tfb.Shift(loc), tfb.Scale(scale), BUILDERS[name]()])
    model = nfbook.FlowModel(bijector, ndim=2)
    steps = EPOCHS * int(np.ceil(len(x) / BATCH_SIZE))
    schedule = keras.optimizers.schedules.CosineDecay(LEARNING_RATE, decay_steps=steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule, global_clipnorm=1.0))
    start = time.perf_counter()
    model.fit(x, context=c, epochs=EPOCHS, batch_size=BATCH_SIZE, verbose=0)
    seconds = time.perf_counter() - start
    nll = float(model.evaluate(x_test, context=c_test, batch_size=5000, verbose=0))
    print(f"  {name:20s} seed {seed}: NLL {nll:.3f} in {seconds:.0f} s", flush=True)
    return nll, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(BUILDERS), choices=list(BUILDERS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--report", default="conditional_moons")
    args = parser.parse_args()

    x, c = labelled_moons(10000, 0)
    x_test, c_test = labelled_moons(10000, 1)
    entropy, error = floor()
    print(f"floor H(X | moon) = {entropy:.3f} +- {error:.3f}", flush=True)
    results: dict[str, list[tuple[float, float]]] = {m: [] for m in args.models}
    for seed in args.seeds:
        for name in args.models:
            results[name].append(run_one(name, x, c, x_test, c_test, seed))
    lines = [
        f"Conditional moons (noise {NOISE}, context: the moon's label): held-out NLL of "
        f"p(x | moon) in nats, median over seeds {args.seeds} (min to max), its gap to the "
        f"floor H(X | moon) = {entropy:.3f} (s.e. {error:.3f}), and median training seconds "
        f"({EPOCHS} epochs of {BATCH_SIZE}, every builder with `context_dim=1`).",
        "",
        "| flow | held-out NLL | gap to floor | seconds |",
        "| --- | --- | --- | --- |",
    ]
    for name in args.models:
        nlls = [nll for nll, _ in results[name]]
        seconds = median([s for _, s in results[name]])
        lines.append(f"| {name} | {median_range(nlls)} | "
                     f"{fmt(median(nlls) - entropy, 3)} | {fmt(seconds, 0)} |")
    write(args.report, lines)


if __name__ == "__main__":
    main()
