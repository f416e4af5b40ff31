r"""One-pass inverse and log-determinant of nfbook's spline layers.

TFP's ``RealNVP`` and ``MaskedAutoregressiveFlow`` run their network once for ``inverse`` and
again for ``inverse_log_det_jacobian``, and ``RationalQuadraticSpline`` has no inverse
log-determinant of its own: it inverts the spline and then differentiates it forward, searching
the bins twice. :func:`spline_layer_inverse` takes all of it from one network pass and one bin
search: after solving for :math:`\xi` in the bin of :math:`y`,

.. math::
    \log\left|\frac{dx}{dy}\right| = -\log \frac{s_k^2\,[\delta_{k+1} \xi^2
        + 2 s_k \xi (1 - \xi) + \delta_k (1 - \xi)^2]}
        {[s_k + (\delta_{k+1} + \delta_k - 2 s_k)\,\xi (1 - \xi)]^2}

inside :math:`[-B, B]` and 0 in the identity tails. The bin of each :math:`y` is found by
comparing it with every inner knot, and its knots are read off by a one-hot sum over the bins
(:func:`bin_of`): elementwise operations whose gradient is a product, where TFP's search and
gathers differentiate through scatters. In ``FlowModel.fit`` that traces faster and trains
faster (``benchmarks/spline_bins.py``).
"""

from __future__ import annotations

__all__ = ["Bin", "bin_of", "spline_inverse_and_log_det", "spline_layer_inverse"]

from typing import NamedTuple

import tensorflow as tf
import tensorflow_probability as tfp

from nfbook import private_api
from nfbook.splines import SplineFunction

tfb = tfp.bijectors


class Bin(NamedTuple):
    r"""The bin of a value: its lower knot :math:`(x_k, y_k)`, width :math:`w_k`, height
    :math:`h_k`, slope :math:`s_k = h_k / w_k`, the derivatives :math:`\delta_k, \delta_{k+1}`
    at its knots, and whether the value lies outside :math:`[-B, B]`."""

    out_of_bounds: tf.Tensor
    x_k: tf.Tensor
    y_k: tf.Tensor
    w_k: tf.Tensor
    h_k: tf.Tensor
    s_k: tf.Tensor
    d_k: tf.Tensor
    d_kp1: tf.Tensor


