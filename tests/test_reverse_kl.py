import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

import nfbook
from nfbook.reverse_kl import (
    effective_sample_size,
    expectation,
    fit_reverse_kl,
    importance_weights,
)

tfb = tfp.bijectors
tfd = tfp.distributions

MEAN = np.array([1.0, -2.0], np.float32)
STD = np.array([0.5, 2.0], np.float32)
LOG_Z = 3.0  # the target below is this Gaussian's log-density plus LOG_Z
GAUSSIAN = tfd.MultivariateNormalDiag(loc=MEAN, scale_diag=STD)


# Two equal modes; the untrained flow N(0, I) sits on the left one. Reverse KL alone keeps to
# it (a loss of log 2 = KL(one component || the mixture)); samples of both modes fix that.
TWO_MODES = tfd.MixtureSameFamily(
    tfd.Categorical(probs=[0.5, 0.5]),
    tfd.MultivariateNormalDiag(loc=[[-1.5, 0.0], [3.5, 0.0]], scale_diag=[[0.5, 0.5]] * 2))


def shifted_gaussian(x):
    return GAUSSIAN.log_prob(x) + LOG_Z


def standard_normal(x):
    return -0.5 * tf.reduce_sum(x**2, axis=-1) - np.log(2 * np.pi)


def trainable_affine(ndim=2):
    """x = exp(s) * z + m with trainable m and s: the exact family of diagonal Gaussians."""
    return tfb.Chain([tfb.Shift(tf.Variable(tf.zeros([ndim]))),
                      tfb.Scale(log_scale=tf.Variable(tf.zeros([ndim])))])


def compiled(flow, learning_rate=1e-2, ndim=2):
    model = nfbook.FlowModel(flow, ndim)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    return model


def weights_of(model):
    return [w.numpy().copy() for w in model.trainable_variables]


@pytest.mark.parametrize("builder", ["affine", "realnvp"])
def test_reverse_kl_recovers_a_shifted_and_scaled_gaussian(builder):
    nfbook.set_seed(0)
    if builder == "affine":
        model, steps = compiled(trainable_affine(), 5e-2), 40
    else:
        model, steps = compiled(nfbook.realnvp(2, hidden_units=(16,), num_layers=2), 1e-2), 100
    # the loss of the untrained flow, N(0, I): KL(q || p*) - log Z = 3.625 - 3
    before = -importance_weights(model, shifted_gaussian, 20000, seed=(0, 0)).log_weights.mean()
    assert abs(before - 0.625) < 0.05, before
    history = model.fit_reverse_kl(shifted_gaussian, epochs=6, steps_per_epoch=steps,
                                   batch_size=256, verbose=0, seed=1)
    loss = history.history["loss"]
    assert len(loss) == 6 and loss[-1] < before - 3.5 and loss[-1] <= loss[0], loss
    # the minimum of E_q[log q - log p~] is -log Z, reached at q = p*
    assert abs(loss[-1] + LOG_Z) < 0.03, loss
    samples = model.sample(20000, seed=(1, 2)).numpy()
    # within 0.1 target standard deviations for the mean, 10% for the std
    np.testing.assert_array_less(np.abs(samples.mean(axis=0) - MEAN) / STD, 0.1)
    np.testing.assert_array_less(np.abs(samples.std(axis=0) / STD - 1.0), 0.1)
    assert model.history is history


def test_the_same_seed_gives_the_same_run():
    def run():
        nfbook.set_seed(3)
        model = compiled(trainable_affine(), 5e-2)
        return model.fit_reverse_kl(shifted_gaussian, epochs=2, steps_per_epoch=5,
                                    batch_size=64, verbose=0, seed=7).history["loss"]

    np.testing.assert_allclose(run(), run(), rtol=1e-5)


def test_callbacks_and_the_progress_bar_work_as_in_fit(capsys):
    model = compiled(trainable_affine(), 5e-2)
    stop = keras.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=100.0)
    history = model.fit_reverse_kl(shifted_gaussian, epochs=5, steps_per_epoch=3,
                                   batch_size=32, verbose=1, seed=0,
                                   callbacks=[stop, keras.callbacks.TerminateOnNaN()])
    assert len(history.history["loss"]) == 2  # stopped by EarlyStopping
    assert sorted(history.history) == ["loss"]
    assert "3/3" in capsys.readouterr().out


