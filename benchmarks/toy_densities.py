"""Gap to the floor: KL divergence of discrete and continuous flows from five 2-D densities.

Every model trains on 10,000 points of a set (seed 0) and is scored on 5,000 held-out points
(seed 1). Since NLL = entropy + KL(data || model), the gap between a model's held-out NLL and the
set's entropy is the model's KL divergence from the data. The script estimates it point by point,
as the mean over the held-out points of log p(x) - log q(x), with p the set's exact density
(``nfbook.toy_densities.log_prob``) and q the model's: the same expectation as held-out NLL minus
entropy, with far less noise, since most of the spread of -log q(x) over the points is the
spread of -log p(x), which the difference cancels. The table shows that estimate's standard error
and, for reference, the entropy itself (a Monte Carlo mean over 200,000 fresh points).

Each model is standardised the same way (a fixed ``Shift``/``Scale`` from the training data's
mean and standard deviation, its log-determinant counted in the NLL), trained with Adam and a
cosine-decaying learning rate for a fixed number of epochs (its recipe below, scaled by
``--budget``), and timed (tracing included, scoring excluded). Models take turns seed by seed.

Run from the repository root::

    .venv/bin/python benchmarks/toy_densities.py --seeds 0 1 2
    .venv/bin/python benchmarks/toy_densities.py --sets moons --models NSF --seeds 0 --budget 0.1
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402
import tf_keras as keras  # noqa: E402

import nfbook  # noqa: E402
from nfbook import toy_densities  # noqa: E402

from report import fmt, median, median_range, write  # noqa: E402

tfb = tfp.bijectors
tfd = tfp.distributions

SETS: dict[str, Callable[..., np.ndarray]] = {
    "moons": lambda n, seed: nfbook.data.moons(n, noise=0.05, seed=seed),
    "gaussian_mixture": lambda n, seed: nfbook.data.gaussian_mixture(n, seed=seed),
    "checkerboard": lambda n, seed: nfbook.data.checkerboard(n, seed=seed),
    "rings": lambda n, seed: nfbook.data.rings(n, seed=seed),
    "pinwheel": lambda n, seed: nfbook.data.pinwheel(n, seed=seed),
}


def split(set_name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A set's 10,000 training points (seed 0), 5,000 held-out points (seed 1) and the exact
    log-density of each held-out point."""
    x_train, x_test = SETS[set_name](10000, 0), SETS[set_name](5000, 1)
    return x_train, x_test, toy_densities.log_prob(set_name, x_test)


def table_cell(gaps: list[float | None], seconds: list[float]) -> str:
    """A model's cell: the median gap over seeds with its range (a stopped run, None, counts
    as the worst), how many runs the NaN guard stopped, and the median seconds."""
    stopped = sum(gap is None for gap in gaps)
    runs_stopped = f"{stopped} of {len(gaps)} runs stopped by a non-finite loss"
    if median(gaps) is None:
        gap_cell = runs_stopped
    else:
        gap_cell = median_range(gaps) + (f" ({runs_stopped})" if stopped else "")
    return f"{gap_cell}, {fmt(median(seconds), 0)} s"


@dataclass(frozen=True)
class Recipe:
    """How one model is built and trained: epochs at ``--budget 1``, batch size, peak rate."""

    build: Callable[[np.ndarray, np.ndarray], keras.Model]
    epochs: int
    batch_size: int
    learning_rate: float


def _flow_model(builder: Callable[[], tfb.Bijector]) -> Callable[..., keras.Model]:
    def build(loc: np.ndarray, scale: np.ndarray) -> keras.Model:
        bijector = tfb.Chain([tfb.Shift(loc), tfb.Scale(scale), builder()])
        return nfbook.FlowModel(bijector, ndim=2)
    return build


def _flow_matching(activation: str) -> Callable[..., keras.Model]:
    def build(loc: np.ndarray, scale: np.ndarray) -> keras.Model:
        return nfbook.FlowMatching(2, hidden_units=(128, 128, 128), activation=activation,
                                   time_features=4, coupling="ot", ot_block_size=64,
                                   loc=loc, scale=scale)
    return build


RECIPES: dict[str, Recipe] = {
    "MAF": Recipe(_flow_model(lambda: nfbook.maf(2, num_layers=5)), 60, 256, 2e-3),
    # twice the depth, the recipe otherwise the same
    "MAF, 10 layers": Recipe(_flow_model(lambda: nfbook.maf(2, num_layers=10)), 60, 256, 2e-3),
    "RealNVP": Recipe(_flow_model(lambda: nfbook.realnvp(2, num_layers=8)), 60, 256, 2e-3),
    "NSF": Recipe(_flow_model(lambda: nfbook.nsf(2)), 40, 256, 2e-3),
    "NSF, autoregressive": Recipe(_flow_model(lambda: nfbook.nsf(2, autoregressive=True)),
                                  40, 128, 1e-3),
    # finer splines, on the default interval and on a narrower one: thin structures (the
    # rings) need the resolution
    "NSF, 16 bins": Recipe(_flow_model(lambda: nfbook.nsf(2, num_bins=16)), 40, 256, 2e-3),
    "NSF, 32 bins": Recipe(_flow_model(lambda: nfbook.nsf(2, num_bins=32)), 40, 256, 2e-3),
    "NSF, 32 bins on [-4, 4]": Recipe(_flow_model(lambda: nfbook.nsf(2, num_bins=32, bound=4.0)),
                                      40, 256, 2e-3),
    "FFJORD": Recipe(_flow_model(lambda: nfbook.ffjord(2, hidden_units=(64, 64),
                                                       time_features=4)), 14, 128, 1e-2),
    "flow matching": Recipe(_flow_matching("tanh"), 300, 512, 1e-2),
    # the same field with SiLU, x sigmoid(x), in place of tanh
    "flow matching, SiLU": Recipe(_flow_matching("silu"), 300, 512, 1e-2),
}


