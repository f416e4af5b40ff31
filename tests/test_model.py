import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

import nfbook

from invariants import BUILDERS, grid_integral, make_flow

tfb = tfp.bijectors
tfd = tfp.distributions


@pytest.fixture(scope="module")
def moons():
    return nfbook.data.moons(2000, seed=0), nfbook.data.moons(2000, seed=1)


def small_model(builder="maf", batch_norm=False, ndim=2):
    flow = getattr(nfbook, builder)(ndim, hidden_units=(32, 32), num_layers=3,
                                    batch_norm=batch_norm)
    model = nfbook.FlowModel(flow, ndim)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    return model


def test_call_is_the_log_density_of_the_distribution():
    model = nfbook.FlowModel(make_flow("realnvp", 3), ndim=3)
    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    np.testing.assert_allclose(model(x), model.distribution.log_prob(x), rtol=1e-6)
    np.testing.assert_allclose(model.log_prob(x), model.distribution.log_prob(x), rtol=1e-6)
    np.testing.assert_allclose(model.prob(x), np.exp(model.log_prob(x)), rtol=1e-6)
    # tfd.TransformedDistribution(...) returns a private base-class instance here
    assert type(model.distribution).__name__.endswith("TransformedDistribution")
    assert model.bijector is model.distribution.bijector


def test_evaluate_returns_the_mean_nll_in_nats(moons):
    train, _ = moons
    model = small_model()
    nll = model.evaluate(train, batch_size=300, verbose=0)  # batches of unequal size
    np.testing.assert_allclose(nll, -np.mean(model.log_prob(train)), rtol=1e-5)


def test_sample_shapes_and_stateless_seed():
    model = nfbook.FlowModel(make_flow("maf", 3), ndim=3)
    samples = model.sample(7, seed=(1, 2))
    assert samples.shape == (7, 3)
    np.testing.assert_array_equal(samples, model.sample(7, seed=(1, 2)))
    assert model.log_prob(samples).shape == (7,)


@pytest.mark.parametrize("builder", BUILDERS[1:])
def test_gradients_reach_every_variable_and_are_finite(builder, moons):
    model = small_model(builder, batch_norm=True)
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(model(moons[0][:256], training=True))
    gradients = tape.gradient(loss, model.trainable_variables)
    assert len(gradients) == len(model.bijector.trainable_variables) > 0
    for variable, gradient in zip(model.trainable_variables, gradients):
        assert gradient is not None, variable.name
        assert np.all(np.isfinite(gradient)), variable.name


@pytest.mark.parametrize("builder", ["maf", "realnvp"])
def test_short_training_lowers_held_out_nll_and_keeps_density_normalised(builder, moons):
    train, held_out = moons
    nfbook.set_seed(0)
    model = small_model(builder)
    before = model.evaluate(held_out, verbose=0)
    model.fit(train, epochs=30, batch_size=128, verbose=0)
    after = model.evaluate(held_out, verbose=0)
    assert before > 2.0 and after < 1.3, (before, after)
    assert abs(grid_integral(model.log_prob, extent=5.0, resolution=401) - 1.0) < 0.02


def test_fit_takes_validation_data_and_the_usual_callbacks(moons):
    train, held_out = moons
    model = small_model()
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=0, min_delta=10.0)
    history = model.fit(train, validation_data=held_out, epochs=5, batch_size=256, verbose=0,
                        callbacks=[stop, keras.callbacks.TerminateOnNaN()])
    assert set(history.history) >= {"loss", "val_loss"}
    assert len(history.history["loss"]) == 2  # stopped by EarlyStopping
    labelled = model.fit(train, validation_data=(held_out, None), epochs=1, verbose=0)
    assert np.isfinite(labelled.history["val_loss"]).all()  # (x, None), as Keras users write it
    history = model.fit(train, validation_split=0.2, epochs=1, verbose=0)
    assert "val_loss" in history.history


