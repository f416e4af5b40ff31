"""The training engine (nfbook.training.Trainer), tested through its three trainers: maximum
likelihood (FlowModel.fit), reverse KL (FlowModel.fit_reverse_kl) and flow matching."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

import nfbook

tfb = tfp.bijectors
TRAINERS = ["maximum_likelihood", "reverse_kl", "flow_matching"]
DATA = nfbook.data.moons(512, seed=0)


def target(x):
    return -0.5 * tf.reduce_sum((x - 1.0) ** 2, axis=-1)


def build(kind, flow=None, **compile_kwargs):
    """A compiled model for ``kind`` (reverse KL trains a FlowModel)."""
    nfbook.set_seed(0)
    if kind == "flow_matching":
        model = nfbook.FlowMatching(2, hidden_units=(16,))
    else:
        model = nfbook.FlowModel(flow or nfbook.realnvp(2, hidden_units=(16,), num_layers=2), 2)
    model.compile(optimizer=compile_kwargs.pop("optimizer", keras.optimizers.Adam(1e-2)),
                  **compile_kwargs)
    return model


def train(kind, model, data=DATA, target_log_prob=target, **kwargs):
    """Train ``model`` as ``kind`` does: ``steps_per_epoch`` steps of batches of 16 a epoch."""
    kwargs.setdefault("epochs", 3)
    kwargs.setdefault("verbose", 0)
    steps = kwargs.pop("steps_per_epoch", 8)
    if kind == "reverse_kl":
        return model.fit_reverse_kl(target_log_prob, steps_per_epoch=steps, batch_size=16,
                                    seed=0, **kwargs)
    return model.fit(data[:16 * steps], batch_size=16, shuffle=False, **kwargs)


@pytest.mark.parametrize("kind", TRAINERS)
def test_the_loss_falls(kind):
    loss = train(kind, build(kind), epochs=4).history["loss"]
    assert np.isfinite(loss).all() and loss[-1] < loss[0], loss


@pytest.mark.parametrize("kind", TRAINERS)
def test_a_compiled_call_runs_100_steps_and_traces_the_step_once(kind):
    class Batches(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seen = []

        def on_train_batch_end(self, batch, logs=None):
            self.seen.append(batch)

    model, batches, traces = build(kind), Batches(), []
    if kind == "reverse_kl":  # its trainer is made by fit_reverse_kl; count in the target
        def counted(x):
            traces.append(1)
            return target(x)

        train(kind, model, target_log_prob=counted, steps_per_epoch=150, epochs=1,
              callbacks=[batches])
        assert len(traces) == 2  # the probe check, then one trace of the step
    else:
        original = model.train_step
        model.train_step = lambda data: traces.append(1) or original(data)
        train(kind, model, data=np.tile(DATA, (5, 1)), steps_per_epoch=150, epochs=1,
              callbacks=[batches])
        assert len(traces) == 1
    assert batches.seen == [99, 149]
    assert int(model.optimizer.iterations) == 150


def poisoned(kind):
    """A model and training arguments whose third step (second call) is not finite."""
    if kind == "maximum_likelihood":  # the log of a negative point is NaN
        model = build(kind, tfb.Chain([tfb.Exp(), nfbook.realnvp(2, hidden_units=(8,))]),
                      steps_per_execution=2)
        data = np.abs(DATA) + 0.1
        data[32:48] *= -1.0
        return model, {"data": data}
    if kind == "reverse_kl":
        calls = tf.Variable(0)

        def turns_nan(x):  # the probe check is call 1, training steps 1 and 2 are finite
            calls.assign_add(1)
            return tf.where(calls <= 3, target(x), np.float32(np.nan))

        return build(kind, steps_per_execution=2), {"target_log_prob": turns_nan}
    data = DATA.copy()  # a squared error of 1e60 overflows float32
    data[32:48] = 1e30
    return build(kind, steps_per_execution=2), {"data": data}


@pytest.mark.parametrize("kind", TRAINERS)
def test_a_non_finite_step_stops_training_and_undoes_the_steps_since_the_copy(kind):
    model, arguments = poisoned(kind)
    before = [v.numpy().copy() for v in model.trainable_variables]
    with pytest.raises(nfbook.NonFiniteLossError,
                       match="Training stopped in epoch 1: .* became NaN or infinite, so that "
                             "update was undone, with the 2 finite updates before it"):
        train(kind, model, **arguments)
    for expected, variable in zip(before, model.trainable_variables):
        np.testing.assert_array_equal(variable.numpy(), expected)
    assert int(model.optimizer.iterations) == 0  # the optimizer's state went back too


@pytest.mark.parametrize("kind", ["maximum_likelihood", "flow_matching"])
def test_compile_takes_no_loss_and_fit_no_labels(kind):
    model = build(kind)
    with pytest.raises(TypeError, match="takes no `loss`"):
        model.compile(loss="mse")
    with pytest.raises(TypeError, match="takes no labels"):
        model.fit(DATA, DATA[:, 0], verbose=0)
    with pytest.raises(TypeError, match="Keras 3"):
        model.compile(optimizer=tf.keras.optimizers.Adam())  # a tf.keras object is refused


@pytest.mark.parametrize("kind", ["maximum_likelihood", "flow_matching"])
def test_weight_averaging_hands_the_average_to_the_model(kind):
    nfbook.set_seed(0)
    model = (nfbook.FlowModel(nfbook.realnvp(2, hidden_units=(16,)), 2) if kind != "flow_matching"
             else nfbook.FlowMatching(2, hidden_units=(16,), average_weights=True))
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(DATA, batch_size=16, epochs=2, verbose=0)
    average = model.weight_average
    assert float(average.momentum) == pytest.approx(1 - 3 / 32)  # 32 steps per epoch
    for variable, averaged in zip(model.trainable_variables, average.averages):
        np.testing.assert_array_equal(variable.numpy(), averaged.numpy())


def test_three_trainers_train_alike_on_two_devices_and_keep_the_nan_guard():
    # A fresh process: logical devices must be configured before TensorFlow starts.
    script = Path(__file__).with_name("mirrored_training.py")
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            env=environment, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["reload"] < 1e-5  # save and load of a model trained on two devices
    assert "jit_compile=True does not work with replicas on CPU devices" in report["xla"]
    for kind in TRAINERS:
        two, one, guard = report[kind]["two"], report[kind]["one"], report[kind]["guard"]
        assert two[-1] < two[0], (kind, two)  # the loss falls
        # each batch split between the replicas gives the one-device step (samples differ)
        tolerance = 1e-4 if kind == "maximum_likelihood" else 0.25
        np.testing.assert_allclose(two, one, rtol=tolerance, err_msg=kind)
        undone = {"maximum_likelihood": "with the 1 finite update before it",
                  "reverse_kl": "undone and the model holds the weights from before it",
                  "flow_matching": "with the 1 finite update before it"}[kind]
        assert undone in guard["raised"] and guard["restored"], (kind, guard)
        assert guard["iterations"] == 0, (kind, guard)


@pytest.fixture
def grappler_off_calls(monkeypatch):
    """A list that gets one item per compiled call made with Grappler off."""
    entered = []
    real = nfbook.private_api.without_graph_optimizer

    def recording():
        entered.append(1)
        return real()

    monkeypatch.setattr(nfbook.private_api, "without_graph_optimizer", recording)
    return entered


def test_the_step_loop_calls_its_function_without_grappler(grappler_off_calls):
    entered = grappler_off_calls
    model = build("maximum_likelihood")
    model.fit(DATA, batch_size=64, epochs=2, verbose=0)
    model.evaluate(DATA, batch_size=64, verbose=0)
    assert len(entered) == 3  # two epochs of 8 batches, one call each, then one evaluation


def test_a_flow_with_an_ode_keeps_grappler_in_its_step_loop(grappler_off_calls):
    ode = nfbook.ffjord(2, hidden_units=(8,))
    chained = nfbook.FlowModel(tfp.bijectors.Chain([tfp.bijectors.Scale(2.0), ode]), ndim=2)
    assert nfbook.FlowModel(ode, ndim=2).graph_optimizer and chained.graph_optimizer
    assert not nfbook.FlowModel(nfbook.maf(2, hidden_units=(8,)), ndim=2).graph_optimizer
    chained.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = chained.fit(DATA[:256], batch_size=128, epochs=2, verbose=0)
    chained.fit_reverse_kl(lambda x: -0.5 * tf.reduce_sum(x**2, axis=-1), epochs=1,
                           steps_per_epoch=2, batch_size=64, verbose=0)
    assert grappler_off_calls == [] and np.all(np.isfinite(history.history["loss"]))


def test_the_grappler_block_restores_the_options_after_an_error():
    from tensorflow.python.eager import context

    before = context.context().function_call_options
    with pytest.raises(RuntimeError, match="inside"):
        with nfbook.private_api.without_graph_optimizer():
            assert context.context().function_call_options is not before
            raise RuntimeError("an error inside the block")
    assert context.context().function_call_options is before


def test_an_epoch_without_a_finite_step_logs_nan_not_zero():
    flow = tfp.bijectors.MaskedAutoregressiveFlow(
        tfp.bijectors.AutoregressiveNetwork(params=2, hidden_units=[16]))  # unbounded scales
    model = nfbook.FlowModel(flow, ndim=2)
    model.compile()
    with pytest.raises(nfbook.NonFiniteLossError, match="epoch 1"):
        model.fit(1000 * nfbook.data.moons(512), epochs=1, verbose=0)
    assert np.isnan(model.history.history["loss"][0])
