import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras
from scipy.linalg import expm

import nfbook
from nfbook.continuous import VectorField, flow_matching_loss, trace_exact

from invariants import grid_integral

tfb = tfp.bijectors
tfd = tfp.distributions

# Base N(0, I), data N(m, s^2 I): x_t = (1 - t) x0 + t x1 has variance
# v_t = (1 - t)^2 + t^2 s^2 per coordinate, and the field that flow matching should learn is
# E[x1 - x0 | x_t = x] = m + c_t (x - t m) with c_t = (t s^2 - (1 - t)) / v_t.
MEAN, SCALE = np.array([2.0, -1.0], np.float32), 0.5


def gaussian_field(t, x):
    t = np.asarray(t, np.float32)
    v_t = (1 - t) ** 2 + t**2 * SCALE**2
    return MEAN + (t * SCALE**2 - (1 - t)) / v_t * (x - t * MEAN)


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


@pytest.fixture(scope="module")
def gaussian_flow_matching():
    nfbook.set_seed(0)
    data = (MEAN + SCALE * np.random.default_rng(0).normal(size=(8000, 2))).astype(np.float32)
    model = nfbook.FlowMatching(2, hidden_units=(64, 64))
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(data, epochs=25, batch_size=256, verbose=0)
    return model, history


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


def test_flow_matching_loss_at_the_optimum():
    # With the exact field the mean loss is the leftover variance of x1 - x0 given x_t:
    # per coordinate Var(x1 - x0) - Cov(x1 - x0, x_t)^2 / v_t = 1 + s^2 - c_t^2 v_t.
    rng = np.random.default_rng(5)
    n = 200_000
    x0 = rng.normal(size=(n, 2)).astype(np.float32)
    x1 = (MEAN + SCALE * rng.normal(size=(n, 2))).astype(np.float32)
    t = rng.uniform(size=(n, 1)).astype(np.float32)
    loss = flow_matching_loss(gaussian_field, x1, x0, t).numpy()
    v_t = (1 - t) ** 2 + t**2 * SCALE**2
    expected = 2 * np.mean(1 + SCALE**2 - (t * SCALE**2 - (1 - t)) ** 2 / v_t)
    assert abs(loss.mean() - expected) < 4 * loss.std() / np.sqrt(n)
    worse = flow_matching_loss(lambda t, x: gaussian_field(t, x) + 0.3, x1, x0, t).numpy()
    np.testing.assert_allclose(worse.mean() - loss.mean(), 2 * 0.3**2, rtol=0.05)


def test_flow_matching_learns_the_straight_line_field_between_gaussians(gaussian_flow_matching):
    model, history = gaussian_flow_matching
    assert history.history["loss"][-1] < history.history["loss"][0]
    rng = np.random.default_rng(3)
    errors = []
    for t in (0.2, 0.5, 0.8):
        v_t = (1 - t) ** 2 + t**2 * SCALE**2
        x = (t * MEAN + np.sqrt(v_t) * rng.normal(size=(500, 2))).astype(np.float32)
        learned = model.field(t, tf.constant(x)).numpy()
        errors.append(np.mean(np.linalg.norm(learned - gaussian_field(t, x), axis=1)))
    assert max(errors) < 0.25, errors
    samples = model.sample(2000, seed=(1, 2)).numpy()
    np.testing.assert_allclose(samples.mean(axis=0), MEAN, atol=0.1)
    np.testing.assert_allclose(samples.std(axis=0), [SCALE, SCALE], atol=0.1)
    # and the density through the ODE is close to the target N(m, s^2 I)
    target = tfd.MultivariateNormalDiag(loc=MEAN, scale_diag=[SCALE, SCALE])
    x = target.sample(500, seed=(3, 4))
    np.testing.assert_allclose(np.mean(model.log_prob(x)), np.mean(target.log_prob(x)),
                               atol=0.1)