def test_batch_norm_uses_batch_statistics_only_while_training(moons):
    train, _ = moons
    model = small_model("realnvp", batch_norm=True)
    model.fit(train, epochs=2, batch_size=128, verbose=0)
    layer = next(b for b in model.bijector.bijectors
                 if isinstance(b, tfb.BatchNormalization)).batchnorm
    running_mean = layer.moving_mean.numpy().copy()
    point = train[:1]
    alone = model.log_prob(point).numpy()[0]
    in_batch = model.log_prob(train[:256]).numpy()[0]
    model.predict(train[:256], verbose=0)
    model.evaluate(train[:256], verbose=0)
    np.testing.assert_allclose(alone, in_batch, rtol=1e-5)
    np.testing.assert_array_equal(layer.moving_mean.numpy(), running_mean)
    # the training path scores a point by its batch's statistics
    training_score = model(train[:256], training=True).numpy()[0]
    assert abs(training_score - in_batch) > 1e-4


def test_set_seed_makes_training_repeatable(moons):
    train, _ = moons

    def run():
        nfbook.set_seed(7)
        model = small_model()
        return model.fit(train[:1000], epochs=2, batch_size=100, verbose=0).history["loss"]

    np.testing.assert_allclose(run(), run(), rtol=1e-5)


def test_fit_rejects_bad_data():
    model = small_model()
    good = np.zeros((10, 2), np.float32)
    with pytest.raises(ValueError, match=r"`x` has shape \(10, 3\); expected \(n, 2\)"):
        model.fit(np.zeros((10, 3)), verbose=0)
    with pytest.raises(ValueError, match=r"`x` has shape \(10,\)"):
        model.fit(np.zeros(10), verbose=0)
    bad = good.copy()
    bad[[1, 4], 0] = np.nan
    bad[7, 1] = np.inf
    with pytest.raises(ValueError, match="3 row\\(s\\) with NaN or infinite values out of 10"):
        model.fit(bad, verbose=0)
    with pytest.raises(ValueError, match="`x` is empty"):
        model.fit(np.zeros((0, 2)), verbose=0)
    with pytest.raises(TypeError, match="must hold real numbers, got dtype <U1"):
        model.fit(np.array([["a", "b"]]), verbose=0)
    with pytest.raises(TypeError, match="takes no labels"):
        model.fit(good, np.zeros(10), verbose=0)
    with pytest.raises(ValueError, match="`validation_data` has 1 row"):
        model.fit(good, validation_data=bad[:2], verbose=0)
    with pytest.raises(ValueError, match="`x` has 1 row"):
        model.log_prob(bad[:2])
    with pytest.raises(TypeError, match="takes no `loss`"):
        model.compile(loss="mse")


def test_model_argument_errors():
    with pytest.raises(ValueError, match="`ndim` must be an integer >= 1, got 0"):
        nfbook.FlowModel(nfbook.affine([0.0], [1.0]), ndim=0)
    with pytest.raises(ValueError, match=r"`base` has event shape \[3\]; expected \[2\]"):
        nfbook.FlowModel(nfbook.maf(2), 2, base=tfd.MultivariateNormalDiag(loc=[0.0] * 3))
    with pytest.raises(TypeError, match="`bijector` must be a tfp.bijectors.Bijector"):
        nfbook.FlowModel(lambda x: x, 2)


@pytest.mark.parametrize(("builder", "batch_norm"), [
    (builder, batch_norm) for builder in BUILDERS for batch_norm in (False, True)
    if builder != "affine" or not batch_norm])  # affine() has no batch norm
def test_trainable_variables_are_those_keras_lists_in_its_order(builder, batch_norm):
    flow = make_flow(builder, 3, batch_norm=batch_norm)
    base = tfd.MultivariateNormalDiag(loc=tf.Variable([0.0, 0.0, 0.0]),
                                      scale_diag=tf.Variable([1.0, 1.0, 1.0]))
    for model in (nfbook.FlowModel(flow, 3), nfbook.FlowModel(flow, 3, base=base)):
        keras_list = keras.Model.trainable_weights.fget(model)  # Keras's own walk
        assert [id(v) for v in model.trainable_variables] == [id(v) for v in keras_list]
    assert sum(any(v is w for w in model.trainable_variables) for v in base.variables) == 2
    model.trainable = False
    assert model.trainable_variables == []