def test_data_and_energy_training_share_the_optimizer():
    nfbook.set_seed(0)
    model = compiled(trainable_affine())
    model.fit_reverse_kl(shifted_gaussian, steps_per_epoch=3, batch_size=32, verbose=0)
    iterations = int(model.optimizer.iterations)
    model.fit(GAUSSIAN.sample(64, seed=(0, 1)).numpy(), batch_size=32, verbose=0)
    assert iterations == 3 and int(model.optimizer.iterations) == 5


def test_a_few_samples_of_the_target_recover_the_mode_the_energy_alone_misses():
    def train(data):
        nfbook.set_seed(1)
        model = compiled(nfbook.realnvp(2, hidden_units=(32, 32), num_layers=4), 5e-3)
        history = fit_reverse_kl(model, TWO_MODES.log_prob, data=data, data_weight=1.0,
                                 epochs=3, steps_per_epoch=100, batch_size=256, verbose=0,
                                 seed=1)
        right = np.mean(model.sample(4000, seed=(1, 2)).numpy()[:, 0] > 1.0)
        return history.history, right

    alone, right_alone = train(None)
    assert sorted(alone) == ["loss"]
    assert right_alone < 0.02 and abs(alone["loss"][-1] - np.log(2)) < 0.05, (right_alone, alone)
    _, right_with_data = train(TWO_MODES.sample(64, seed=(1, 9)).numpy())
    assert 0.25 < right_with_data < 0.85, right_with_data  # 0.47 to 0.67 over seeds 0 to 5


def test_with_data_the_loss_is_the_reverse_kl_plus_the_weighted_nll_of_the_data():
    nfbook.set_seed(0)
    model = compiled(trainable_affine())
    data = GAUSSIAN.sample(50, seed=(2, 3)).numpy()
    history = fit_reverse_kl(model, shifted_gaussian, data=data, data_weight=2.5, epochs=2,
                             steps_per_epoch=3, batch_size=64, verbose=0, seed=0).history
    assert sorted(history) == ["data_nll", "loss", "reverse_kl"]
    total = np.array(history["reverse_kl"]) + 2.5 * np.array(history["data_nll"])
    np.testing.assert_allclose(history["loss"], total, rtol=1e-5)
    # the first step's NLL is that of the untrained flow N(0, I) on a minibatch of the data
    untrained = -tfd.MultivariateNormalDiag(loc=[0.0, 0.0]).log_prob(data).numpy().mean()
    assert abs(history["data_nll"][0] - untrained) < 0.5 * untrained
    # data from p* itself: the minimiser of both terms is q = p*, as without data
    model = compiled(trainable_affine(), 5e-2)
    fit_reverse_kl(model, shifted_gaussian, data=GAUSSIAN.sample(2000, seed=(4, 5)).numpy(),
                   epochs=6, steps_per_epoch=40, batch_size=256, verbose=0, seed=1)
    samples = model.sample(20000, seed=(1, 2)).numpy()
    np.testing.assert_array_less(np.abs(samples.mean(axis=0) - MEAN) / STD, 0.1)
    np.testing.assert_array_less(np.abs(samples.std(axis=0) / STD - 1.0), 0.1)


def test_bad_data_weight_and_seed_raise_clear_errors():
    model = compiled(trainable_affine())

    def fit(**kwargs):
        fit_reverse_kl(model, standard_normal, steps_per_epoch=1, verbose=0, **kwargs)

    with pytest.raises(ValueError, match=r"`data` has shape \(5, 3\); expected \(n, 2\)"):
        fit(data=np.zeros((5, 3)))
    with pytest.raises(ValueError, match="`data` has 1 row"):
        fit(data=[[0.0, 0.0], [np.nan, 1.0]])
    with pytest.raises(TypeError, match="`data` must hold real numbers"):
        fit(data=[["a", "b"]])
    for bad in (-1.0, np.inf, np.nan):
        with pytest.raises(ValueError, match="`data_weight` must be a finite number >= 0"):
            fit(data=np.zeros((4, 2)), data_weight=bad)
    with pytest.raises(TypeError, match="`data_weight` must be a real number, got '1'"):
        fit(data_weight="1")
    with pytest.raises(ValueError, match="`seed` must be an integer >= 0, got -1"):
        fit(seed=-1)
    with pytest.raises(ValueError, match="`seed` must be below 2\\*\\*31"):
        fit(seed=2**31)
    with pytest.raises(TypeError, match="`seed` must be an integer"):
        fit(seed=1.5)
    assert all(np.all(w == 0) for w in weights_of(model))  # nothing was trained


