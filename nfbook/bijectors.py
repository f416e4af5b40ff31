"""Builders that return ordinary TFP bijectors: affine maps, permutations, MAF and IAF; and,
from :mod:`nfbook.coupling`, RealNVP and NICE."""

from __future__ import annotations

__all__ = [
    "affine",
    "attach_flow_spec",
    "attach_spec",
    "batch_norm_mode",
    "iaf",
    "maf",
    "nice",
    "permutations_of",
    "permute",
    "realnvp",
    "spec_of",
]

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow_probability as tfp

from nfbook.checks import check_permutation
from nfbook.coupling import nice, realnvp
from nfbook.networks import AutoregressiveAffine, check_context_dim
from nfbook.permutations import PermutationSpec
from nfbook.specs import attach_flow_spec, attach_spec, permutations_of, spec_of
from nfbook.stacking import batch_norm_mode, check_flow_args, stack

tfb = tfp.bijectors


def affine(shift: Any, scale: Any) -> tfb.Chain:
    r"""Elementwise affine bijector :math:`x = s \odot z + m`, as ``Shift(m)(Scale(s))``.

    Forward :math:`x = s \odot z + m`; inverse :math:`z = (x - m) / s`;
    :math:`\log|\det J| = \sum_i \log|s_i|`, the same for every :math:`z`.

    Parameters
    ----------
    shift : array-like
        The shift :math:`m`, broadcast against the event.
    scale : array-like
        The scale :math:`s`, non-zero, broadcast against the event.

    Returns
    -------
    tfb.Chain
        ``tfb.Chain([tfb.Shift(shift), tfb.Scale(scale)])``.

    Raises
    ------
    ValueError
        If a value is not finite, a scale is zero, or the shapes do not broadcast.

    Examples
    --------
    >>> b = affine([0.5, 0.25], [1.0, 0.5])
    >>> b.forward([[2.0, 2.0]]).numpy().tolist()
    [[2.5, 1.25]]
    """
    shift_array = np.asarray(shift, dtype=np.float32)
    scale_array = np.asarray(scale, dtype=np.float32)
    if not (np.isfinite(shift_array).all() and np.isfinite(scale_array).all()):
        raise ValueError(f"`shift` and `scale` must be finite, got shift={shift!r}, "
                         f"scale={scale!r}.")
    if np.any(scale_array == 0):
        raise ValueError(f"`scale` must be non-zero everywhere (else the map is not invertible), "
                         f"got {scale!r}.")
    try:
        np.broadcast_shapes(shift_array.shape, scale_array.shape)
    except ValueError as error:
        raise ValueError(f"`shift` of shape {shift_array.shape} and `scale` of shape "
                         f"{scale_array.shape} do not broadcast.") from error
    chain = tfb.Chain([tfb.Shift(shift_array), tfb.Scale(scale_array)], name="affine")
    return attach_spec(chain, "affine", shift=shift_array.tolist(), scale=scale_array.tolist())


def permute(permutation: Sequence[int], name: str = "permute") -> tfb.Permute:
    """A :class:`tfb.Permute` after checking that ``permutation`` is a valid one.

    Parameters
    ----------
    permutation : sequence of int
        A rearrangement of ``0, ..., D - 1``: output ``i`` is input ``permutation[i]``.
    name : str
        Name of the bijector.

    Returns
    -------
    tfb.Permute

    Raises
    ------
    ValueError
        If ``permutation`` repeats or misses an index.

    Examples
    --------
    >>> permute([2, 0, 1]).forward([[10.0, 11.0, 12.0]]).numpy().tolist()
    [[12.0, 10.0, 11.0]]
    """
    perm = check_permutation(permutation, len(permutation))
    return tfb.Permute(perm, name=name)


def _maf_layer(ndim: int, hidden_units: tuple[int, ...], activation: str,
               log_scale_bound: float, context_dim: int | None, index: int
               ) -> tfb.MaskedAutoregressiveFlow:
    network = AutoregressiveAffine(ndim, hidden_units, activation, log_scale_bound,
                                   context_dim=context_dim, name=f"made_{index}")
    return tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=network, name=f"maf_{index}")