@pytest.mark.parametrize("builder", ["maf", "realnvp"])
@pytest.mark.parametrize("frozen", ["a whole layer", "a layer inside one"])
def test_a_frozen_layer_is_not_trained_and_not_lost(builder, frozen, moons):
    model = small_model(builder)
    layer = model.flow_layers[0]
    if frozen == "a layer inside one":
        layer = next(m for m in layer.submodules if isinstance(m, keras.layers.Layer))
    layer.trainable = False
    frozen_ids = {id(v) for v in layer.weights} - {id(v) for v in layer.trainable_weights}
    assert frozen_ids
    trainable_ids = {id(v) for v in model.trainable_variables}
    assert not frozen_ids & trainable_ids
    assert frozen_ids <= {id(v) for v in model.weights} - trainable_ids
    before = {id(v): v.numpy().copy() for v in model.weights}
    model.compile(optimizer=keras.optimizers.Adam(3e-3))  # Keras: compile after freezing
    model.fit(moons[0], batch_size=256, epochs=1, verbose=0)
    for v in model.trainable_variables + [v for v in model.weights if id(v) in frozen_ids]:
        unchanged = np.array_equal(before[id(v)], v.numpy())
        assert unchanged == (id(v) in frozen_ids), v.name


@pytest.mark.parametrize("builder", ["maf", "iaf", "realnvp", "nice"])
def test_a_flow_built_for_another_ndim_is_refused(builder):
    with pytest.raises(ValueError, match="does not fit ndim=3"):
        nfbook.FlowModel(getattr(nfbook, builder)(2, hidden_units=(4,), num_layers=2), ndim=3)


def test_data_of_another_width_or_with_nan_is_refused_everywhere():
    model = nfbook.FlowModel(nfbook.realnvp(2, hidden_units=(4,), num_layers=2), ndim=2)
    model.compile()
    wide = np.zeros((8, 3), np.float32)
    with pytest.raises(ValueError, match="3 columns; this model has ndim=2"):
        model(wide)
    with pytest.raises(ValueError, match="acts on 2 coordinates, but the data has 3"):
        nfbook.density.log_prob(None, model.bijector, tf.constant(wide))
    with_nan = np.zeros((8, 2), np.float32)
    with_nan[3, 1] = np.nan
    for method in (model.evaluate, model.predict, model.log_prob):
        for data, match in ((wide, r"expected \(n, 2\)"), (with_nan, "NaN")):
            with pytest.raises(ValueError, match=match):
                method(data, verbose=0) if method != model.log_prob else method(data)


def test_a_model_with_nothing_to_train_refuses_to_fit():
    model = nfbook.FlowModel(nfbook.affine([0.0, 0.0], [1.0, 2.0]), ndim=2)
    model.compile()
    with pytest.raises(ValueError, match="no trainable variables"):
        model.fit(np.zeros((4, 2), np.float32), verbose=0)


def test_a_keras3_layer_inside_the_flow_is_refused():
    class Network(tf.Module):  # a tf.keras (Keras 3) layer, which tf_keras cannot train
        def __init__(self):
            super().__init__()
            self.dense = tf.keras.layers.Dense(1, name="keras3_dense")

        def __call__(self, x0, output_units):
            return self.dense(x0), None

    flow = tfb.RealNVP(num_masked=1, shift_and_log_scale_fn=Network())
    with pytest.raises(TypeError, match="Keras 3 layer.*keras3_dense.*tf_keras"):
        nfbook.FlowModel(flow, ndim=2)


