r"""One-pass log-density of a flow: each network evaluated once per layer.

TFP computes :math:`\log p(x) = \log p_z(f^{-1}(x)) + \log|\det J_{f^{-1}}(x)|` through two
separate calls, ``bijector.inverse(x)`` and ``bijector.inverse_log_det_jacobian(x)``, and a
``MaskedAutoregressiveFlow`` or ``RealNVP`` layer runs its network in each. For the layers
nfbook builds, :func:`inverse_and_log_det` takes both from one network pass: half the network
work per training step, and about half the graph for TensorFlow to trace
(``benchmarks/training_speed.py``). Any other bijector goes through TFP's own two calls, so
the result is always the TFP density (``tests/test_density.py`` checks they agree).
"""

from __future__ import annotations

__all__ = ["inverse_and_log_det", "log_prob"]

import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.bijectors.chain import _Chain

from nfbook.networks import AutoregressiveAffine, CouplingAffine

tfb = tfp.bijectors
tfd = tfp.distributions


def _zero_log_det(y: tf.Tensor) -> tf.Tensor:
    """The log-determinant of a volume-preserving map: 0 for each row of ``y``."""
    return tf.zeros(tf.shape(y)[:-1], dtype=y.dtype)


def _affine_inverse(y: tf.Tensor, shift: tf.Tensor, log_scale: tf.Tensor | None
                    ) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Invert :math:`y = x e^{s} + \\mu`: return :math:`x = (y - \\mu) e^{-s}` and
    :math:`-\\sum_i s_i` (``None``, meaning 0, without a scale)."""
    if log_scale is None:  # additive coupling (NICE): volume preserving
        return y - shift, None
    return (y - shift) * tf.exp(-log_scale), -tf.reduce_sum(log_scale, axis=-1)


def _maf_inverse(bijector: tfb.MaskedAutoregressiveFlow, y: tf.Tensor
                 ) -> tuple[tf.Tensor, tf.Tensor | None] | None:
    network = getattr(bijector, "_shift_and_log_scale_fn", None)
    if not isinstance(network, AutoregressiveAffine) or getattr(bijector, "_event_ndims", 1) != 1:
        return None
    shift, log_scale = network(y)
    return _affine_inverse(y, shift, log_scale)


def _coupling_inverse(bijector: tfb.RealNVP, y: tf.Tensor
                      ) -> tuple[tf.Tensor, tf.Tensor | None] | None:
    network = getattr(bijector, "_shift_and_log_scale_fn", None)
    masked = getattr(bijector, "_num_masked", None)
    if not isinstance(network, CouplingAffine) or not isinstance(masked, int) or masked <= 0:
        return None
    y0, y1 = y[..., :masked], y[..., masked:]
    shift, log_scale = network(y0, network.output_units)
    x1, log_det = _affine_inverse(y1, shift, log_scale)
    return tf.concat([y0, x1], axis=-1), log_det


@tf.autograph.experimental.do_not_convert  # plain Python: converting only costs time
def inverse_and_log_det(bijector: tfb.Bijector, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
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
    z, log_det = _inverse_and_terms(bijector, y)
    zeros = _zero_log_det(y)  # the shape (...) even where every term is a scalar or 0
    return z, zeros if log_det is None else log_det + zeros


def _inverse_and_terms(bijector: tfb.Bijector, y: tf.Tensor
                       ) -> tuple[tf.Tensor, tf.Tensor | None]:
    """:func:`inverse_and_log_det`, with ``None`` for a log-determinant known to be 0
    (permutations, additive couplings): adding up zeros costs graph operations, forward and in
    the gradient, that TensorFlow traces before the first training step."""
    if isinstance(bijector, _Chain):
        total = None
        for member in bijector.bijectors:  # a Chain inverts its first bijector first
            y, term = _inverse_and_terms(member, y)
            if term is not None:  # a TFP term may be a scalar: add, do not add_n
                total = term if total is None else total + term
        return y, total
    if isinstance(bijector, tfb.Permute):
        return bijector.inverse(y), None
    fused = None
    if isinstance(bijector, tfb.MaskedAutoregressiveFlow):
        fused = _maf_inverse(bijector, y)
    elif isinstance(bijector, tfb.RealNVP):
        fused = _coupling_inverse(bijector, y)
    if fused is not None:
        return fused
    return bijector.inverse(y), bijector.inverse_log_det_jacobian(y, event_ndims=1)


@tf.autograph.experimental.do_not_convert
def log_prob(base: tfd.Distribution, bijector: tfb.Bijector, x: tf.Tensor) -> tf.Tensor:
    r""":math:`\log p(x) = \log p_z(f^{-1}(x)) + \log|\det J_{f^{-1}}(x)|`, in one pass.

    The same number as ``tfd.TransformedDistribution(base, bijector).log_prob(x)`` (up to
    float rounding), computed by :func:`inverse_and_log_det`.

    Parameters
    ----------
    base : tfd.Distribution
        Base distribution, event shape ``[D]``.
    bijector : tfb.Bijector
        The flow, base to data.
    x : tf.Tensor
        Data, shape ``(..., D)``.

    Returns
    -------
    tf.Tensor
        Log-density of each row, shape ``(...)``.
    """
    z, log_det = _inverse_and_terms(bijector, x)
    log_base = base.log_prob(z)
    return log_base if log_det is None else log_base + log_det
