"""tf_keras networks that give the parameters of nfbook's rational-quadratic splines."""

from __future__ import annotations

__all__ = ["MIN_BIN_SIZE", "MIN_SLOPE", "AutoregressiveSpline", "CouplingSpline", "SplineNetwork",
           "spline_parameters"]

import math
from collections.abc import Sequence

import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

from nfbook.checks import check_hidden_units, check_positive_int, check_real
from nfbook.networks import (
    build_mlp,
    check_context_dim,
    context_input,
    fan_in_uniform,
    join_context,
    made_weights,
    spread_biases,
)

tfb = tfp.bijectors

MIN_BIN_SIZE = 1e-3
"""Smallest bin width (and height), as a fraction of the interval :math:`2B`."""
MIN_SLOPE = 1e-3
"""Smallest derivative at an interior knot."""
# softplus(_SLOPE_OFFSET) = 1 - MIN_SLOPE: a zero raw slope gives a knot slope of exactly 1.
_SLOPE_OFFSET = math.log(math.expm1(1.0 - MIN_SLOPE))


def spline_parameters(raw: tf.Tensor, num_bins: int, bound: float
                      ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    r"""Turn unconstrained network outputs into a valid spline on :math:`[-B, B]`.

    With :math:`K` bins and raw outputs :math:`(a, b, c) \in \mathbb R^{K} \times
    \mathbb R^{K} \times \mathbb R^{K-1}` (the last axis of ``raw``, in that order),

    .. math::
        w = 2B\,[\epsilon + (1 - K\epsilon)\,\mathrm{softmax}(a)], \quad
        h = 2B\,[\epsilon + (1 - K\epsilon)\,\mathrm{softmax}(b)], \quad
        \delta = \delta_{\min} + \mathrm{softplus}(c + c_0),

    with :math:`\epsilon` = :data:`MIN_BIN_SIZE`, :math:`\delta_{\min}` = :data:`MIN_SLOPE` and
    :math:`\mathrm{softplus}(c_0) = 1 - \delta_{\min}`. Widths and heights are positive and sum
    to :math:`2B`, so the spline maps :math:`[-B, B]` onto itself and meets the identity tails
    continuously; the slopes are positive. At ``raw = 0`` every bin is :math:`2B/K` wide and
    high and every slope is 1: the spline is the identity.

    Parameters
    ----------
    raw : tf.Tensor
        Shape ``(..., 3K - 1)``.
    num_bins : int
        :math:`K`.
    bound : float
        :math:`B`.

    Returns
    -------
    widths, heights, slopes : tf.Tensor
        Shapes ``(..., K)``, ``(..., K)`` and ``(..., K - 1)``.

    Examples
    --------
    >>> w, h, s = spline_parameters(tf.zeros([2, 3, 11]), num_bins=4, bound=2.0)
    >>> w.shape, s.shape
    (TensorShape([2, 3, 4]), TensorShape([2, 3, 3]))
    >>> bool(tf.reduce_all(tf.abs(w - 1.0) < 1e-6)), bool(tf.reduce_all(tf.abs(s - 1.0) < 1e-6))
    (True, True)
    """
    a, b, c = tf.split(raw, [num_bins, num_bins, num_bins - 1], axis=-1)
    scale = 2.0 * bound * (1.0 - num_bins * MIN_BIN_SIZE)
    floor = 2.0 * bound * MIN_BIN_SIZE
    widths = floor + scale * tf.math.softmax(a, axis=-1)
    heights = floor + scale * tf.math.softmax(b, axis=-1)
    slopes = MIN_SLOPE + tf.math.softplus(c + _SLOPE_OFFSET)
    return widths, heights, slopes


class _Spline(tfb.RationalQuadraticSpline):
    """TFP's spline, with the static shape of its input kept on its outputs (TFP's bin search
    broadcasts through dynamic shapes, which leaves even the event size unknown)."""

    def _forward(self, x: tf.Tensor) -> tf.Tensor:
        return tf.ensure_shape(super()._forward(x), x.shape)

    def _inverse(self, y: tf.Tensor) -> tf.Tensor:
        return tf.ensure_shape(super()._inverse(y), y.shape)

    def _forward_log_det_jacobian(self, x: tf.Tensor) -> tf.Tensor:
        return tf.ensure_shape(super()._forward_log_det_jacobian(x), x.shape)


def _spline(raw: tf.Tensor, num_bins: int, bound: float) -> tfb.RationalQuadraticSpline:
    widths, heights, slopes = spline_parameters(raw, num_bins, bound)
    return _Spline(widths, heights, slopes, range_min=-bound)


class SplineNetwork(keras.layers.Layer):
    """What both spline networks share: the spline's settings and a zeroed output layer."""

    def __init__(self, num_bins: int, bound: float, context_dim: int | None = None,
                 **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.context_dim = check_context_dim(context_dim)
        self.num_bins = check_positive_int("num_bins", num_bins, minimum=2)
        self.bound = check_real("bound", bound, positive=True)
        self.params_per_coordinate = 3 * self.num_bins - 1

    def spline(self, x: tf.Tensor, *args: object, **kwargs: object
               ) -> tfb.RationalQuadraticSpline:
        """The spline for the conditioning values ``x`` (what the flow layer calls)."""
        return _spline(self(x, *args, **kwargs), self.num_bins, self.bound)


class CouplingSpline(SplineNetwork):
    r"""MLP giving the spline parameters of a coupling layer from the kept half.

    From the :math:`d` kept coordinates :math:`x_{1:d}` it returns raw parameters of shape
    ``(..., D - d, 3K - 1)``, one spline per transformed coordinate (see
    :func:`spline_parameters`). Hidden layers start from :func:`~nfbook.networks.fan_in_uniform`
    kernels and :func:`~nfbook.networks.spread_biases`; the output layer starts at zero, so
    the untrained layer is the identity while the gradient with respect to the output
    weights, (hidden activations) times (gradient of the loss with respect to the raw
    parameters), is not zero.

    Parameters
    ----------
    output_units : int
        Number of transformed coordinates :math:`D - d`.
    hidden_units : sequence of int
        Widths of the hidden dense layers.
    activation : str
        Hidden activation.
    num_bins : int
        Bins :math:`K \geq 2` per spline.
    bound : float
        Half-width :math:`B` of the spline's interval :math:`[-B, B]`.
    context_dim : int, optional
        Width :math:`k` of a context passed as ``conditional_input`` and joined to the kept
        half as the MLP's input (as in :class:`~nfbook.networks.CouplingAffine`); ``None``
        for an unconditional network.
    **kwargs
        Passed to :class:`tf_keras.layers.Layer`.

    Examples
    --------
    >>> net = CouplingSpline(3, hidden_units=(8,), num_bins=5)
    >>> net(tf.ones([4, 2])).shape
    TensorShape([4, 3, 14])
    """

    def __init__(self, output_units: int, hidden_units: Sequence[int] = (128, 128),
                 activation: str = "relu", num_bins: int = 8, bound: float = 6.0,
                 context_dim: int | None = None, **kwargs: object) -> None:
        super().__init__(num_bins, bound, context_dim, **kwargs)
        self.output_units = check_positive_int("output_units", output_units)
        self.hidden_units = check_hidden_units(hidden_units)
        self.hidden = [
            keras.layers.Dense(h, activation=activation, kernel_initializer=fan_in_uniform)
            for h in self.hidden_units
        ]
        self.out = keras.layers.Dense(self.output_units * self.params_per_coordinate,
                                      kernel_initializer="zeros", bias_initializer="zeros")

    def build(self, input_shape: tf.TensorShape) -> None:
        build_mlp(self.hidden, self.out, input_shape, self.context_dim)
        super().build(input_shape)

    def call(self, x0: tf.Tensor, output_units: int | None = None,
             conditional_input: tf.Tensor | None = None) -> tf.Tensor:
        if output_units is not None and output_units != self.output_units:
            raise ValueError(f"This coupling network was built for {self.output_units} "
                             f"transformed coordinates, but the bijector asked for "
                             f"{output_units}.")
        h = join_context(x0, context_input(self, conditional_input))
        for layer in self.hidden:
            h = layer(h)
        params = self.out(h)
        shape = tf.concat([tf.shape(params)[:-1],
                           [self.output_units, self.params_per_coordinate]], axis=0)
        return tf.reshape(params, shape)


class AutoregressiveSpline(SplineNetwork):
    r"""MADE giving autoregressive spline parameters: those of coordinate :math:`i` depend
    only on :math:`x_{<i}`.

    A :class:`tfb.AutoregressiveNetwork` with ``params = 3K - 1``, returning shape
    ``(..., D, 3K - 1)``; kernels start from :func:`~nfbook.networks.fan_in_uniform`, hidden
    biases from :func:`~nfbook.networks.spread_biases`, and the output layer at zero (the
    identity spline).

    Parameters
    ----------
    ndim : int
        Event size :math:`D`.
    hidden_units, activation, num_bins, bound, **kwargs
        As in :class:`CouplingSpline`.
    context_dim : int, optional
        Width :math:`k` of a context passed as ``conditional_input``, fed to every layer of
        the MADE as in :class:`~nfbook.networks.AutoregressiveAffine`.

    Examples
    --------
    >>> net = AutoregressiveSpline(3, hidden_units=(8,), num_bins=4)
    >>> net(tf.ones([5, 3])).shape
    TensorShape([5, 3, 11])
    """

    def __init__(self, ndim: int, hidden_units: Sequence[int] = (128, 128),
                 activation: str = "relu", num_bins: int = 8, bound: float = 6.0,
                 context_dim: int | None = None, **kwargs: object) -> None:
        super().__init__(num_bins, bound, context_dim, **kwargs)
        self.ndim = check_positive_int("ndim", ndim)
        self.hidden_units = check_hidden_units(hidden_units)
        conditional = self.context_dim is not None
        self.made = tfb.AutoregressiveNetwork(
            params=self.params_per_coordinate, event_shape=[self.ndim],
            conditional=conditional,
            conditional_event_shape=[self.context_dim] if conditional else None,
            hidden_units=list(self.hidden_units), activation=activation,
            kernel_initializer=fan_in_uniform)

    def build(self, input_shape: tf.TensorShape) -> None:
        self.made.build(input_shape)
        masked, context_kernels = made_weights(self.made, self.context_dim is not None)
        spread_biases(masked[:-2])
        # the output layer (its kernel, bias and context kernel) starts at zero
        for variable in [*masked[-2:], *context_kernels[-1:]]:
            variable.assign(tf.zeros_like(variable))
        super().build(input_shape)

    def call(self, x: tf.Tensor, conditional_input: tf.Tensor | None = None) -> tf.Tensor:
        context = context_input(self, conditional_input)
        return self.made(x) if context is None else self.made(x, conditional_input=context)