def positive_data_with_negative_batches(batches, batch_size, negative):
    """Positive points, batch by batch, but those of the batches numbered in `negative`: the
    flow below takes their log, so their loss is NaN."""
    data = np.abs(np.random.default_rng(0).normal(size=(batches * batch_size, 2))) + 0.1
    for batch in negative:
        data[batch * batch_size:(batch + 1) * batch_size] *= -1.0
    return data.astype(np.float32)


def log_then_realnvp(average_weights=True, batch_norm=False, **compile_kwargs):
    nfbook.set_seed(0)
    flow = tfb.Chain([tfb.Exp(), nfbook.realnvp(2, hidden_units=(8,), num_layers=2,
                                                 batch_norm=batch_norm)])
    model = nfbook.FlowModel(flow, ndim=2, average_weights=average_weights)
    model.compile(**compile_kwargs)
    return model


def values(variables):
    return [v.numpy().copy() for v in variables]


def test_a_non_finite_step_stops_training_and_undoes_the_steps_of_its_call():
    # Two batches of 32 in one compiled call (100 steps per call); the second is NaN.
    data = positive_data_with_negative_batches(2, 32, negative=[1])
    model = log_then_realnvp()
    weights = values(model.trainable_variables)
    with pytest.raises(nfbook.NonFiniteLossError,
                       match="Training stopped in epoch 1: .* undone, with the 1 finite update "
                             "before it, and the model holds the moving average of the "
                             "weights from before them"):
        model.fit(data, epochs=3, batch_size=32, shuffle=False, verbose=0)
    for before, after in zip(weights, model.trainable_variables):
        np.testing.assert_array_equal(after.numpy(), before)
    assert float(model.skipped_steps.result()) == 1.0  # counted, not logged
    assert sorted(model.history.history) == ["loss"]
    assert np.isfinite(model.history.history["loss"]).all()


def test_steps_after_a_non_finite_one_are_undone_with_the_rest():
    # Four steps per compiled call, one copy per 100 steps: the sixth step is NaN, so the
    # second call undoes its own steps and the first call's, back to the untrained model.
    data = positive_data_with_negative_batches(8, 16, negative=[5])
    untrained = values(log_then_realnvp(average_weights=False).trainable_variables)
    model = log_then_realnvp(average_weights=False, steps_per_execution=4)
    with pytest.raises(nfbook.NonFiniteLossError, match="with the 5 finite updates before it"):
        model.fit(data, epochs=1, batch_size=16, shuffle=False, verbose=0)
    for expected, got in zip(untrained, model.trainable_variables):
        np.testing.assert_array_equal(got.numpy(), expected)
    assert float(model.skipped_steps.result()) == 3.0  # steps 6 to 8


def test_with_one_step_per_call_a_copy_is_kept_every_100_steps():
    data = positive_data_with_negative_batches(150, 4, negative=[130])
    hundred_steps = log_then_realnvp(average_weights=False, steps_per_execution=1)
    hundred_steps.fit(data[:400], epochs=1, batch_size=4, shuffle=False, verbose=0)
    model = log_then_realnvp(average_weights=False, steps_per_execution=1)
    with pytest.raises(nfbook.NonFiniteLossError, match="with the 30 finite updates before"):
        model.fit(data, epochs=1, batch_size=4, shuffle=False, verbose=0)
    for expected, got in zip(hundred_steps.trainable_variables, model.trainable_variables):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-6, atol=1e-7)


def test_the_optimizer_state_and_batch_norm_statistics_are_restored_too():
    data = positive_data_with_negative_batches(6, 16, negative=[4])
    model = log_then_realnvp(batch_norm=True, steps_per_execution=3)
    model.fit(data[:48], epochs=1, batch_size=16, shuffle=False, verbose=0)  # one finite call
    state = model._rollback_state()
    statistics = [v for v in model.non_trainable_variables if "moving" in v.name]
    assert statistics and set(map(id, statistics)) <= set(map(id, state))
    assert set(map(id, nfbook.optimizer_state.optimizer_variables(model.optimizer))) <= set(
        map(id, state))
    before = values(state)
    with pytest.raises(nfbook.NonFiniteLossError, match="with the 1 finite update"):
        model.fit(data[48:], epochs=1, batch_size=16, shuffle=False, verbose=0)
    for expected, variable in zip(before, state):
        np.testing.assert_array_equal(variable.numpy(), expected)


