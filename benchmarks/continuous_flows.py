"""Chapters 10 and 11's comparison: FFJORD (maximum likelihood) against flow matching.

Every model learns the same kind of vector field on the moons of chapter 5, with the recipes of
the chapters: FFJORD as in chapter 10 (``nfbook.ffjord(2, hidden_units=(64, 64),
time_features=4)`` in standardised coordinates, 14 epochs of batches of 128, Adam from 1e-2
with a cosine decay and gradients clipped to norm 1); flow matching as in chapter 11 (a field
of three layers of 128 units, ``time_features=4``, Adam from 1e-2 with a cosine decay, 20 steps
per compiled call), with independent pairs for 8,000 steps and with optimal-transport pairs in
blocks of 64 for 6,000.

For each model and seed the table gives the held-out NLL (2,000 points, solver tolerances
1e-5), the training steps and seconds (tracing included), the milliseconds per step, the seconds to
sample 10,000 points with the same solver (compiled, warmed up, best of three), the field
evaluations that solve took, the mean length of the paths of 2,000 base points (the polyline
through 101 equally spaced times, in standardised coordinates), and the 2-Wasserstein distance
between 1,000 samples drawn with 5 Euler steps and 1,000 held-out points. Medians over the
seeds, with the range in brackets. The models take turns seed by seed.

Run from the repository root::

    .venv/bin/python benchmarks/continuous_flows.py --seeds 0 1 2
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

import nfbook  # noqa: E402
from nfbook.optimal_transport import wasserstein2  # noqa: E402

from report import median_range, write  # noqa: E402

tfb = tfp.bijectors
tfd = tfp.distributions

X_TRAIN = nfbook.data.moons(10000, seed=0)
X_VAL = nfbook.data.moons(2000, seed=1)
LOC, SCALE = X_TRAIN.mean(axis=0), X_TRAIN.std(axis=0)
BASE = tfd.MultivariateNormalDiag(loc=[0.0, 0.0])
PRECISE = tfp.math.ode.DormandPrince(atol=1e-5, rtol=1e-5, first_step_size=0.1)


def _steps(epochs: int, batch_size: int) -> int:
    return epochs * int(np.ceil(len(X_TRAIN) / batch_size))


def ffjord_model(epochs: int, batch_size: int, model_class: type = nfbook.FlowModel
                 ) -> nfbook.FlowModel:
    """Chapter 10's FFJORD, compiled: the standardised moons, a 64-64 field with 4 time
    features, Adam 1e-2 with a cosine decay over ``epochs``, gradients clipped at norm 1."""
    standardize = tfb.Chain([tfb.Shift(LOC), tfb.Scale(SCALE)])
    ode = nfbook.ffjord(2, hidden_units=(64, 64), time_features=4)
    model = model_class(tfb.Chain([standardize, ode]), ndim=2)
    model.compile(optimizer=keras.optimizers.Adam(
        keras.optimizers.schedules.CosineDecay(1e-2, _steps(epochs, batch_size)),
        global_clipnorm=1.0))
    return model


def train_ffjord() -> tuple[Callable, Callable, int, float]:
    """Chapter 10's FFJORD: its field, its precise log-density, steps and seconds."""
    epochs, batch_size = 14, 128
    steps = _steps(epochs, batch_size)
    model = ffjord_model(epochs, batch_size)
    standardize, ode = model.bijector.bijectors
    start = time.perf_counter()
    model.fit(X_TRAIN, epochs=epochs, batch_size=batch_size, verbose=0)
    seconds = time.perf_counter() - start
    precise = nfbook.ffjord(2, field=ode.field, atol=1e-5, rtol=1e-5)
    log_prob = tf.function(
        tfd.TransformedDistribution(BASE, tfb.Chain([standardize, precise])).log_prob,
        input_signature=[tf.TensorSpec([None, 2], tf.float32)])
    return ode.field, log_prob, steps, seconds


