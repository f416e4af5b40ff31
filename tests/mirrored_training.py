"""Train nfbook's three trainers under tf.distribute.MirroredStrategy on two logical CPUs.

Run by tests/test_training.py in a fresh process (logical devices must be set before
TensorFlow starts). Prints one JSON object: for each trainer, its losses on two replicas and
on one device from the same start, whether the NaN guard raised and restored the weights,
and, for FlowModel, the largest change of log p on reloading a saved model.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

CPU = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(CPU, [tf.config.LogicalDeviceConfiguration()] * 2)

import tensorflow_probability as tfp  # noqa: E402
import tf_keras as keras  # noqa: E402

import nfbook  # noqa: E402

tfb = tfp.bijectors
STRATEGY = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
DATA = nfbook.data.moons(512, seed=0)


def target(x: tf.Tensor) -> tf.Tensor:
    return -0.5 * tf.reduce_sum((x - 1.0) ** 2, axis=-1)


def flow_model(flow_fn=None) -> nfbook.FlowModel:
    nfbook.set_seed(0)
    flow = flow_fn() if flow_fn else nfbook.realnvp(2, hidden_units=(16,), num_layers=2)
    model = nfbook.FlowModel(flow, 2)
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    return model


def flow_matching() -> nfbook.FlowMatching:
    nfbook.set_seed(0)
    model = nfbook.FlowMatching(2, hidden_units=(16,), average_weights=True)
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    return model


def in_scope(build, strategy):
    if strategy is None:
        return build()
    with strategy.scope():
        return build()


def train(kind: str, strategy) -> list[float]:
    if kind == "maximum_likelihood":
        model = in_scope(flow_model, strategy)
        history = model.fit(DATA, epochs=3, batch_size=128, shuffle=False, verbose=0)
    elif kind == "reverse_kl":
        model = in_scope(flow_model, strategy)
        history = model.fit_reverse_kl(target, epochs=3, steps_per_epoch=5, batch_size=128,
                                       verbose=0, seed=3)
    else:
        model = in_scope(flow_matching, strategy)
        history = model.fit(DATA, epochs=3, batch_size=128, shuffle=False, verbose=0)
    return history.history["loss"]


def guard(kind: str) -> dict:
    """Train under the strategy into a non-finite step; report what the guard did."""
    if kind == "maximum_likelihood":  # the log of negative data is NaN
        model = in_scope(lambda: flow_model(lambda: tfb.Chain([
            tfb.Exp(), nfbook.realnvp(2, hidden_units=(8,), num_layers=2)])), STRATEGY)
        data = np.abs(DATA) + 0.1
        data[128:256] *= -1.0
    elif kind == "reverse_kl":
        model = in_scope(flow_model, STRATEGY)
        calls = []

        def turns_nan(x):  # finite for the probe check, NaN in training
            calls.append(1)
            nan = tf.math.log(-tf.ones_like(x[:, 0]))
            return target(x) if len(calls) == 1 else target(x) + nan
    else:  # a squared error of 1e60 overflows float32
        model = in_scope(flow_matching, STRATEGY)
        data = DATA.copy()
        data[128:256] = 1e30

    def run() -> None:
        if kind == "reverse_kl":
            model.fit_reverse_kl(turns_nan, epochs=2, steps_per_epoch=3, batch_size=64,
                                 verbose=0, seed=0)
        else:
            model.fit(data, epochs=2, batch_size=128, shuffle=False, verbose=0)
    before = [v.numpy().copy() for v in model.trainable_variables]
    try:
        run()
        raised = ""
    except nfbook.NonFiniteLossError as error:
        raised = str(error)
    after = [v.numpy() for v in model.trainable_variables]
    return {"raised": raised,
            "restored": all(np.array_equal(a, b) for a, b in zip(before, after)),
            "iterations": int(model.optimizer.iterations.numpy())}


def reload_difference() -> float:
    with STRATEGY.scope():
        model = flow_model()
    model.fit(DATA, epochs=1, batch_size=128, verbose=0)
    path = os.path.join(tempfile.mkdtemp(), "mirrored.nfbook")
    model.save(path)
    loaded = nfbook.load(path)
    return float(np.max(np.abs(loaded.log_prob(DATA) - model.log_prob(DATA))))


def refuses_xla() -> str:
    with STRATEGY.scope():
        model = flow_model()
        try:
            model.compile(jit_compile=True)
        except ValueError as error:
            return str(error)
    return ""


def main() -> None:
    report = {"replicas": STRATEGY.num_replicas_in_sync, "reload": reload_difference(),
              "xla": refuses_xla()}
    for kind in ("maximum_likelihood", "reverse_kl", "flow_matching"):
        report[kind] = {"two": train(kind, STRATEGY), "one": train(kind, None),
                        "guard": guard(kind)}
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
