r"""One-pass log-density of a flow: each network evaluated once per layer.

The flow equation is :math:`\log p(x) = \log p_z(z) + \log|\det J_{f^{-1}}(x)|` with
:math:`z = f^{-1}(x)`. TFP's ``TransformedDistribution.log_prob`` computes it with two separate
calls, ``bijector.inverse(x)`` and then ``bijector.forward_log_det_jacobian(z)`` at the base
point (equal to minus the inverse log-determinant at :math:`x`), and a
``MaskedAutoregressiveFlow`` or ``RealNVP`` layer runs its network in each. For the affine layers
nfbook builds, :func:`inverse_and_log_det` takes both from one network pass, which halves the
network work of a training step and about halves the graph that TensorFlow traces. Two more
shortcuts keep that graph small: a ``tfb.Permute`` on the last axis is a gather whose gradient is
the inverse gather (:func:`permute_last_axis`), and the standard normal base has a closed-form
log-density (:func:`standard_normal_log_prob`). Any other bijector goes through its own
``inverse`` and ``inverse_log_det_jacobian``, so for a correct bijector the result is TFP's
density, up to float rounding. A conditional flow's context reaches every layer that reads one
(:func:`nfbook.conditional.bijector_kwargs`).
"""

from __future__ import annotations

__all__ = ["inverse_and_log_det", "log_prob", "permute_last_axis", "standard_normal_log_prob"]

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from nfbook import private_api
from nfbook.conditional import bijector_kwargs
from nfbook.networks import AutoregressiveAffine, CouplingAffine
from nfbook.spline_density import spline_layer_inverse

tfb = tfp.bijectors
tfd = tfp.distributions


def _zero_log_det(y: tf.Tensor) -> tf.Tensor:
    """The log-determinant of a volume-preserving map: 0 for each row of ``y``."""
    return tf.zeros(tf.shape(y)[:-1], dtype=y.dtype)


def permute_last_axis(y: tf.Tensor, indices: np.ndarray) -> tf.Tensor:
    r"""``tf.gather(y, indices, axis=-1)`` for a permutation ``indices``, with a cheap gradient.

    For :math:`x_j = y_{\pi(j)}` the gradient is again a permutation,
    :math:`\partial L / \partial y_i = \partial L / \partial x_{\pi^{-1}(i)}`: one gather,
    where TensorFlow's general gather gradient (which must allow repeated indices) adds
    segment sums, transposes and shape arithmetic to every training step.

    Parameters
    ----------
    y : tf.Tensor
        Values, shape ``(..., D)``.
    indices : np.ndarray
        A permutation of ``0, ..., D-1``.

    Returns
    -------
    tf.Tensor
        ``y`` with its last axis permuted, shape ``(..., D)``.

    Examples
    --------
    >>> y = tf.constant([[1.0, 2.0, 3.0]])
    >>> with tf.GradientTape() as tape:
    ...     tape.watch(y)
    ...     x = permute_last_axis(y, np.array([2, 0, 1]))
    ...     loss = tf.reduce_sum(x * [10.0, 20.0, 30.0])
    >>> x.numpy().tolist(), tape.gradient(loss, y).numpy().tolist()
    ([[3.0, 1.0, 2.0]], [[20.0, 30.0, 10.0]])
    """
    inverse = np.argsort(indices)

    @tf.custom_gradient
    def gather(values: tf.Tensor) -> tuple[tf.Tensor, Callable[[tf.Tensor], tf.Tensor]]:
        def gradient(upstream: tf.Tensor) -> tf.Tensor:
            return permute_last_axis(upstream, inverse)  # differentiable again

        return tf.gather(values, indices, axis=-1), gradient

    return gather(y)


def standard_normal_log_prob(z: tf.Tensor) -> tf.Tensor:
    r"""Log-density of the standard normal :math:`\mathcal N(0, I_D)` for each row of ``z``,

    .. math:: \log p_z(z) = -\tfrac12 \lVert z \rVert^2 - \tfrac D2 \log 2\pi,

    the same number as ``tfd.MultivariateNormalDiag(loc=tf.zeros([D])).log_prob(z)`` in a few
    graph operations.

    Examples
    --------
    >>> round(float(standard_normal_log_prob(tf.zeros([1, 2]))[0]), 4)  # -log(2 pi)
    -1.8379
    """
    ndim = int(z.shape[-1])
    return -0.5 * tf.reduce_sum(tf.square(z), axis=-1) - 0.5 * ndim * math.log(2.0 * math.pi)


