"""What the spline layers' one-pass density earns: ``nfbook.nsf`` training steps, three ways.

A training step of a spline flow computes the log-density of a batch, its gradient and an Adam
update. The log-density is computed in one of three ways, on the same model and weights:

- "TFP": ``TransformedDistribution.log_prob``. For every layer TFP runs the network once for
  ``inverse`` and again for ``inverse_log_det_jacobian``, and a ``RationalQuadraticSpline``
  without a cached forward pass inverts the spline and then differentiates it forward, searching
  the bins twice.
- "one pass, TFP's splines": ``nfbook.density.log_prob`` (one walk through the chain, each
  permutation a gather), with every spline layer still through TFP's ``inverse`` and
  ``inverse_log_det_jacobian``.
- "one pass": ``nfbook.density.log_prob`` as ``nfbook.FlowModel`` uses it, every spline layer
  through :func:`nfbook.spline_density.spline_layer_inverse` (one network pass, one bin search).

Each way gets its own compiled step (traced before timing); the ways then take turns in blocks of
``--steps`` steps, ``--repeats`` times, so that a machine that changes pace weighs on each alike.
The table gives the median milliseconds per step, the ratio to TFP, and the largest difference
from TFP's log-density on a held-out batch (the three compute the same number).

Data: ``nfbook.data.moons(10000, seed=0)``, standardised; the flows are ``nfbook.nsf(2)`` and
``nfbook.nsf(2, autoregressive=True)`` at their defaults.

Run from the repository root::

    .venv/bin/python benchmarks/spline_density.py
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
from nfbook import density  # noqa: E402

from report import write  # noqa: E402

tfb = tfp.bijectors
tfd = tfp.distributions

WAYS = ("TFP", "one pass, TFP's splines", "one pass")
FORMS = {"coupling": {}, "autoregressive": {"autoregressive": True}}


def log_density(way: str, distribution: tfd.TransformedDistribution
                ) -> Callable[[tf.Tensor], tf.Tensor]:
    """The log-density function of one way (see the module docstring)."""
    if way == "TFP":
        return distribution.log_prob
    if way == "one pass":
        return lambda x: density.log_prob(None, distribution.bijector, x)

    def without_fused_splines(x: tf.Tensor) -> tf.Tensor:
        fused = density.spline_layer_inverse
        density.spline_layer_inverse = lambda bijector, y: None  # only while tracing
        try:
            return density.log_prob(None, distribution.bijector, x)
        finally:
            density.spline_layer_inverse = fused

    return without_fused_splines


def measure(form: str, batch_size: int, args: argparse.Namespace) -> dict[str, list[float]]:
    """Milliseconds per step of each way (one entry per repeat), and each way's largest
    log-density difference from TFP's."""
    nfbook.set_seed(0)
    x = nfbook.data.moons(10000, seed=0)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    flow = nfbook.nsf(2, **FORMS[form])
    model = nfbook.FlowModel(flow, ndim=2)  # creates the networks' weights
    distribution = model.distribution
    variables = model.trainable_variables
    optimizer = keras.optimizers.Adam(1e-3)
    batches = tf.constant(x[: (len(x) // batch_size) * batch_size].reshape(-1, batch_size, 2))

    def make_step(log_prob: Callable[[tf.Tensor], tf.Tensor]) -> Callable[[], tf.Tensor]:
        @tf.function
        def run(start: tf.Tensor) -> tf.Tensor:
            loss = tf.constant(0.0)
            for i in tf.range(args.steps):
                batch = batches[(start + i) % batches.shape[0]]
                with tf.GradientTape() as tape:
                    loss = -tf.reduce_mean(log_prob(batch))
                optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return loss
        return run

    steps = {way: make_step(log_density(way, distribution)) for way in WAYS}
    for run in steps.values():  # trace and warm up
        run(tf.constant(0)).numpy()
    result: dict[str, list[float]] = {way: [] for way in WAYS}
    for repeat in range(args.repeats):
        for way, run in steps.items():
            start = time.perf_counter()
            run(tf.constant(repeat * args.steps)).numpy()
            result[way].append(1000 * (time.perf_counter() - start) / args.steps)
    held_out = tf.constant(x[:1000])  # scored with the trained weights: splines that bend
    reference = distribution.log_prob(held_out)
    for way in WAYS:
        error = tf.reduce_max(tf.abs(log_density(way, distribution)(held_out) - reference))
        result[f"{way} error"] = [float(error)]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--steps", type=int, default=100, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--report", default="spline_density")
    args = parser.parse_args()

    lines = [
        f"Median milliseconds per training step (log-density, gradient, Adam update) over "
        f"{args.repeats} blocks of {args.steps} steps, the ways taking turns; \"x TFP\" is TFP's "
        "time divided by the way's (higher is faster); \"max |diff|\" the largest difference "
        "from TFP's log-density on 1,000 points, after the timed steps.",
        "",
        "| flow | batch | way | ms per step | x TFP | max \\|diff\\| |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for form in FORMS:
        for batch_size in args.batch_sizes:
            result = measure(form, batch_size, args)
            tfp_ms = float(np.median(result["TFP"]))
            for way in WAYS:
                ms = float(np.median(result[way]))
                print(f"{form} batch {batch_size} {way}: {ms:.2f} ms", flush=True)
                lines.append(f"| nsf(2), {form} | {batch_size} | {way} | {ms:.2f} | "
                             f"{tfp_ms / ms:.2f} | {result[f'{way} error'][0]:.1e} |")
    write(args.report, lines)


if __name__ == "__main__":
    main()