def maf(
    ndim: int,
    hidden_units: Sequence[int] = (128, 128),
    num_layers: int = 3,
    activation: str = "relu",
    batch_norm: bool = False,
    *,
    log_scale_bound: float = 3.0,
    permutation: PermutationSpec = None,
    seed: int = 0,
    context_dim: int | None = None,
) -> tfb.Chain:
    r"""Masked autoregressive flow: affine MAF layers on MADE networks, permuted in between.

    Each layer maps a base value :math:`u` to data :math:`x` by
    :math:`x_i = u_i \exp(s_i(x_{<i})) + \mu_i(x_{<i})`, so the inverse (density direction)
    :math:`u_i = (x_i - \mu_i(x_{<i})) \exp(-s_i(x_{<i}))` takes one network pass, while
    sampling takes :math:`D` sequential passes. The Jacobian is triangular and
    :math:`\log|\det \partial x / \partial u| = \sum_i s_i(x_{<i})`. The networks are
    :class:`~nfbook.networks.AutoregressiveAffine` MADEs, whose log-scales are soft-clamped to
    :math:`(-c, c)` with :math:`c` = ``log_scale_bound`` and whose weights and biases start
    from :func:`~nfbook.networks.fan_in_uniform` draws (see there for why).

    Parameters
    ----------
    ndim : int
        Event size :math:`D \geq 1`.
    hidden_units : sequence of int
        Hidden widths of each MADE network.
    num_layers : int
        Number of MAF layers.
    activation : str
        Hidden activation of the MADE networks.
    batch_norm : bool
        Add a :class:`tfb.BatchNormalization` after each layer (data side). It is returned in
        inference mode (running statistics); :class:`nfbook.FlowModel` uses batch statistics
        while training.
    log_scale_bound : float
        Bound :math:`c` of the log-scales.
    permutation : None, "random", sequence of int, or sequence of sequences of int
        Permutations between layers. ``None``: the default, the reversal between every two
        layers, so that each layer transforms every coordinate, consecutive layers use
        opposite orders, and from two layers on every output depends on every base coordinate
        (:mod:`nfbook.permutations`). ``"random"``: a permutation per gap drawn from ``seed``
        (the default of nfbook 0.1.0). One permutation: the same between every two layers.
        ``num_layers - 1`` permutations: one per gap, base side first.
    seed : int
        Seed of ``permutation="random"``.
    context_dim : int, optional
        Width :math:`k` of a context :math:`c`: every MADE also takes :math:`c`
        (:math:`\mu_i(x_{<i}, c)`, :math:`s_i(x_{<i}, c)`), which makes the flow a
        conditional density :math:`p(x \mid c)` for :class:`nfbook.FlowModel` (see
        :mod:`nfbook.conditional`). ``None``: unconditional.

    Returns
    -------
    tfb.Chain
        Flow layers from base (applied first when sampling) to data.

    Raises
    ------
    ValueError, TypeError
        On a bad ``ndim``, ``num_layers``, ``hidden_units``, ``permutation`` or
        ``context_dim``.

    References
    ----------
    Papamakarios, Pavlakou and Murray (2017), Masked Autoregressive Flow for Density
    Estimation, https://arxiv.org/abs/1705.07057. Germain et al. (2015), MADE,
    https://arxiv.org/abs/1502.03509.

    Examples
    --------
    >>> flow = maf(2, hidden_units=(16,), num_layers=2)
    >>> [b.name for b in flow.bijectors]
    ['maf_1', 'permute_1', 'maf_0']
    >>> import numpy as np, tensorflow as tf
    >>> z = tf.random.normal([4, 2])
    >>> bool(np.allclose(flow.inverse(tf.identity(flow.forward(z))), z, atol=1e-5))
    True
    """
    ndim, num_layers, hidden_units, log_scale_bound, seed = check_flow_args(
        ndim, num_layers, hidden_units, log_scale_bound, seed)
    context_dim = check_context_dim(context_dim)
    chain = stack(
        ndim, num_layers,
        lambda i: _maf_layer(ndim, hidden_units, activation, log_scale_bound, context_dim, i),
        batch_norm, permutation, seed, name="maf",
    )
    return attach_flow_spec(
        chain, "maf", ndim=ndim, hidden_units=list(hidden_units), num_layers=num_layers,
        activation=activation, batch_norm=bool(batch_norm), log_scale_bound=log_scale_bound,
        seed=seed, context_dim=context_dim,
    )


def iaf(
    ndim: int,
    hidden_units: Sequence[int] = (128, 128),
    num_layers: int = 3,
    activation: str = "relu",
    batch_norm: bool = False,
    *,
    log_scale_bound: float = 3.0,
    permutation: PermutationSpec = None,
    seed: int = 0,
    context_dim: int | None = None,
) -> tfb.Chain:
    r"""Inverse autoregressive flow: each layer is ``tfb.Invert`` of a MAF layer.

    A layer maps base :math:`u` to data :math:`x` by
    :math:`x_i = (u_i - \mu_i(u_{<i})) \exp(-s_i(u_{<i}))`: sampling (and the
    log-determinant :math:`-\sum_i s_i` of a sample) takes one network pass, while the density
    of an arbitrary :math:`x` needs :math:`D` sequential passes. Same arguments as :func:`maf`.

    Parameters
    ----------
    ndim, hidden_units, num_layers, activation, batch_norm, log_scale_bound, permutation, seed
        As in :func:`maf`.
    context_dim : int, optional
        As in :func:`maf`: every MADE also takes the context.

    Returns
    -------
    tfb.Chain

    References
    ----------
    Kingma et al. (2016), Improved Variational Inference with Inverse Autoregressive Flow,
    https://arxiv.org/abs/1606.04934.

    Examples
    --------
    >>> import tensorflow as tf
    >>> flow = iaf(3, hidden_units=(16,), num_layers=2)
    >>> flow.forward(tf.zeros([4, 3])).shape
    TensorShape([4, 3])
    """
    ndim, num_layers, hidden_units, log_scale_bound, seed = check_flow_args(
        ndim, num_layers, hidden_units, log_scale_bound, seed)
    context_dim = check_context_dim(context_dim)

    def make_layer(i: int) -> tfb.Bijector:
        return tfb.Invert(_maf_layer(ndim, hidden_units, activation, log_scale_bound,
                                     context_dim, i), name=f"iaf_{i}")

    chain = stack(ndim, num_layers, make_layer, batch_norm, permutation, seed, name="iaf")
    return attach_flow_spec(
        chain, "iaf", ndim=ndim, hidden_units=list(hidden_units), num_layers=num_layers,
        activation=activation, batch_norm=bool(batch_norm), log_scale_bound=log_scale_bound,
        seed=seed, context_dim=context_dim,
    )