def bin_of(spline: tfb.RationalQuadraticSpline, y: tf.Tensor) -> Bin:
    r"""The bin :math:`k` with :math:`y_k \le y < y_{k+1}` of each ``y``, and its parameters.

    With knots :math:`y_0 < \dots < y_K` (cumulative heights from :math:`-B`), the one-hot
    vector of the bin is :math:`e_k = [y \ge y_k] - [y \ge y_{k+1}]` with
    :math:`[y \ge y_0] = 1` and :math:`[y \ge y_K] = 0`. The bin's knots and the derivatives
    there are sums over the bins, e.g. :math:`x_k = \sum_j e_j x_j`, and its width and height
    are differences of knots, :math:`w_k = x_{k+1} - x_k`, as in TFP's forward map. A value
    outside :math:`[-B, B]` is flagged, and gets the first or the last bin.

    Parameters
    ----------
    spline : tfb.RationalQuadraticSpline
        Parameters of shape ``(..., n, K)`` (slopes ``(..., n, K - 1)``), broadcasting against
        ``y``.
    y : tf.Tensor
        Values, shape ``(..., n)``.

    Returns
    -------
    Bin
        Each field of the shape of ``y``.
    """
    range_min = tf.cast(spline.range_min, y.dtype)

    def knots(sizes: tf.Tensor) -> tf.Tensor:  # the K + 1 knots -B, -B + s_1, ..., B
        total = tf.cumsum(sizes, axis=-1)
        return range_min + tf.concat([tf.zeros_like(total[..., :1]), total], axis=-1)

    widths = tf.convert_to_tensor(spline.bin_widths)
    heights = tf.convert_to_tensor(spline.bin_heights)
    x_knots, y_knots = knots(widths), knots(heights)
    out_of_bounds = (y <= y_knots[..., 0]) | (y >= y_knots[..., -1])
    above = tf.cast(y[..., tf.newaxis] >= y_knots[..., 1:-1], y.dtype)  # [y >= y_k], 0 < k < K
    one = tf.ones_like(above[..., :1])
    in_bin = tf.concat([one, above], axis=-1) - tf.concat([above, 0.0 * one], axis=-1)

    def pick(values: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(in_bin * values, axis=-1)

    slopes = tf.convert_to_tensor(spline.knot_slopes)
    slopes = tf.pad(slopes, [[0, 0]] * (slopes.shape.rank - 1) + [[1, 1]], constant_values=1.0)
    x_k, y_k = pick(x_knots[..., :-1]), pick(y_knots[..., :-1])
    # widths and heights as differences of knots, as TFP's forward map computes them
    w_k, h_k = pick(x_knots[..., 1:]) - x_k, pick(y_knots[..., 1:]) - y_k
    return Bin(out_of_bounds=out_of_bounds, x_k=x_k, y_k=y_k, w_k=w_k, h_k=h_k, s_k=h_k / w_k,
               d_k=pick(slopes[..., :-1]), d_kp1=pick(slopes[..., 1:]))


def spline_inverse_and_log_det(spline: tfb.RationalQuadraticSpline, y: tf.Tensor
                               ) -> tuple[tf.Tensor, tf.Tensor]:
    r""":math:`x = g^{-1}(y)` and :math:`\log|dx/dy|` per element, from one bin search.

    Parameters
    ----------
    spline : tfb.RationalQuadraticSpline
        A spline whose parameters broadcast against ``y``.
    y : tf.Tensor
        Values, shape ``(..., n)``.

    Returns
    -------
    x, log_det : tf.Tensor
        Both of the shape of ``y``.

    Examples
    --------
    >>> spline = tfb.RationalQuadraticSpline([[1.0, 3.0]], [[3.0, 1.0]], [[0.5]], range_min=-2)
    >>> y = tf.constant([[-3.0], [-1.5], [0.5], [1.9]])
    >>> x, log_det = spline_inverse_and_log_det(spline, y)
    >>> bool(tf.reduce_max(tf.abs(x - spline.inverse(y))) < 1e-6)
    True
    >>> expected = spline.inverse_log_det_jacobian(y, event_ndims=0)
    >>> bool(tf.reduce_max(tf.abs(log_det - expected)) < 1e-5)
    True
    """
    d = bin_of(spline, y)
    zero = tf.zeros([], dtype=y.dtype)
    rel_y = tf.where(d.out_of_bounds, zero, y - d.y_k)
    slopes = d.d_kp1 + d.d_k - 2.0 * d.s_k
    term = rel_y * slopes
    a = d.h_k * (d.s_k - d.d_k) + term
    b = d.h_k * d.d_k - term
    c = -d.s_k * rel_y
    xi = tf.where(tf.equal(rel_y, 0.0), zero, (2.0 * c) / (-b - tf.sqrt(b**2 - 4.0 * a * c)))
    x = tf.where(d.out_of_bounds, y, xi * d.w_k + d.x_k)
    xi = tf.where(d.out_of_bounds, tf.constant(0.5, y.dtype), xi)
    between = xi * (1.0 - xi)
    forward_log_det = (2.0 * tf.math.log(d.s_k)
                       + tf.math.log(d.d_kp1 * xi**2 + 2.0 * d.s_k * between
                                     + d.d_k * (1.0 - xi) ** 2)
                       - 2.0 * tf.math.log(slopes * between + d.s_k))
    log_det = tf.where(d.out_of_bounds, zero, -forward_log_det)
    return x, log_det


def spline_layer_inverse(bijector: tfb.Bijector, y: tf.Tensor,
                         conditional_input: tf.Tensor | None = None
                         ) -> tuple[tf.Tensor, tf.Tensor] | None:
    r"""Inverse and :math:`\log|\det J_{f^{-1}}(y)|` of one :func:`nfbook.nsf` layer, from one
    network pass; ``None`` for any other bijector.

    Parameters
    ----------
    bijector : tfb.Bijector
        A layer of a flow.
    y : tf.Tensor
        Data side values, shape ``(..., D)``.
    conditional_input : tf.Tensor, optional
        The context of a conditional layer, shape ``(..., k)``.

    Returns
    -------
    (x, log_det) or None
        Base side values, shape ``(..., D)``, and the log-determinant, shape ``(...)``.

    Examples
    --------
    >>> import nfbook
    >>> layer = nfbook.nsf(3, hidden_units=(8,), num_layers=1).bijectors[-1]
    >>> x, log_det = spline_layer_inverse(layer, tf.ones([4, 3]))
    >>> x.shape, log_det.shape
    (TensorShape([4, 3]), TensorShape([4]))
    """
    function = private_api.bijector_fn(bijector)
    if not isinstance(function, SplineFunction):
        return None
    kwargs = {} if conditional_input is None else {"conditional_input": conditional_input}
    if isinstance(bijector, tfb.RealNVP):
        masked = private_api.num_masked(bijector)
        if not isinstance(masked, int) or masked <= 0:
            return None
        y0, y1 = y[..., :masked], y[..., masked:]
        spline = function(y0, function.network.output_units, **kwargs)
        x1, log_det = spline_inverse_and_log_det(spline, y1)
        return tf.concat([y0, x1], axis=-1), tf.reduce_sum(log_det, axis=-1)
    if (isinstance(bijector, tfb.MaskedAutoregressiveFlow)
            and private_api.event_ndims(bijector) == 1):
        # x_i depends on y_{<i} only: the MADE of y gives every coordinate's spline at once
        x, log_det = spline_inverse_and_log_det(function(y, **kwargs), y)
        return x, tf.reduce_sum(log_det, axis=-1)
    return None