def train_flow_matching(coupling: str) -> tuple[Callable, Callable, int, float]:
    """Chapter 11's flow-matching model with independent or optimal-transport pairs."""
    extra = {"ot_block_size": 64} if coupling == "ot" else {}
    model = nfbook.FlowMatching(2, hidden_units=(128, 128, 128), time_features=4, loc=LOC,
                                scale=SCALE, coupling=coupling, **extra)
    epochs, batch_size = (400 if coupling == "independent" else 300), 512
    steps = _steps(epochs, batch_size)
    model.compile(optimizer=keras.optimizers.Adam(
        keras.optimizers.schedules.CosineDecay(1e-2, steps)))
    start = time.perf_counter()
    model.fit(X_TRAIN, epochs=epochs, batch_size=batch_size, verbose=0)
    seconds = time.perf_counter() - start
    return model.field, model.log_prob, steps, seconds


def _euler(field: Callable, z: tf.Tensor, num_steps: int) -> np.ndarray:
    for k in range(num_steps):
        z = z + field(k / num_steps, z) / num_steps
    return LOC + SCALE * z.numpy()


def measure(field: Callable, log_prob: Callable, steps: int, seconds: float,
            seed: int) -> dict[str, float]:
    """Every column of the table for one trained model."""
    sampler = tf.function(lambda z: PRECISE.solve(field, 0.0, z, solution_times=[1.0]))
    z_10k = BASE.sample(10000, seed=(seed, 16))
    evaluations = int(sampler(z_10k).diagnostics.num_ode_fn_evaluations)  # traces, warms up
    sampling = []
    for _ in range(3):
        start = time.perf_counter()
        sampler(z_10k).states.numpy()
        sampling.append(time.perf_counter() - start)
    times = np.linspace(0.0, 1.0, 101, dtype=np.float32)
    states = PRECISE.solve(field, 0.0, BASE.sample(2000, seed=(seed, 18)),
                           solution_times=times).states.numpy()
    length = float(np.linalg.norm(np.diff(states, axis=0), axis=-1).sum(0).mean())
    euler = _euler(field, BASE.sample(1000, seed=(seed, 26)), 5)
    return {"NLL": float(-tf.reduce_mean(log_prob(X_VAL))), "steps": steps,
            "training (s)": seconds, "ms per step": 1e3 * seconds / steps,
            "sampling 10k (s)": min(sampling), "field evaluations": evaluations,
            "path length": length, "W2, 5 Euler steps": wasserstein2(euler, X_VAL[:1000])}


MODELS: dict[str, Callable[[], tuple[Callable, Callable, int, float]]] = {
    "FFJORD (max. likelihood)": train_ffjord,
    "flow matching, independent pairs": lambda: train_flow_matching("independent"),
    "flow matching, OT pairs": lambda: train_flow_matching("ot"),
}
COLUMNS = [("NLL", 3), ("steps", 0), ("training (s)", 0), ("ms per step", 1),
           ("sampling 10k (s)", 2), ("field evaluations", 0), ("path length", 2),
           ("W2, 5 Euler steps", 3)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--report", default="continuous_flows")
    args = parser.parse_args()

    results: dict[str, list[dict[str, float]]] = {name: [] for name in args.models}
    for seed in args.seeds:
        for name in args.models:
            nfbook.set_seed(seed)
            row = measure(*MODELS[name](), seed=seed)
            results[name].append(row)
            print(f"  seed {seed} {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()),
                  flush=True)

    lines = [
        f"Medians over seeds {args.seeds}, range in brackets; the moons' entropy (the floor of "
        f"the NLL) is {nfbook.data.moons_entropy():.3f} nats, and E|x1 - x0| for random pairs "
        "bounds the exact flow-matching field's mean path length.",
        "",
        "| model | " + " | ".join(name for name, _ in COLUMNS) + " |",
        "| --- | " + " | ".join("---" for _ in COLUMNS) + " |",
    ]
    for name, rows in results.items():
        lines.append(f"| {name} | " + " | ".join(median_range([r[c] for r in rows], d)
                                                 for c, d in COLUMNS) + " |")
    write(args.report, lines)


if __name__ == "__main__":
    main()