# The columns of the benchmark page's main table; the other recipes are variations on them,
# run with --models.
MAIN_TABLE = ["MAF", "RealNVP", "NSF", "NSF, autoregressive", "NSF, 32 bins on [-4, 4]",
              "FFJORD", "flow matching"]


def _held_out_nll(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Per-point NLL; a FFJORD model is scored at tight solver tolerances."""
    bijector = model.bijector
    if isinstance(model, nfbook.FlowModel) and isinstance(bijector.bijectors[-1], tfb.FFJORD):
        precise = nfbook.ffjord(2, field=bijector.bijectors[-1].field, atol=1e-5, rtol=1e-5)
        bijector = tfb.Chain([*bijector.bijectors[:-1], precise])
    distribution = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(2)), bijector)
    log_prob = tf.function(distribution.log_prob,
                           input_signature=[tf.TensorSpec([None, 2], tf.float32)])
    return -np.concatenate([log_prob(chunk).numpy() for chunk in np.array_split(x, 10)])


def run_one(name: str, recipe: Recipe, x_train: np.ndarray, x_test: np.ndarray,
            log_p_test: np.ndarray, seed: int, budget: float
            ) -> tuple[float | None, float | None, float]:
    """Train one model; its gap (the mean of log p - log q over the held-out points), that
    mean's standard error, and the training seconds. A run that the NaN guard stops has no
    gap (None), which the median counts as the worst."""
    nfbook.set_seed(seed)
    loc, scale = x_train.mean(axis=0), x_train.std(axis=0)
    model = recipe.build(loc.astype(np.float32), scale.astype(np.float32))
    epochs = max(1, round(recipe.epochs * budget))
    steps = epochs * int(np.ceil(len(x_train) / recipe.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(recipe.learning_rate, decay_steps=steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule, global_clipnorm=1.0))
    start = time.perf_counter()
    try:
        model.fit(x_train, epochs=epochs, batch_size=recipe.batch_size, verbose=0)
    except nfbook.NonFiniteLossError as error:  # reported in the table, not retried
        seconds = time.perf_counter() - start
        print(f"  {name:20s} seed {seed}: stopped after {seconds:.0f} s: {error}", flush=True)
        return None, None, seconds
    seconds = time.perf_counter() - start
    log_ratio = log_p_test + _held_out_nll(model, x_test)
    gap, error = float(log_ratio.mean()), float(log_ratio.std(ddof=1) / np.sqrt(len(log_ratio)))
    print(f"  {name:20s} seed {seed}: gap {gap:.3f} +- {error:.3f} in {seconds:.0f} s "
          f"(largest log p - log q of one point: {log_ratio.max():.1f})", flush=True)
    return gap, error, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--models", nargs="+", default=MAIN_TABLE, choices=list(RECIPES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budget", type=float, default=1.0,
                        help="multiplies every recipe's epochs")
    parser.add_argument("--report", default="toy_densities")
    args = parser.parse_args()

    lines = [
        "Gap to the floor: the KL divergence of the model from the data, in nats, estimated as "
        "the mean of log p(x) - log q(x) over 5,000 held-out points; median over seeds "
        f"{args.seeds} (min to max in brackets), and median training seconds; budget "
        f"x{args.budget} of each recipe's epochs (`RECIPES` in the script).",
        "",
        "| data | entropy | gap s.e. | " + " | ".join(args.models) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in args.models) + " |",
    ]
    for set_name in args.sets:
        x_train, x_test, log_p_test = split(set_name)
        floor, _ = toy_densities.entropy(set_name, n=200_000)
        print(f"{set_name}: entropy {floor:.3f}", flush=True)
        results: dict[str, list[tuple[float, float, float]]] = {m: [] for m in args.models}
        for seed in args.seeds:
            for model_name in args.models:
                results[model_name].append(run_one(model_name, RECIPES[model_name], x_train,
                                                   x_test, log_p_test, seed, args.budget))
        cells = []
        for model_name in args.models:
            gaps = [gap for gap, _, _ in results[model_name]]
            seconds = [s for _, _, s in results[model_name]]
            cells.append(table_cell(gaps, seconds))
        gap_error = median([e for runs in results.values() for _, e, _ in runs
                            if e is not None])
        lines.append(f"| {set_name} | {floor:.3f} | {gap_error:.3f} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Gap s.e.: the median standard error of a gap (over the models and seeds of "
              "the row); gaps that differ by less are within the held-out sample's noise. "
              "Entropy: the floor of any held-out NLL, the mean of -log p over 200,000 fresh "
              "points."]
    write(args.report, lines)


if __name__ == "__main__":
    main()
