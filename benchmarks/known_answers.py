"""Known answers: every builder, at its default settings, fitted to correlated Gaussians.

The data are :math:`N(0, \\Sigma)` in D = 2, 3, 4, 8 and 16 dimensions, with a fixed random
covariance (:func:`covariance`), whose entropy :math:`\\tfrac12 \\log\\det(2 \\pi e \\Sigma)` is
the floor of any model's held-out NLL. The gap is the held-out NLL minus the true NLL of the
same points (an estimate of :math:`KL(p \\| q)`, which has the same expectation as held-out
NLL minus entropy, with far less noise in 16 dimensions). ``tests/test_known_answers.py``
runs the same problem at smaller budgets.

Run from the repository root::

    .venv/bin/python benchmarks/known_answers.py
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402
import tf_keras as keras  # noqa: E402

import nfbook  # noqa: E402

from report import median, write  # noqa: E402

tfd = tfp.distributions

BUILDERS = ["maf", "iaf", "realnvp", "nice", "nsf"]
DIMS = [2, 3, 4, 8, 16]


def covariance(ndim: int) -> np.ndarray:
    """A fixed random covariance: variances :math:`e^{-1.5}` to :math:`e^{1.5}`, evenly
    spaced in log, along the axes of a random rotation (condition number
    :math:`e^3 \\approx 20`); ``tests/test_known_answers.py`` uses the same."""
    rng = np.random.default_rng(1000 + ndim)
    rotation, _ = np.linalg.qr(rng.normal(size=(ndim, ndim)))
    return rotation @ np.diag(np.exp(np.linspace(-1.5, 1.5, ndim))) @ rotation.T


def entropy(sigma: np.ndarray) -> float:
    """:math:`\\tfrac12 \\log\\det(2 \\pi e \\Sigma)`."""
    return 0.5 * float(np.linalg.slogdet(2 * np.pi * np.e * sigma)[1])


def fit(builder: str, ndim: int, num_train: int, epochs: int, batch_size: int,
        learning_rate: float, seed: int = 0, num_test: int = 4000) -> tuple[float, float, float]:
    """Train ``nfbook.<builder>(ndim)`` at its defaults with Adam and a cosine decay: by NLL,
    or for the IAF (whose density of given points takes D passes) by reverse KL on the known
    log-density, as many steps.

    Returns
    -------
    gap : float
        Held-out NLL minus the true NLL of the same points.
    nll_minus_entropy : float
        Held-out NLL minus the entropy.
    seconds : float
        Training time, tracing included.
    """
    sigma = covariance(ndim)
    target = tfd.MultivariateNormalTriL(scale_tril=np.linalg.cholesky(sigma).astype(np.float32))
    x = target.sample(num_train, seed=(seed, 1)).numpy()
    x_test = target.sample(num_test, seed=(seed, 2)).numpy()
    nfbook.set_seed(seed)
    model = nfbook.FlowModel(getattr(nfbook, builder)(ndim), ndim=ndim)
    steps_per_epoch = -(-num_train // batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, epochs * steps_per_epoch)
    model.compile(optimizer=keras.optimizers.Adam(schedule))
    start = time.perf_counter()
    if builder == "iaf":
        model.fit_reverse_kl(target.log_prob, epochs=epochs, steps_per_epoch=steps_per_epoch,
                             batch_size=batch_size, verbose=0, seed=seed)
    else:
        model.fit(x, epochs=epochs, batch_size=batch_size, verbose=0)
    seconds = time.perf_counter() - start
    nll = -model.log_prob(x_test).numpy()
    gap = float(np.mean(nll + target.log_prob(x_test).numpy()))
    return gap, float(np.mean(nll)) - entropy(sigma), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--builders", nargs="+", default=BUILDERS)
    parser.add_argument("--dims", nargs="+", type=int, default=DIMS)
    parser.add_argument("--train", type=int, default=131_072, help="training points")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-2, help="initial learning rate")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0],
                        help="one run per seed (data and weights); cells give the median")
    parser.add_argument("--report", default="known_answers", help="name of the results file")
    args = parser.parse_args()
    builders = [b for b in args.builders if hasattr(nfbook, b)]
    runs: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    for seed in args.seeds:  # seed by seed: the machine's pace weighs on every cell alike
        for builder in builders:
            for ndim in args.dims:
                run = fit(builder, ndim, args.train, args.epochs, args.batch_size, args.lr, seed)
                runs.setdefault((builder, ndim), []).append(run)
                gap, raw, seconds = run
                print(f"{builder:8s} D={ndim:2d} seed {seed} gap {gap:.4f} "
                      f"(NLL - entropy {raw:+.4f}) {seconds:.0f} s", flush=True)
    several = len(args.seeds) > 1
    seeds = (f"the median over seeds {', '.join(map(str, args.seeds))} (the largest in "
             "brackets)" if several else "one seed")
    header = "| builder | " + " | ".join(f"D = {d}" for d in args.dims) + " |"
    lines = [
        f"Every builder at its default settings, trained on {args.train} points of a "
        f"correlated Gaussian for {args.epochs} epochs (batch {args.batch_size}, Adam "
        f"{args.lr:g} with cosine decay; the IAF by reverse KL on the known log-density, as "
        f"many steps), {seeds}, scored on 4,000 held-out points. Each cell: the gap in nats "
        "(held-out NLL minus the true NLL of the same points; the tests require <= 0.05 at "
        "smaller budgets), then the median training seconds, tracing included, on a machine "
        "shared with other jobs.",
        "",
        header,
        "| --- |" + " --- |" * len(args.dims),
    ]
    for builder in builders:
        cells = []
        for d in args.dims:
            gaps = [gap for gap, _, _ in runs[builder, d]]
            worst = f" [{max(gaps):.3f}]" if several else ""
            seconds = median([s for _, _, s in runs[builder, d]])
            cells.append(f"{np.median(gaps):.3f}{worst} ({seconds:.0f} s)")
        lines.append(f"| {builder} | " + " | ".join(cells) + " |")
    write(args.report, lines)


if __name__ == "__main__":
    main()
