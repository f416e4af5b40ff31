"""nfbook.check_flow: correct bijectors pass, each kind of broken one fails on its property."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import nfbook
from tests.invariants import make_flow

tfb = tfp.bijectors


class WrongForwardLogDet(tfb.Scale):
    """A scale whose forward log-determinant is off by 0.1 (the inverse one is derived)."""

    def _forward_log_det_jacobian(self, x):
        return super()._forward_log_det_jacobian(x) + 0.1


class WrongInverseLogDet(tfb.Scale):
    """A scale whose inverse log-determinant is half of what it should be."""

    def _inverse_log_det_jacobian(self, y):
        return -0.5 * super()._forward_log_det_jacobian(y)  # Scale's is constant


class InverseOff(tfb.Scale):
    """A scale whose inverse is off by 0.01."""

    def _inverse(self, y):
        return super()._inverse(y) + 0.01


class Square(tfb.Bijector):
    """x -> x**2, not one-to-one, with the positive root as its 'inverse'."""

    def __init__(self):
        super().__init__(forward_min_event_ndims=0, name="square")

    def _forward(self, x):
        return x**2

    def _inverse(self, y):
        return tf.sqrt(y)

    def _forward_log_det_jacobian(self, x):
        return tf.math.log(tf.abs(2.0 * x))


class Overflows(tfb.Bijector):
    """exp(exp(x)): infinite for base points above about 4.5 in float32."""

    def __init__(self):
        super().__init__(forward_min_event_ndims=0, name="overflows")

    def _forward(self, x):
        return tf.exp(tf.exp(2.0 * x))

    def _inverse(self, y):
        return 0.5 * tf.math.log(tf.math.log(y))

    def _forward_log_det_jacobian(self, x):
        return tf.math.log(2.0) + 2.0 * x + tf.exp(2.0 * x)


@pytest.mark.parametrize(("bijector", "ndim"), [
    (tfb.Chain([tfb.Shift([1.0, -2.0]), tfb.Scale([3.0, 0.5])]), 2),
    (tfb.Exp(), 1),
    (tfb.Chain([tfb.Shift(0.5), tfb.Sinh()]), 2),
])
def test_correct_bijectors_pass_with_a_report(bijector, ndim):
    report = nfbook.check_flow(bijector, ndim)
    assert isinstance(report, nfbook.flow_check.FlowCheckReport)
    assert report.forward_then_inverse < 1e-4 and report.log_det_vs_autodiff < 1e-3
    assert abs(report.integral - report.expected_integral) < 0.02
    assert report.expected_integral > 0.99
    assert "all properties hold" in str(report)


@pytest.mark.parametrize("builder", ["maf", "iaf", "realnvp", "nice"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_nfbook_flows_with_random_weights_pass(builder, ndim):
    report = nfbook.check_flow(make_flow(builder, ndim), ndim, num_points=128)
    assert (report.integral is None) == (ndim > 2)


def test_a_trained_spline_flow_passes():
    flow = nfbook.nsf(2, hidden_units=(16,), num_layers=2)
    model = nfbook.FlowModel(flow, ndim=2)
    model.compile(optimizer="adam")
    model.fit(nfbook.data.moons(512, seed=0) * 2.0, epochs=3, batch_size=64, verbose=0)
    assert nfbook.check_flow(flow, 2).integral == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize(("bijector", "ndim", "check"), [
    (WrongForwardLogDet(2.0), 1, "log-det vs autodiff"),
    (WrongInverseLogDet(2.0), 2, "log-det symmetry"),
    (InverseOff(2.0), 2, "forward then inverse"),
    (Square(), 2, "forward then inverse"),
    (Overflows(), 1, "finite outputs"),
])
def test_broken_bijectors_fail_on_the_first_broken_property(bijector, ndim, check):
    with pytest.raises(nfbook.FlowCheckError, match=f"^{check}: ") as caught:
        nfbook.check_flow(bijector, ndim)
    error = caught.value
    assert error.check == check and error.error > error.tolerance
    assert np.asarray(error.point).shape == (ndim,)


def test_the_worst_point_is_reported():
    # Square's positive root sends a negative z to |z|: a relative error of 2 wherever
    # z < -1, and 2|z| / max(1, |z|) at the worst point in any case.
    with pytest.raises(nfbook.FlowCheckError) as caught:
        nfbook.check_flow(Square(), 1, num_points=100, seed=3)
    z = float(caught.value.point[0])
    assert z < 0 and caught.value.error == pytest.approx(2 * abs(z) / max(1, abs(z)), rel=1e-4)


def test_a_wrong_inverse_is_caught_although_tfps_cache_hides_it():
    bijector, z = InverseOff(2.0), tf.constant([[0.3, -1.2]])
    np.testing.assert_array_equal(bijector.inverse(bijector.forward(z)), z)  # the cache
    with pytest.raises(nfbook.FlowCheckError, match="^forward then inverse"):
        nfbook.check_flow(bijector, 2)


def test_the_integral_catches_a_density_that_is_off_everywhere():
    # With the log-determinant checks loosened, a forward log-determinant 0.1 too large per
    # coordinate makes the density exp(-0.2) times too small everywhere.
    with pytest.raises(nfbook.FlowCheckError, match="^density integrates to one") as caught:
        nfbook.check_flow(WrongForwardLogDet(2.0), 2, log_det_atol=10.0)
    assert caught.value.point.shape == (2, 2)  # the box's lower and upper corners
    assert caught.value.error == pytest.approx(1 - np.exp(-0.2), abs=0.01)


def test_bad_arguments_are_refused():
    with pytest.raises(TypeError, match="tfp.bijectors.Bijector"):
        nfbook.check_flow(lambda x: x, 2)
    with pytest.raises(ValueError, match="ndim"):
        nfbook.check_flow(tfb.Identity(), 0)
    with pytest.raises(ValueError, match="num_points"):
        nfbook.check_flow(tfb.Identity(), 2, num_points=1)
    with pytest.raises(ValueError, match="atol"):
        nfbook.check_flow(tfb.Identity(), 2, atol=-1.0)
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        nfbook.check_flow(tfb.Reshape(event_shape_out=[1, 3], event_shape_in=[3]), 3)