def _static_permutation(bijector: tfb.Permute) -> np.ndarray | None:
    """The indices of a ``tfb.Permute`` on the last axis, if known before running."""
    indices = tf.get_static_value(bijector.permutation)
    axis = tf.get_static_value(bijector.axis)
    if indices is None or axis is None or int(axis) != -1 or np.ndim(indices) != 1:
        return None
    return np.asarray(indices)


def _check_width(bijector: tfb.Bijector, y: tf.Tensor, width: int) -> None:
    """Raise if ``y``'s last axis, when known, is not the ``width`` that ``bijector`` acts on
    (slicing and gathering would otherwise drop or broadcast coordinates without an error)."""
    if y.shape.rank is not None and y.shape[-1] is not None and y.shape[-1] != width:
        raise ValueError(f"The bijector {bijector.name!r} acts on {width} coordinates, but the "
                         f"data has {y.shape[-1]} on its last axis (shape {y.shape}).")


def _affine_inverse(y: tf.Tensor, shift: tf.Tensor, log_scale: tf.Tensor | None
                    ) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Invert :math:`y = x e^{s} + \\mu`: return :math:`x = (y - \\mu) e^{-s}` and
    :math:`-\\sum_i s_i` (``None``, meaning 0, without a scale)."""
    if log_scale is None:  # additive coupling (NICE): volume preserving
        return y - shift, None
    return (y - shift) * tf.exp(-log_scale), -tf.reduce_sum(log_scale, axis=-1)


def _maf_inverse(bijector: tfb.MaskedAutoregressiveFlow, y: tf.Tensor, kwargs: dict[str, Any]
                 ) -> tuple[tf.Tensor, tf.Tensor | None] | None:
    network = private_api.shift_and_log_scale_fn(bijector)
    if not isinstance(network, AutoregressiveAffine) or private_api.event_ndims(bijector) != 1:
        return None
    _check_width(bijector, y, network.ndim)
    shift, log_scale = network(y, **kwargs)
    return _affine_inverse(y, shift, log_scale)


def _coupling_inverse(bijector: tfb.RealNVP, y: tf.Tensor, kwargs: dict[str, Any]
                      ) -> tuple[tf.Tensor, tf.Tensor | None] | None:
    network = private_api.shift_and_log_scale_fn(bijector)
    masked = private_api.num_masked(bijector)
    if not isinstance(network, CouplingAffine) or not isinstance(masked, int) or masked <= 0:
        return None
    _check_width(bijector, y, masked + network.output_units)
    y0, y1 = y[..., :masked], y[..., masked:]
    shift, log_scale = network(y0, network.output_units, **kwargs)
    x1, log_det = _affine_inverse(y1, shift, log_scale)
    return tf.concat([y0, x1], axis=-1), log_det


@tf.autograph.experimental.do_not_convert  # plain Python: converting only costs time
def inverse_and_log_det(bijector: tfb.Bijector, y: tf.Tensor, context: Any = None
                        ) -> tuple[tf.Tensor, tf.Tensor]:
    r"""Map data to the base in one pass: :math:`z = f^{-1}(y)` and
    :math:`\log|\det J_{f^{-1}}(y)|` per row, for vector events.

    A ``tfb.Chain`` :math:`f = f_1 \circ \dots \circ f_K` is walked from the data side,
    :math:`y_{k} = f_k^{-1}(y_{k-1})`, adding up
    :math:`\log|\det J_{f^{-1}}(y)| = \sum_k \log|\det J_{f_k^{-1}}(y_{k-1})|`. An affine
    autoregressive or coupling layer :math:`y = x e^{s} + \mu` built by nfbook contributes
    :math:`x = (y - \mu) e^{-s}` and :math:`-\sum_i s_i` from a single network call;
    ``tfb.Permute`` contributes 0; any other bijector uses TFP's ``inverse`` and
    ``inverse_log_det_jacobian`` (``event_ndims=1``).

    Parameters
    ----------
    bijector : tfb.Bijector
        The flow, base to data.
    y : tf.Tensor
        Data, shape ``(..., D)``.
    context : tf.Tensor, optional
        A conditional flow's context, shape ``(..., k)``, handed to every layer that reads
        one; ``None`` for an unconditional flow.

    Returns
    -------
    z : tf.Tensor
        Base points, shape ``(..., D)``.
    log_det : tf.Tensor
        :math:`\log|\det J_{f^{-1}}(y)|`, shape ``(...)``.

    Examples
    --------
    >>> import nfbook
    >>> flow = nfbook.maf(2, hidden_units=(8,), num_layers=2)
    >>> y = tf.random.normal([5, 2])
    >>> z, log_det = inverse_and_log_det(flow, y)
    >>> bool(tf.reduce_max(tf.abs(log_det - flow.inverse_log_det_jacobian(y, 1))) < 1e-5)
    True
    """
    z, log_det = _inverse_and_terms(bijector, y, context)
    zeros = _zero_log_det(y)  # the shape (...) even where every term is a scalar or 0
    return z, zeros if log_det is None else log_det + zeros


def _inverse_and_terms(bijector: tfb.Bijector, y: tf.Tensor, context: Any
                       ) -> tuple[tf.Tensor, tf.Tensor | None]:
    """:func:`inverse_and_log_det`, with ``None`` for a log-determinant known to be 0
    (permutations, additive couplings): adding up zeros costs graph operations, forward and in
    the gradient, that TensorFlow traces before the first training step."""
    if isinstance(bijector, private_api.Chain):
        total = None
        for member in bijector.bijectors:  # a Chain inverts its first bijector first
            y, term = _inverse_and_terms(member, y, context)
            if term is not None:  # a TFP term may be a scalar: add, do not add_n
                total = term if total is None else total + term
        return y, total
    if isinstance(bijector, tfb.Permute):
        indices = _static_permutation(bijector)
        if indices is None:
            return bijector.inverse(y), None
        _check_width(bijector, y, len(indices))
        return permute_last_axis(y, np.argsort(indices)), None
    kwargs = {} if context is None else bijector_kwargs(bijector, context)
    fused = spline_layer_inverse(bijector, y, **kwargs)  # None unless an nfbook.nsf layer
    if fused is not None:
        return fused
    if isinstance(bijector, tfb.MaskedAutoregressiveFlow):
        fused = _maf_inverse(bijector, y, kwargs)
    elif isinstance(bijector, tfb.RealNVP):
        fused = _coupling_inverse(bijector, y, kwargs)
    if fused is not None:
        return fused
    return (bijector.inverse(y, **kwargs),
            bijector.inverse_log_det_jacobian(y, event_ndims=1, **kwargs))


@tf.autograph.experimental.do_not_convert
def log_prob(base: tfd.Distribution | None, bijector: tfb.Bijector, x: tf.Tensor,
             context: Any = None) -> tf.Tensor:
    r""":math:`\log p(x) = \log p_z(f^{-1}(x)) + \log|\det J_{f^{-1}}(x)|`, in one pass.

    The same number as ``tfd.TransformedDistribution(base, bijector).log_prob(x)`` (up to
    float rounding), computed by :func:`inverse_and_log_det`.

    Parameters
    ----------
    base : tfd.Distribution or None
        Base distribution, event shape ``[D]``; ``None`` for the standard normal
        (:func:`standard_normal_log_prob`).
    bijector : tfb.Bijector
        The flow, base to data.
    x : tf.Tensor
        Data, shape ``(..., D)``.
    context : tf.Tensor, optional
        A conditional flow's context, as in :func:`inverse_and_log_det`.

    Returns
    -------
    tf.Tensor
        Log-density of each row (given its context), shape ``(...)``.
    """
    z, log_det = _inverse_and_terms(bijector, x, context)
    log_base = standard_normal_log_prob(z) if base is None else base.log_prob(z)
    return log_base if log_det is None else log_base + log_det