def test_no_callback_sees_the_weights_of_a_non_finite_step():
    class RecordFiniteness(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.finite = []

        def on_train_batch_end(self, batch, logs=None):
            self.finite.append(all(np.isfinite(w.numpy()).all() for w in self.model.weights))

    data = positive_data_with_negative_batches(4, 16, negative=[2])
    model = log_then_realnvp(steps_per_execution=1)
    record = RecordFiniteness()
    with pytest.raises(nfbook.NonFiniteLossError):
        model.fit(data, epochs=1, batch_size=16, shuffle=False, verbose=0, callbacks=[record])
    assert record.finite == [True, True, True]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_the_finiteness_test_reads_each_dtype_at_its_own_precision(bad):
    # A float64 gradient beyond float32's range is finite; a non-finite value in a gradient
    # of either dtype, or in the loss, makes the step non-finite.
    ones32, ones64 = tf.constant([1.0, 1.0]), tf.constant([1.0], tf.float64)
    finite = nfbook.nan_guard.step_is_finite
    assert bool(finite(tf.constant(1.0), [ones32, tf.constant([1e300], tf.float64)]))
    for loss, gradients in [(bad, [ones32, ones64]),
                            (1.0, [tf.constant([1.0, bad]), ones64]),
                            (1.0, [None, tf.constant([bad], tf.float64)])]:
        assert not bool(finite(tf.constant(loss), gradients))
    assert not bool(finite(tf.constant(1.0), [ones32], halted=True))


def test_fit_hands_over_the_averaged_weights(moons):
    train, held_out = moons
    model = small_model()
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True)
    history = model.fit(train, validation_data=held_out, epochs=3, batch_size=100, verbose=0,
                        callbacks=[stop])
    average = model.weight_average
    assert float(average.momentum) == pytest.approx(1 - 3 / 20)  # 20 steps per epoch
    for variable, averaged in zip(model.trainable_variables, average.averages):
        np.testing.assert_array_equal(variable.numpy(), averaged.numpy())
    # the validation loss was computed on the weights the model now holds
    np.testing.assert_allclose(history.history["val_loss"][-1],
                               model.evaluate(held_out, verbose=0), rtol=1e-5)
    raw = [b.numpy() for b in average.backups]
    assert any(not np.array_equal(r, v.numpy()) for r, v in zip(raw, model.trainable_variables))


def test_weight_averaging_can_be_switched_off(moons):
    train, held_out = moons
    model = nfbook.FlowModel(nfbook.realnvp(2, hidden_units=(16,)), 2, average_weights=False)
    model.compile()
    history = model.fit(train, validation_data=held_out, epochs=1, batch_size=200, verbose=0)
    assert model.weight_average is None
    np.testing.assert_allclose(history.history["val_loss"][-1],
                               model.evaluate(held_out, verbose=0), rtol=1e-5)


def test_training_log_density_uses_the_batch_statistics_of_batch_norm():
    # An untrained one-layer RealNVP is the identity, so the flow is just the batch norm:
    # u = (x - mean) / sqrt(var + eps) with the batch's statistics, and its log-determinant
    # must use the same batch variance (TFP's TransformedDistribution would use the running one).
    model = nfbook.FlowModel(nfbook.realnvp(2, num_layers=1, batch_norm=True), ndim=2)
    x = np.random.default_rng(0).normal([1.0, -2.0], [3.0, 0.5], size=(256, 2)).astype(np.float32)
    variance = x.var(axis=0) + 1e-3
    u = (x - x.mean(axis=0)) / np.sqrt(variance)
    base = tfd.MultivariateNormalDiag(loc=[0.0, 0.0])
    expected = base.log_prob(u) - 0.5 * np.log(variance).sum()
    np.testing.assert_allclose(model(x, training=True), expected, atol=1e-4)
    assert np.max(np.abs(model(x).numpy() - expected.numpy())) > 0.1  # running statistics


