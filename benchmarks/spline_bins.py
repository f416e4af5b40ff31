"""What the spline layers' one-hot bin lookup earns: ``nfbook.nsf`` trained by ``FlowModel.fit``.

The one pass of a spline layer (``nfbook.spline_density``) finds the bin of each value. Two ways,
on the same flow, data and seed:

- "TFP's search": TFP's own ``RationalQuadraticSpline._compute_shared`` (a private method, used
  here as the baseline only): ``searchsorted``, then batched gathers of the knots, whose
  gradients scatter.
- "one-hot": :func:`nfbook.spline_density.bin_of`, as ``nfbook.FlowModel`` uses it: a comparison
  with every inner knot and one-hot sums over the bins.

Each way trains its own model with ``FlowModel.fit`` (the path every reader takes: the step
loop, weight averaging, Adam): the first epoch, which traces the training step, is timed on its
own; then the ways take turns, ``--repeats`` times, in blocks of ``--epochs`` epochs. The table
gives the first epoch's seconds and the median seconds per later epoch, and the largest
difference between the two ways' log-densities on the same weights.

Data: ``nfbook.data.moons(10000, seed=0)``, standardised; flows ``nfbook.nsf(2)`` and
``nfbook.nsf(2, autoregressive=True)`` at their defaults.

Run from the repository root::

    .venv/bin/python benchmarks/spline_bins.py
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402
import tf_keras as keras  # noqa: E402

import nfbook  # noqa: E402
from nfbook import density, spline_density  # noqa: E402

from report import write  # noqa: E402

tfb = tfp.bijectors


def tfp_search(spline: tfb.RationalQuadraticSpline, y: tf.Tensor) -> spline_density.Bin:
    """The bin of each ``y`` as TFP's own inverse finds it."""
    shared = spline._compute_shared(y=y)
    return spline_density.Bin(**{field: tf.ensure_shape(getattr(shared, field), y.shape)
                                 for field in spline_density.Bin._fields})


WAYS: dict[str, Callable[..., spline_density.Bin]] = {
    "TFP's search": tfp_search,
    "one-hot": spline_density.bin_of,
}


def with_lookup(lookup: Callable[..., spline_density.Bin], run: Callable[[], object]) -> object:
    """``run()`` with ``lookup`` finding the bins (read while tracing, and in eager calls)."""
    spline_density.bin_of = lookup
    try:
        return run()
    finally:
        spline_density.bin_of = WAYS["one-hot"]


def trained(lookup: Callable[..., spline_density.Bin], x: np.ndarray, autoregressive: bool,
            batch_size: int) -> tuple[nfbook.FlowModel, float]:
    """A flow whose training step is traced with ``lookup``, and its first epoch's seconds."""
    nfbook.set_seed(0)
    model = nfbook.FlowModel(nfbook.nsf(2, autoregressive=autoregressive), ndim=2)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    start = time.perf_counter()
    with_lookup(lookup, lambda: model.fit(x, epochs=1, batch_size=batch_size, verbose=0))
    return model, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--epochs", type=int, default=5, help="epochs per timed block")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--report", default="spline_bins")
    args = parser.parse_args()

    x = nfbook.data.moons(10000, seed=0)
    x = ((x - x.mean(axis=0)) / x.std(axis=0)).astype(np.float32)
    lines = [
        "Seconds of `FlowModel.fit` on the standardised moons (10,000 points): the first epoch "
        "(tracing included) and the median of later epochs over "
        f"{args.repeats} blocks of {args.epochs} epochs, the ways taking turns; \"x TFP\" is "
        "the TFP search's time divided by the way's (higher is faster); \"max |diff|\" the "
        "largest difference of the two ways' log-densities on the same trained weights "
        "(1,000 points).",
        "",
        "| flow | batch | bin lookup | first epoch (s) | s per epoch | x TFP | max \\|diff\\| |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for form, autoregressive in [("coupling", False), ("autoregressive", True)]:
        for batch_size in args.batch_sizes:
            runs = {way: trained(lookup, x, autoregressive, batch_size)
                    for way, lookup in WAYS.items()}
            per_epoch: dict[str, list[float]] = {way: [] for way in WAYS}
            for _ in range(args.repeats):
                for way, (model, _) in runs.items():
                    start = time.perf_counter()
                    with_lookup(WAYS[way], functools.partial(
                        model.fit, x, epochs=args.epochs, batch_size=batch_size, verbose=0))
                    per_epoch[way].append((time.perf_counter() - start) / args.epochs)
            bijector = runs["one-hot"][0].distribution.bijector
            log_probs = [with_lookup(lookup, functools.partial(  # fresh points: no cached inverse
                density.log_prob, None, bijector, tf.constant(x[:1000])))
                for lookup in WAYS.values()]
            difference = float(tf.reduce_max(tf.abs(log_probs[0] - log_probs[1])))
            baseline = float(np.median(per_epoch["TFP's search"]))
            for way, (_, first) in runs.items():
                seconds = float(np.median(per_epoch[way]))
                print(f"{form} batch {batch_size} {way}: first {first:.2f} s, "
                      f"{seconds:.3f} s/epoch", flush=True)
                lines.append(f"| nsf(2), {form} | {batch_size} | {way} | {first:.1f} | "
                             f"{seconds:.3f} | {baseline / seconds:.2f} | {difference:.1e} |")
    write(args.report, lines)


if __name__ == "__main__":
    main()
