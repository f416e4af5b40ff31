"""Where FlowModel's training time goes: the one-pass density, the in-graph step loop, the
optimizer, the graph optimizer, the NaN guard and the weight averaging.

Trains ``nfbook.maf(2)`` in ``nfbook.FlowModel`` on ``moons(10000, seed=0)`` for a few epochs
and times (a) the first epoch, tracing and graph optimisation included, and (b) the median of
the later epochs, for every combination of

- the log-density: TFP's two calls (``bijector.inverse`` then
  ``bijector.inverse_log_det_jacobian``, each running every MADE network) or nfbook's one pass
  (:func:`nfbook.density.log_prob`, each network once), the latter also with TFP's own
  ``tfb.Permute`` and ``tfd.MultivariateNormalDiag.log_prob`` in place of its shortcuts for
  them (:func:`nfbook.density.permute_last_axis`,
  :func:`nfbook.density.standard_normal_log_prob`);
- the loop: Keras's own execution function with one step per call, Keras's own function with
  100 steps per call (``steps_per_execution=100``, a ``tf.range`` loop that AutoGraph traces
  twice), or nfbook's (:func:`nfbook.step_loop.step_loop`, 100 steps in a ``tf.while_loop``,
  traced once);
- the optimizer: ``keras.optimizers.Adam`` (``FlowModel.compile``'s default, about forty graph
  operations per variable) or ``keras.optimizers.legacy.Adam``, the same update in one fused
  kernel per variable;
- TensorFlow's graph optimizer, Grappler, on (TensorFlow's default, and Keras's loops') or
  off (nfbook's loop, which calls its compiled function through
  :func:`nfbook.private_api.without_graph_optimizer`; "on" for it replaces that block by an
  empty one);
- and, for FlowModel's defaults only, the price of two of its features: the weight averaging
  switched off (``FlowModel(..., average_weights=False)``), the NaN guard switched off (no
  copy of the model's state kept every 100 steps, so a non-finite step would stop training
  but not be undone: :class:`nfbook.nan_guard.RollBackOnNonFinite` without its copies, for
  measuring only; nfbook has no such switch), or both.

Every measurement runs in a fresh Python process (tracing caches are per process), all of them
in turn ``--repeats`` times; the table gives medians and the ratio to the first row, all from one
run.

Run from the repository root::

    .venv/bin/python benchmarks/training_speed.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DENSITIES = {"tfp": "TFP's two calls", "one-pass": "nfbook one pass",
             "one-pass-tfp-parts": "nfbook one pass, TFP's Permute and base"}
LOOPS = {"keras-1": "Keras, 1 step per call", "keras-100": "Keras, 100 steps per call",
         "nfbook-100": "nfbook, 100 steps per call"}
OPTIMIZERS = {"adam": "Adam", "fused": "legacy Adam (fused)"}
GRAPH = {"grappler": "on", "plain": "off"}
FEATURES = {"both": "both on", "no-average": "averaging off", "no-guard": "guard off (unsafe)",
            "neither": "both off (unsafe)"}


def measure(density: str, loop: str, optimizer: str, graph: str, features: str,
            batch_size: int, epochs: int) -> dict[str, float]:
    """Train once in this process; return the first epoch's and the later epochs' seconds."""
    import contextlib

    import numpy as np
    import tensorflow as tf
    import tf_keras as keras

    import nfbook

    class Model(nfbook.FlowModel):
        def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
            if density == "one-pass":
                return super().call(x, training=training)
            dist = self._training_distribution if training else self.distribution
            x = tf.convert_to_tensor(x, dtype=tf.float32)
            if density == "one-pass-tfp-parts":
                return nfbook.density.log_prob(dist.distribution, dist.bijector, x)
            return dist.distribution.log_prob(dist.bijector.inverse(x)) + (
                dist.bijector.inverse_log_det_jacobian(x, event_ndims=1))

    if density == "one-pass-tfp-parts":  # every Permute through TFP's own inverse
        nfbook.density._static_permutation = lambda bijector: None

    if loop.startswith("keras"):
        Model.make_train_function = keras.Model.make_train_function

    if graph == "grappler" and loop.startswith("nfbook"):
        nfbook.private_api.without_graph_optimizer = contextlib.nullcontext
    elif graph == "plain" and loop.startswith("keras"):
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})

    if features in ("no-guard", "neither"):
        class StopOnly(nfbook.nan_guard.RollBackOnNonFinite):
            def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
                self.first_batch = batch  # no copy: a non-finite step would not be undone

        nfbook.training.RollBackOnNonFinite = StopOnly

    class EpochEnds(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.ends: list[float] = []

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.ends.append(time.perf_counter())

    nfbook.set_seed(0)
    data = nfbook.data.moons(10000, seed=0)
    model = Model(nfbook.maf(2), ndim=2, average_weights=features in ("both", "no-guard"))
    adam = keras.optimizers.legacy.Adam if optimizer == "fused" else keras.optimizers.Adam
    model.compile(optimizer=adam(1e-3), steps_per_execution=int(loop.rsplit("-", 1)[1]))
    ends = EpochEnds()
    start = time.perf_counter()
    model.fit(data, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=[ends])
    times = np.diff([start, *ends.ends])
    return {"first": float(times[0]), "later": float(np.median(times[1:]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128, 1024])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", nargs=6,
                        metavar=("DENSITY", "LOOP", "OPTIMIZER", "GRAPH", "FEATURES", "BATCH"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        density, loop, optimizer, graph, features, batch = args.child
        print(json.dumps(measure(density, loop, optimizer, graph, features, int(batch),
                                 args.epochs)))
        return

    import numpy as np

    from report import fmt, write

    lines = [
        f"`nfbook.maf(2)` in `FlowModel`, learning rate 1e-3, {args.epochs} epochs on "
        f"`moons(10000)`; medians of {args.repeats} fresh processes. First epoch: from the "
        "call to `fit` to the end of the first epoch, tracing included. Ratios: the first "
        "row's seconds over the row's.",
        "",
        "| batch | density | loop | optimizer | Grappler | NaN guard, averaging "
        "| first epoch (s) | later epochs (s/epoch) | first-epoch ratio | per-epoch ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    combos = [("tfp", "keras-1", "adam", "grappler", "both"),
              ("tfp", "keras-100", "adam", "grappler", "both"),
              ("tfp", "nfbook-100", "adam", "grappler", "both"),
              ("one-pass", "keras-1", "adam", "grappler", "both"),
              ("one-pass", "nfbook-100", "adam", "grappler", "both"),
              ("one-pass", "nfbook-100", "fused", "plain", "both"),
              ("one-pass-tfp-parts", "nfbook-100", "adam", "plain", "both")]
    # FlowModel's defaults, then the same with its features switched off
    combos += [("one-pass", "nfbook-100", "adam", "plain", features)
               for features in ("both", "no-average", "no-guard", "neither")]
    runs: dict[tuple[int, str, str, str, str, str], list[dict[str, float]]] = {}
    for _ in range(args.repeats):  # round-robin, so that drift in the machine hits every row
        for batch in args.batch_sizes:
            for combo in combos:
                out = subprocess.run(
                    [sys.executable, __file__, "--epochs", str(args.epochs),
                     "--child", *combo, str(batch)],
                    check=True, capture_output=True, text=True).stdout
                runs.setdefault((batch, *combo), []).append(
                    json.loads(out.strip().splitlines()[-1]))
    for batch in args.batch_sizes:
        rows = [(*combo,
                 float(np.median([r["first"] for r in runs[(batch, *combo)]])),
                 float(np.median([r["later"] for r in runs[(batch, *combo)]])))
                for combo in combos]
        first0, later0 = rows[0][5], rows[0][6]
        for density, loop, optimizer, graph, features, first, later in rows:
            lines.append(f"| {batch} | {DENSITIES[density]} | {LOOPS[loop]} "
                         f"| {OPTIMIZERS[optimizer]} | {GRAPH[graph]} | {FEATURES[features]} "
                         f"| {fmt(first, 2)} "
                         f"| {fmt(later, 3)} | {fmt(first0 / first, 2)}x "
                         f"| {fmt(later0 / later, 2)}x |")
    print("\n".join(lines))
    write("training_speed", lines)


if __name__ == "__main__":
    main()
