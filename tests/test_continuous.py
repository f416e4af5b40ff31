import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras
from scipy.linalg import expm

import nfbook
from nfbook.continuous import VectorField, trace_exact

from invariants import grid_integral

tfb = tfp.bijectors
tfd = tfp.distributions

def random_ffjord(exact_trace=True, seed=0, **kwargs):
    """A small FFJORD flow whose field has random weights, so that it moves the points."""
    flow = nfbook.ffjord(2, hidden_units=(16,), exact_trace=exact_trace, **kwargs)
    flow.forward(tf.zeros([1, 2]))
    rng = np.random.default_rng(seed)
    for variable in flow.field.variables:
        variable.assign(rng.normal(scale=0.6, size=variable.shape).astype(np.float32))
    return flow


def normal_points(n, seed, ndim=2):
    return tf.constant(np.random.default_rng(seed).normal(size=(n, ndim)).astype(np.float32))


def test_vector_field_takes_scalar_or_per_state_times():
    field = VectorField(2, hidden_units=(8,))
    x = normal_points(5, 0)
    by_scalar = field(0.3, x)
    np.testing.assert_allclose(field(tf.fill([5], 0.3), x), by_scalar, rtol=1e-6)
    np.testing.assert_allclose(field(tf.fill([5, 1], 0.3), x), by_scalar, rtol=1e-6)
    assert np.max(np.abs(field(0.9, x) - by_scalar)) > 1e-4  # the time is an input
    stacked = tf.stack([x, 2 * x])  # extra batch axes, as in sample([k, n])
    np.testing.assert_allclose(field(0.3, stacked)[1], field(0.3, 2 * x), rtol=1e-5)
    np.testing.assert_allclose(field(0.3, x[2]), by_scalar[2], rtol=1e-6)  # no batch axis
    with pytest.raises(ValueError, match=r"expected \(\.\.\., 2\)"):
        field(0.3, tf.zeros([4, 3]))


def test_vector_field_fourier_time_features():
    field = VectorField(2, hidden_units=(8,), time_features=3)
    x = normal_points(5, 0)
    assert field(0.3, x).shape == (5, 2)
    assert field.hidden[0].kernel.shape == (2 + 1 + 2 * 3, 8)  # x, t, sin and cos of 3 angles
    # the features have periods 2, 1 and 1/2 in t: only the raw t tells t and t + 2 apart
    kernel = field.hidden[0].kernel
    kernel.assign(tf.tensor_scatter_nd_update(kernel, [[2]], tf.zeros([1, 8])))
    np.testing.assert_allclose(field(0.3, x), field(2.3, x), atol=1e-5)
    assert np.max(np.abs(field(0.3, x) - field(0.55, x))) > 1e-3
    with pytest.raises(ValueError, match="`time_features` must be an integer >= 0, got -1"):
        VectorField(2, time_features=-1)


def test_trace_exact_is_the_jacobian_diagonal():
    field = VectorField(3, hidden_units=(16, 16))
    x = normal_points(8, 1, ndim=3)
    velocity, diagonal = trace_exact(field, x.shape, x.dtype)(0.4, (x, tf.zeros_like(x)))
    with tf.GradientTape() as tape:
        tape.watch(x)
        v = field(0.4, x)
    jacobian = tape.batch_jacobian(v, x)
    np.testing.assert_allclose(velocity, v, rtol=1e-6)
    np.testing.assert_allclose(diagonal, tf.linalg.diag_part(jacobian), atol=1e-6)
    _, tfp_diagonal = tfb.ffjord.trace_jacobian_exact(field, x.shape, x.dtype)(
        0.4, (x, tf.zeros_like(x)))
    np.testing.assert_allclose(diagonal, tfp_diagonal, atol=1e-6)


def test_linear_field_flows_by_the_matrix_exponential():
    # dz/dt = A z: z(1) = expm(A) z(0), and log|det| = tr(A) (instantaneous change of variables)
    a = np.array([[0.3, -1.2], [0.8, -0.5]], np.float32)
    solver = tfp.math.ode.DormandPrince(atol=1e-7, rtol=1e-7)
    flow = tfb.FFJORD(state_time_derivative_fn=lambda t, z: tf.linalg.matvec(a, z),
                      ode_solve_fn=solver.solve, trace_augmentation_fn=trace_exact)
    z = normal_points(16, 2)
    x = flow.forward(z)
    np.testing.assert_allclose(x, z.numpy() @ expm(a).T, atol=1e-4)
    np.testing.assert_allclose(flow.forward_log_det_jacobian(z, event_ndims=1), np.trace(a),
                               atol=1e-4)
    np.testing.assert_allclose(flow.inverse_log_det_jacobian(tf.identity(x), event_ndims=1),
                               -np.trace(a), atol=1e-4)
    # one point without a batch axis: TFP's exact trace takes its coordinates for a batch
    # and returns a wrong log-density; trace_exact does not
    dist = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(loc=[0.0, 0.0]), flow)
    point = np.array([0.3, 0.1], np.float32)
    closed_form = dist.distribution.log_prob(expm(-a) @ point) - np.trace(a)
    np.testing.assert_allclose(dist.log_prob(point), closed_form, atol=1e-4)
    np.testing.assert_allclose(dist.log_prob(point[None])[0], closed_form, atol=1e-4)
    tfp_flow = tfb.FFJORD(state_time_derivative_fn=lambda t, z: tf.linalg.matvec(a, z),
                          ode_solve_fn=solver.solve,
                          trace_augmentation_fn=tfb.ffjord.trace_jacobian_exact)
    tfp_dist = tfd.TransformedDistribution(dist.distribution, tfp_flow)
    assert abs(float(tfp_dist.log_prob(point)) - float(closed_form)) > 0.1