def test_a_loss_that_turns_nan_stops_training_and_undoes_the_steps_of_its_call():
    calls = tf.Variable(0)

    def turns_nan(x):
        calls.assign_add(1)
        nan = tf.fill(tf.shape(x[:, 0]), np.float32(np.nan))
        # the probe check is call 1; training steps 1 to 4 (epochs 1 and 2) are finite
        return tf.where(calls <= 5, standard_normal(x - 1.0), nan)

    model = compiled(trainable_affine())
    before = weights_of(model)
    with pytest.raises(nfbook.NonFiniteLossError,
                       match="Training stopped in epoch 3: the reverse-KL loss of a batch .* "
                             "undone, with the 4 finite updates before it, and the model "
                             "holds the weights from before them"):
        model.fit_reverse_kl(turns_nan, epochs=5, steps_per_epoch=2, batch_size=16,
                             verbose=0, seed=0)
    # one copy of the state per 100 steps: the guard went back to the start of training
    for expected, got in zip(before, weights_of(model)):
        np.testing.assert_array_equal(got, expected)
    assert int(model.optimizer.iterations) == 0
    loss = model.history.history["loss"]  # epoch 3 had no finite step: NaN, not 0
    assert np.isfinite(loss[:2]).all() and np.isnan(loss[2])


def test_bad_arguments_raise_clear_errors():
    model = compiled(trainable_affine())

    def fit(target, **kwargs):
        model.fit_reverse_kl(target, verbose=0, **{"steps_per_epoch": 1, **kwargs})

    with pytest.raises(TypeError, match="`target_log_prob` must be a callable"):
        fit("energy")
    with pytest.raises(ValueError, match=r"returned shape \(256, 2\) for input of shape "
                                         r"\(256, 2\); expected \(256,\)"):
        fit(lambda x: -0.5 * x**2)
    with pytest.raises(ValueError, match=r"returned shape \(\)"):
        fit(lambda x: tf.reduce_sum(x))
    with pytest.raises(ValueError, match="returned NaN for 256 of 256 points"):
        fit(lambda x: tf.math.log(-tf.abs(x[:, 0]) - 1.0))
    with pytest.raises(ValueError, match="returned -inf for 256 of 256 points"):
        fit(lambda x: tf.math.log(0.0 * x[:, 0]))
    with pytest.raises(ValueError, match=r"returned \+inf"):
        fit(lambda x: -tf.math.log(0.0 * x[:, 0]))
    with pytest.raises(TypeError, match="must be written with TensorFlow operations"):
        fit(lambda x: -0.5 * np.sum(np.asarray(x) ** 2, axis=-1))
    with pytest.raises(TypeError, match="expected real numbers"):
        fit(lambda x: np.array(["a"] * len(x)))
    for name in ("epochs", "steps_per_epoch", "batch_size"):
        with pytest.raises(ValueError, match=f"`{name}` must be an integer >= 1, got 0"):
            fit(standard_normal, **{name: 0})
    with pytest.raises(TypeError, match="`batch_size` must be an integer"):
        fit(standard_normal, batch_size=2.5)
    assert all(np.all(w == 0) for w in weights_of(model))  # nothing was trained


def test_batch_norm_flows_and_uncompiled_models_are_refused():
    model = compiled(nfbook.realnvp(2, hidden_units=(8,), num_layers=2, batch_norm=True))
    with pytest.raises(ValueError, match="does not support batch normalisation"):
        model.fit_reverse_kl(standard_normal, verbose=0)
    model = nfbook.FlowModel(trainable_affine(), 2)
    with pytest.raises(RuntimeError, match=r"Call compile\(\) before fit_reverse_kl"):
        model.fit_reverse_kl(standard_normal, verbose=0)


def test_importance_weights_are_log_target_minus_log_flow():
    model = nfbook.FlowModel(nfbook.affine([0.5, -0.5], [1.5, 0.5]), 2)
    x, log_w = importance_weights(model, shifted_gaussian, 500, seed=(3, 4))
    assert x.shape == (500, 2) and x.dtype == np.float32 and log_w.shape == (500,)
    fresh = tf.constant(x.copy())  # a new tensor: TFP's cache would hand back z otherwise
    expected = shifted_gaussian(fresh).numpy() - model.log_prob(fresh).numpy()
    np.testing.assert_allclose(log_w, expected, rtol=1e-5, atol=1e-4)
    again = importance_weights(model, shifted_gaussian, 500, seed=(3, 4))
    np.testing.assert_array_equal(again.samples, x)
    with pytest.raises(ValueError, match="`n` must be an integer >= 1"):
        importance_weights(model, shifted_gaussian, 0)
    with pytest.raises(ValueError, match=r"returned shape \(10, 2\)"):
        importance_weights(model, lambda x: x, 10)
    with pytest.raises(TypeError, match="must be a callable"):
        importance_weights(model, None, 10)