def test_flow_matching_model_works_with_the_plotting_helpers(gaussian_flow_matching):
    model, _ = gaussian_flow_matching
    x = model.sample(50, seed=(5, 6))
    # the same base draw; the solver's steps differ (no trace here), within its tolerance
    np.testing.assert_allclose(model.distribution.sample(50, seed=(5, 6)), x, atol=5e-3)
    np.testing.assert_allclose(model.log_prob(x), model.distribution.log_prob(x), atol=1e-4)
    np.testing.assert_allclose(model.prob(x), np.exp(model.log_prob(x)), rtol=1e-5)
    extent = (MEAN[0] - 3, MEAN[0] + 3, MEAN[1] - 3, MEAN[1] + 3)
    _, _, p = nfbook.plot.density_grid(model, extent, resolution=60)
    assert abs(p.sum() * (6 / 60) ** 2 - 1) < 0.02
    stages = nfbook.plot.stage_samples(model, 100, seed=0)
    assert [name for name, _ in stages] == ["base", "ffjord"]


def test_saving():
    model = nfbook.FlowModel(nfbook.ffjord(2, hidden_units=(8,)), ndim=2)
    for variable in model.trainable_variables:
        variable.assign(tf.random.normal(variable.shape, stddev=0.2))
    x = nfbook.data.moons(20)
    with tempfile.TemporaryDirectory() as folder:
        model.save(f"{folder}/ode.nfbook")
        loaded = nfbook.load(f"{folder}/ode.nfbook")
        assert np.max(np.abs(loaded.log_prob(x) - model.log_prob(x))) < 1e-5

        matching = nfbook.FlowMatching(2, hidden_units=(8,))
        for variable in matching.field.variables:
            variable.assign(tf.random.normal(variable.shape, stddev=0.3))
        with pytest.raises(NotImplementedError, match="save_weights"):
            matching.save(f"{folder}/fm.keras")
        matching.save_weights(f"{folder}/fm")
        again = nfbook.FlowMatching(2, hidden_units=(8,))
        again.load_weights(f"{folder}/fm")
        np.testing.assert_allclose(again.log_prob(x), matching.log_prob(x), atol=1e-6)


def test_bad_input():
    with pytest.raises(ValueError, match="vector field in 3 dimensions, expected 2"):
        nfbook.ffjord(2, field=VectorField(3))
    with pytest.raises(TypeError, match="VectorField, got function"):
        nfbook.ffjord(2, field=lambda t, x: x)
    with pytest.raises(ValueError, match=r"`atol` must be a finite number > 0, got -1"):
        nfbook.ffjord(2, atol=-1.0)
    with pytest.raises(TypeError, match="`exact_trace` must be True or False"):
        nfbook.ffjord(2, exact_trace="yes")
    with pytest.raises(ValueError, match="`ndim` must be an integer >= 1, got 0"):
        nfbook.FlowMatching(0)
    model = nfbook.FlowMatching(2, hidden_units=(8,))
    with pytest.raises(RuntimeError, match="compile"):
        model.fit(np.zeros((4, 2), np.float32))
    model.compile()
    with pytest.raises(TypeError, match="takes no labels"):
        model.fit(np.zeros((4, 2), np.float32), np.zeros(4))
    with pytest.raises(ValueError, match=r"shape \(4, 3\); expected \(n, 2\)"):
        model.fit(np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="1 row"):
        model.log_prob([[0.0, np.nan]])
    with pytest.raises(TypeError, match="takes no `loss`"):
        model.compile(loss="mse")
    with pytest.raises(nfbook.NonFiniteLossError, match="flow-matching loss"):
        model.fit(np.full((8, 2), 1e30, np.float32), epochs=1, verbose=0)


def test_flow_matching_trains_with_the_default_fused_adam():
    nfbook.set_seed(0)
    model = nfbook.FlowMatching(2, hidden_units=(8,))
    model.compile()
    assert isinstance(model.optimizer, keras.optimizers.legacy.Adam)
    model.fit(nfbook.data.moons(256), batch_size=64, epochs=2, verbose=0)
    assert int(model.optimizer.iterations) == 8
    assert np.isfinite(model.history.history["loss"]).all()
