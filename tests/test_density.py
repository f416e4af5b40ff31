"""nfbook.density: the one-pass log-density equals TFP's, and runs each network once."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import nfbook
from nfbook import density

from invariants import BUILDERS, fresh, make_flow

tfb = tfp.bijectors
tfd = tfp.distributions


FLOWS = [(builder, batch_norm) for builder in BUILDERS for batch_norm in (False, True)
         if builder != "affine" or not batch_norm]  # affine() has no batch norm


# invariants.NDIMS but 5: D = 3 is an odd size already, and the IAF cases at 5 took 2.3 s
@pytest.mark.parametrize("ndim", [2, 3, 8])
@pytest.mark.parametrize(("builder", "batch_norm"), FLOWS)
def test_one_pass_log_prob_equals_tfp(builder, batch_norm, ndim):
    flow = make_flow(builder, ndim, batch_norm=batch_norm)
    base = tfd.MultivariateNormalDiag(loc=tf.zeros(ndim))
    x = 2.0 * np.random.default_rng(ndim).normal(size=(50, ndim)).astype(np.float32)
    expected = tfd.TransformedDistribution(base, flow).log_prob(fresh(x))
    z, log_det = density.inverse_and_log_det(flow, fresh(x))
    np.testing.assert_allclose(z, flow.inverse(fresh(x)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(log_det, flow.inverse_log_det_jacobian(fresh(x), 1),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(density.log_prob(base, flow, fresh(x)), expected,
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(density.log_prob(None, flow, fresh(x)), expected,
                               rtol=1e-4, atol=1e-4)  # None: the standard normal


@pytest.mark.parametrize("builder", ["maf", "realnvp", "nice"])
def test_each_network_runs_once_per_layer(builder):
    flow = make_flow(builder, 4)
    layers = [b for b in flow.bijectors if hasattr(b, "_shift_and_log_scale_fn")]
    calls = []
    for layer in layers:
        network = layer._shift_and_log_scale_fn
        network.call = (lambda original: lambda *a: calls.append(1) or original(*a))(
            network.call)
    x = tf.random.normal([8, 4])
    density.inverse_and_log_det(flow, x)
    assert len(calls) == len(layers) == 3
    calls.clear()
    flow.inverse_log_det_jacobian(tf.identity(x), 1)  # TFP's own path, for comparison
    flow.inverse(tf.identity(x))
    assert len(calls) > len(layers)


@pytest.mark.parametrize("ndim", [1, 2, 7])
def test_standard_normal_log_prob_equals_tfp_with_its_gradient(ndim):
    z = tf.constant(3.0 * np.random.default_rng(ndim).normal(size=(20, ndim)), tf.float32)
    base = tfd.MultivariateNormalDiag(loc=tf.zeros(ndim))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(z)
        got, expected = density.standard_normal_log_prob(z), base.log_prob(z)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(tape.gradient(got, z), tape.gradient(expected, z), rtol=1e-6)


@pytest.mark.parametrize("ndim", [1, 2, 6])
def test_permute_last_axis_matches_gather_to_second_order(ndim):
    indices = np.random.default_rng(ndim).permutation(ndim)
    y = tf.constant(np.random.default_rng(0).normal(size=(4, 3, ndim)), tf.float32)
    weights = tf.constant(np.arange(1.0, ndim + 1.0), tf.float32)
    values = {}
    for name, permute in (("ours", lambda t: density.permute_last_axis(t, indices)),
                          ("tf", lambda t: tf.gather(t, indices, axis=-1))):
        with tf.GradientTape() as outer:
            outer.watch(y)
            with tf.GradientTape() as inner:
                inner.watch(y)
                loss = tf.reduce_sum(weights * permute(y) ** 3)
            gradient = inner.gradient(loss, y)
            curvature = tf.reduce_sum(gradient * weights)
        values[name] = (permute(y), gradient, outer.gradient(curvature, y))
    for ours, reference in zip(values["ours"], values["tf"]):
        np.testing.assert_allclose(ours, reference, rtol=1e-6)


def test_permutes_unknown_before_running_or_on_other_axes_go_through_tfp():
    x = tf.reshape(tf.range(12.0), [2, 3, 2])
    on_axis_2 = tfb.Permute([2, 0, 1], axis=-2)
    assert density._static_permutation(on_axis_2) is None
    z, _ = density.inverse_and_log_det(on_axis_2, x)
    np.testing.assert_allclose(z, tf.gather(x, [1, 2, 0], axis=-2))
    variable = tfb.Permute(tf.Variable([1, 0]))
    assert density._static_permutation(variable) is None
    z, log_det = density.inverse_and_log_det(variable, tf.constant([[1.0, 2.0]]))
    np.testing.assert_allclose(z, [[2.0, 1.0]])
    np.testing.assert_allclose(log_det, [0.0])


def test_other_bijectors_go_through_tfp():
    flow = tfb.Chain([tfb.Shift([1.0, -1.0]), tfb.Scale([2.0, 0.5]), tfb.Exp()])
    base = tfd.MultivariateNormalDiag(loc=tf.zeros(2))
    x = tf.constant([[2.0, 0.5], [3.0, -0.25]])
    np.testing.assert_allclose(density.log_prob(base, flow, x),
                               tfd.TransformedDistribution(base, flow).log_prob(x), rtol=1e-6)


def test_flow_model_trains_through_the_one_pass_density():
    model = nfbook.FlowModel(make_flow("maf", 3), ndim=3)
    x = tf.random.normal([16, 3])
    with tf.GradientTape(persistent=True) as tape:
        fused = tf.reduce_mean(model(x, training=True))
        reference = tf.reduce_mean(model.distribution.log_prob(tf.identity(x)))
    for got, expected in zip(tape.gradient(fused, model.trainable_variables),
                             tape.gradient(reference, model.trainable_variables)):
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5)