def test_ess_is_one_for_the_exact_proposal_and_small_for_a_bad_one():
    model = nfbook.FlowModel(nfbook.realnvp(2, hidden_units=(8,), num_layers=2), 2)
    _, log_w = importance_weights(model, lambda x: standard_normal(x) + 10.0, 2000, seed=(0, 1))
    assert effective_sample_size(log_w) == pytest.approx(1.0, abs=1e-6)
    far = tfd.MultivariateNormalDiag(loc=[4.0, 4.0], scale_diag=[0.3, 0.3])
    _, log_w = importance_weights(model, far.log_prob, 2000, seed=(0, 1))
    assert effective_sample_size(log_w) < 0.02
    assert 1.0 <= effective_sample_size(log_w, fraction=False) < 40.0


def test_ess_matches_kish_formula_and_is_stable_in_log_space():
    rng = np.random.default_rng(0)
    w = rng.exponential(size=1000)
    kish = w.sum() ** 2 / np.sum(w**2)
    assert effective_sample_size(np.log(w), fraction=False) == pytest.approx(kish, rel=1e-10)
    assert effective_sample_size(np.log(w)) == pytest.approx(kish / 1000, rel=1e-10)
    # huge or tiny log-weights would overflow or underflow if exponentiated directly
    for shift in (1e4, -1e4):
        assert effective_sample_size(np.log(w) + shift) == pytest.approx(kish / 1000, rel=1e-9)
    assert effective_sample_size([0.0, 0.0, -np.inf, -np.inf], fraction=False) == 2.0
    assert effective_sample_size([5.0]) == 1.0
    for bad, message in [([], "non-empty 1-D"), ([[0.0]], "non-empty 1-D"),
                         ([0.0, np.nan], "NaN or \\+inf"), ([-np.inf], "Every weight is zero")]:
        with pytest.raises(ValueError, match=message):
            effective_sample_size(bad)


def test_self_normalised_estimate_is_consistent_and_its_std_error_is_calibrated():
    # proposal N(0, 1), target proportional to N(1, 1): E[x] = 1, E[x^2] = 2
    rng = np.random.default_rng(1)
    estimates, errors = [], []
    for _ in range(400):
        x = rng.normal(size=(1000, 1))
        log_w = -0.5 * (x[:, 0] - 1.0) ** 2 + 0.5 * x[:, 0] ** 2 + 7.0
        mean, se = expectation(lambda s: s[:, 0], x, log_w, return_std_error=True)
        estimates.append(mean)
        errors.append(se)
    estimates = np.array(estimates)
    # the bias is O(1/n) = O(1e-3); the mean of 400 runs has a standard error of ~3e-3
    assert abs(estimates.mean() - 1.0) < 0.012, estimates.mean()
    assert np.std(estimates) == pytest.approx(np.mean(errors), rel=0.15)
    second = expectation(lambda s: np.stack([s[:, 0], s[:, 0] ** 2], 1), x, log_w)
    assert second.shape == (2,) and abs(second[1] - 2.0) < 0.3
    # equal weights give the plain mean; values may be passed instead of a function
    assert expectation(x[:, 0], x, np.zeros(1000)) == pytest.approx(x[:, 0].mean())
    with pytest.raises(ValueError, match=r"values of shape \(3,\) for 1000 weights"):
        expectation(np.zeros(3), x, log_w)
    with pytest.raises(ValueError, match="NaN or infinite at a sample with positive weight"):
        expectation(np.full(1000, np.nan), x, log_w)


def test_a_legacy_optimizer_works_for_reverse_kl():
    nfbook.set_seed(0)
    model = nfbook.FlowModel(trainable_affine(), 2)
    model.compile(optimizer=keras.optimizers.legacy.Adam(1e-2))
    model.fit_reverse_kl(shifted_gaussian, steps_per_epoch=3, batch_size=32, verbose=0)
    assert int(model.optimizer.iterations) == 3