def test_ode_flow_round_trips_and_its_log_det_matches_autodiff():
    flow = random_ffjord(atol=1e-6, rtol=1e-6)
    z = normal_points(32, 3)
    x = flow.forward(z)
    assert np.max(np.abs(x - z)) > 0.1  # the field does move the points
    assert np.max(np.abs(flow.inverse(tf.identity(x) * 1.0) - z)) < 1e-4
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(z)
        # a fresh tensor: for the cached z, TFP would return x from the first call, untaped
        x1, x2 = tf.unstack(flow.forward(tf.identity(z)), axis=-1)
    rows = [tape.gradient(x1, z), tape.gradient(x2, z)]  # rows of the Jacobian dx/dz
    log_det = np.log(np.abs(rows[0][:, 0] * rows[1][:, 1] - rows[0][:, 1] * rows[1][:, 0]))
    fldj = flow.forward_log_det_jacobian(z, event_ndims=1)
    assert np.std(fldj) > 0.05  # not a volume-preserving flow
    np.testing.assert_allclose(fldj, log_det, atol=1e-3)


def test_ode_flow_density_integrates_to_one():
    flow = random_ffjord()
    dist = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(loc=[0.0, 0.0]), flow)
    log_prob = tf.function(dist.log_prob)
    assert abs(grid_integral(log_prob, extent=6.0, resolution=121) - 1.0) < 0.02
    # and the density is not the base's: the flow reshapes it
    x = normal_points(64, 6)
    assert np.max(np.abs(log_prob(x) - dist.distribution.log_prob(x))) > 0.1


def test_hutchinson_trace_agrees_with_the_exact_trace_on_average():
    exact = random_ffjord(exact_trace=True)
    noisy = random_ffjord(exact_trace=False)
    x = normal_points(16, 4)
    exact_ldj = exact.inverse_log_det_jacobian(x, event_ndims=1).numpy()
    assert np.abs(exact_ldj).mean() > 0.3  # so that a wrong scale of the trace shows
    # one call on 500 copies of the points: the probes are drawn per row
    tf.random.set_seed(0)
    draws = noisy.inverse_log_det_jacobian(tf.tile(x, [500, 1]), event_ndims=1)
    draws = draws.numpy().reshape(500, 16)
    assert np.std(draws, axis=0).max() > 1e-2  # it is an estimator, not the exact value
    standard_error = np.std(draws, axis=0) / np.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(axis=0) - exact_ldj) < 4 * standard_error + 2e-3)
    # pooled over the points: the mean estimates follow the exact values with slope one
    slope = np.sum(draws.mean(axis=0) * exact_ldj) / np.sum(exact_ldj**2)
    assert abs(slope - 1) < 0.2, slope


def test_ffjord_trains_by_maximum_likelihood():
    nfbook.set_seed(1)
    model = nfbook.FlowModel(nfbook.ffjord(2, hidden_units=(16,)), ndim=2)
    x = nfbook.data.moons(1024, seed=0)
    field = model.bijector.field
    assert {id(v) for v in field.trainable_variables} <= {id(v) for v in model.trainable_variables}
    with tf.GradientTape() as tape:
        nll = -tf.reduce_mean(model.log_prob(x[:256]))
    gradients = tape.gradient(nll, field.trainable_variables)
    assert all(g is not None and np.all(np.isfinite(g)) for g in gradients)
    assert all(np.abs(g).max() > 0 for g in gradients)  # the adjoint reaches every weight
    model.compile(optimizer=keras.optimizers.Adam(2e-2))
    before = model.evaluate(x, batch_size=1024, verbose=0)
    model.fit(x, epochs=3, batch_size=256, verbose=0)
    after = model.evaluate(x, batch_size=1024, verbose=0)
    assert after < before - 0.1, (before, after)


def test_saving():
    model = nfbook.FlowModel(nfbook.ffjord(2, hidden_units=(8,), time_features=2), ndim=2)
    for variable in model.trainable_variables:
        variable.assign(tf.random.normal(variable.shape, stddev=0.2))
    x = nfbook.data.moons(20)
    with tempfile.TemporaryDirectory() as folder:
        model.save(f"{folder}/ode.nfbook")
        loaded = nfbook.load(f"{folder}/ode.nfbook")
        assert np.max(np.abs(loaded.log_prob(x) - model.log_prob(x))) < 1e-5


def test_bad_input():
    with pytest.raises(ValueError, match="vector field in 3 dimensions, expected 2"):
        nfbook.ffjord(2, field=VectorField(3))
    with pytest.raises(TypeError, match="VectorField, got function"):
        nfbook.ffjord(2, field=lambda t, x: x)
    with pytest.raises(ValueError, match=r"`atol` must be a finite number > 0, got -1"):
        nfbook.ffjord(2, atol=-1.0)
    with pytest.raises(TypeError, match="`exact_trace` must be True or False"):
        nfbook.ffjord(2, exact_trace="yes")