def _seeded_maf(**compile_kwargs):
    nfbook.set_seed(0)
    model = nfbook.FlowModel(nfbook.maf(2, hidden_units=(16,), num_layers=2), ndim=2)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), **compile_kwargs)
    return model


def test_in_graph_steps_train_exactly_like_one_step_per_call(moons):
    train, _ = moons
    one = _seeded_maf(steps_per_execution=1)
    looped = _seeded_maf()  # default: 100 steps per call
    runs = [m.fit(train, batch_size=64, epochs=2, shuffle=False, verbose=0) for m in (one, looped)]
    np.testing.assert_allclose(runs[1].history["loss"], runs[0].history["loss"], rtol=1e-5)
    assert int(one.optimizer.iterations) == int(looped.optimizer.iterations) == 2 * 32
    for a, b in zip(one.trainable_variables, looped.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)


def test_the_training_step_is_traced_once(moons):
    model = _seeded_maf()
    traces = []
    original = model.train_step
    model.train_step = lambda data: traces.append(1) or original(data)
    model.fit(moons[0], batch_size=64, epochs=2, verbose=0)
    assert len(traces) == 1


def test_data_of_unknown_size_smaller_than_one_execution(moons):
    model = _seeded_maf()
    data = tf.data.Dataset.from_tensor_slices(moons[0][:80]).filter(lambda row: True).batch(16)
    assert data.cardinality() == tf.data.UNKNOWN_CARDINALITY
    history = model.fit(data, epochs=3, verbose=0)
    assert int(model.optimizer.iterations) == 3 * 5
    assert len(history.history["loss"]) == 3 and np.isfinite(history.history["loss"]).all()
    assert int(model._steps_per_execution.numpy()) == 100  # back to the compiled value
    assert np.isfinite(model.evaluate(data, verbose=0))


def test_train_on_batch_runs_one_step(moons):
    model = _seeded_maf()
    logs = model.train_on_batch(moons[0][:32], return_dict=True)
    assert int(model.optimizer.iterations) == 1
    assert np.isfinite(logs["loss"])


def test_a_legacy_optimizer_trains_like_the_new_one(moons):
    # tf_keras.optimizers.legacy.Adam has no build() and makes its slots on first use; the
    # update is the same Adam, so one epoch gives the same loss.
    histories = []
    for optimizer in (keras.optimizers.Adam(1e-3), keras.optimizers.legacy.Adam(1e-3)):
        nfbook.set_seed(0)
        model = nfbook.FlowModel(nfbook.maf(2, hidden_units=(16,), num_layers=2), ndim=2)
        model.compile(optimizer=optimizer)
        histories.append(model.fit(moons[0], batch_size=64, shuffle=False, verbose=0))
        assert int(model.optimizer.iterations) == 32
    np.testing.assert_allclose(histories[1].history["loss"], histories[0].history["loss"],
                               rtol=1e-4)


@pytest.mark.parametrize("name", ["adam", "Adam"])
def test_the_default_optimizer_is_keras_adam(moons, name):
    model = nfbook.FlowModel(nfbook.maf(2, hidden_units=(16,), num_layers=2), ndim=2)
    model.compile(optimizer=name)
    assert type(model.optimizer) is keras.optimizers.Adam
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)
    model.fit(moons[0], batch_size=256, epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == int(np.ceil(len(moons[0]) / 256))


def test_other_optimizers_pass_through_compile():
    optimizer = keras.optimizers.SGD(1e-2)
    model = nfbook.FlowModel(nfbook.maf(2, hidden_units=(16,), num_layers=2), ndim=2)
    model.compile(optimizer=optimizer)
    assert model.optimizer is optimizer
