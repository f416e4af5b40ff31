import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

import nfbook
from nfbook.continuous import VectorField

from invariants import grid_integral

tfd = tfp.distributions


def random_ffjord(exact_trace=True, seed=0):
    flow = nfbook.ffjord(2, hidden_units=(16,), exact_trace=exact_trace)
    flow.forward(tf.zeros([1, 2]))
    rng = np.random.default_rng(seed)
    for variable in flow.field.variables:
        variable.assign(rng.normal(scale=0.6, size=variable.shape).astype(np.float32))
    return flow


def test_ode_flow_density_integrates_to_one_and_round_trips():
    flow = random_ffjord()
    dist = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(loc=[0.0, 0.0]), flow)
    assert abs(grid_integral(dist.log_prob, extent=6.0, resolution=121) - 1.0) < 0.02
    z = tf.constant(np.random.default_rng(1).normal(size=(32, 2)).astype(np.float32))
    x = flow.forward(z)
    assert np.max(np.abs(flow.inverse(tf.identity(x) * 1.0) - z)) < 1e-3
    assert np.max(np.abs(x - z)) > 0.1  # the field does move the points


def test_hutchinson_trace_agrees_with_the_exact_trace_on_average():
    exact = random_ffjord(exact_trace=True)
    noisy = random_ffjord(exact_trace=False)
    x = tf.constant(np.random.default_rng(2).normal(size=(16, 2)).astype(np.float32))
    exact_ldj = exact.inverse_log_det_jacobian(x, event_ndims=1).numpy()
    # one call on 40 copies of the points: Hutchinson's noise is drawn per row
    draws = noisy.inverse_log_det_jacobian(tf.tile(x, [40, 1]), event_ndims=1)
    draws = draws.numpy().reshape(40, 16)
    assert np.std(draws, axis=0).max() > 1e-3  # it is an estimator, not the exact value
    standard_error = np.std(draws, axis=0) / np.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(axis=0) - exact_ldj) < 4 * standard_error + 1e-3)


def test_flow_matching_learns_the_straight_line_field_between_gaussians():
    # Base N(0, I), data N(m, s^2 I): x_t = (1 - t) x0 + t x1 has variance
    # v_t = (1 - t)^2 + t^2 s^2 and the optimal field is
    # E[x1 - x0 | x_t = x] = m + (t s^2 - (1 - t)) / v_t * (x - t m).
    nfbook.set_seed(0)
    m, s = np.array([2.0, -1.0], np.float32), 0.5
    data = (m + s * np.random.default_rng(0).normal(size=(8000, 2))).astype(np.float32)
    model = nfbook.FlowMatching(2, hidden_units=(64, 64))
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(data, epochs=25, batch_size=256, verbose=0)
    rng = np.random.default_rng(3)
    errors = []
    for t in (0.2, 0.5, 0.8):
        v_t = (1 - t) ** 2 + t**2 * s**2
        x = (t * m + np.sqrt(v_t) * rng.normal(size=(500, 2))).astype(np.float32)
        exact = m + (t * s**2 - (1 - t)) / v_t * (x - t * m)
        learned = model.field(t, tf.constant(x)).numpy()
        errors.append(np.mean(np.linalg.norm(learned - exact, axis=1)))
    assert max(errors) < 0.25, errors
    samples = model.sample(2000, seed=(1, 2)).numpy()
    np.testing.assert_allclose(samples.mean(axis=0), m, atol=0.1)
    np.testing.assert_allclose(samples.std(axis=0), [s, s], atol=0.1)


def test_ffjord_in_a_flow_model_saves_and_loads(tmp_path):
    model = nfbook.FlowModel(nfbook.ffjord(2, hidden_units=(8,)), ndim=2)
    for variable in model.trainable_variables:
        variable.assign(tf.random.normal(variable.shape, stddev=0.2))
    model.save(tmp_path / "ode.nfbook")
    x = nfbook.data.moons(20)
    loaded = nfbook.load(tmp_path / "ode.nfbook")
    assert np.max(np.abs(loaded.log_prob(x) - model.log_prob(x))) < 1e-5


def test_bad_input():
    with pytest.raises(ValueError, match="vector field in 3 dimensions, expected 2"):
        nfbook.ffjord(2, field=VectorField(3))
    model = nfbook.FlowMatching(2, hidden_units=(8,))
    model.compile()
    with pytest.raises(TypeError, match="takes no labels"):
        model.fit(np.zeros((4, 2), np.float32), np.zeros(4))
    with pytest.raises(ValueError, match=r"shape \(4, 3\); expected \(n, 2\)"):
        model.fit(np.zeros((4, 3), np.float32))
    with pytest.raises(TypeError, match="takes no `loss`"):
        model.compile(loss="mse")
