"""Coupling flows: RealNVP (affine couplings) and NICE (additive couplings)."""

from __future__ import annotations

__all__ = ["nice", "realnvp"]

from collections.abc import Sequence

import tensorflow as tf
import tensorflow_probability as tfp

from nfbook.networks import CouplingAffine, check_context_dim
from nfbook.permutations import PermutationSpec
from nfbook.specs import attach_flow_spec
from nfbook.stacking import check_flow_args, stack

tfb = tfp.bijectors


def _coupling(
    builder: str,
    ndim: int,
    hidden_units: Sequence[int],
    num_layers: int,
    activation: str,
    batch_norm: bool,
    log_scale_bound: float,
    permutation: PermutationSpec,
    seed: int,
    context_dim: int | None,
) -> tfb.Chain:
    ndim, num_layers, hidden_units, log_scale_bound, seed = check_flow_args(
        ndim, num_layers, hidden_units, log_scale_bound, seed)
    context_dim = check_context_dim(context_dim)
    if ndim < 2:
        raise ValueError(f"`ndim` must be >= 2 for a coupling flow (it splits the dimensions "
                         f"in two halves), got {ndim}.")
    num_masked = ndim // 2
    shift_only = builder == "nice"

    def make_layer(i: int) -> tfb.Bijector:
        network = CouplingAffine(ndim - num_masked, hidden_units, activation,
                                 shift_only=shift_only, log_scale_bound=log_scale_bound,
                                 context_dim=context_dim, name=f"coupling_net_{i}")
        return tfb.RealNVP(num_masked=num_masked, shift_and_log_scale_fn=network,
                           is_constant_jacobian=shift_only, name=f"{builder}_{i}")

    chain = stack(ndim, num_layers, make_layer, batch_norm, permutation, seed, name=builder)
    if shift_only:
        # NICE's final diagonal scaling (Dinh et al. 2015, sec. 3.3): the only layer that
        # changes volume.
        log_scale = tf.Variable(tf.zeros([ndim]), name="nice_log_scale")
        chain = tfb.Chain([tfb.Scale(log_scale=log_scale, name="scale"), *chain.bijectors],
                          name=builder)
    return attach_flow_spec(
        chain, builder, ndim=ndim, hidden_units=list(hidden_units), num_layers=num_layers,
        activation=activation, batch_norm=bool(batch_norm), log_scale_bound=log_scale_bound,
        seed=seed, context_dim=context_dim,
    )


def realnvp(
    ndim: int,
    hidden_units: Sequence[int] = (128, 128),
    num_layers: int = 4,
    activation: str = "relu",
    batch_norm: bool = False,
    *,
    log_scale_bound: float = 3.0,
    permutation: PermutationSpec = None,
    seed: int = 0,
    context_dim: int | None = None,
) -> tfb.Chain:
    r"""RealNVP: affine coupling layers, permuted in between.

    With :math:`d = \lfloor D/2 \rfloor`, a layer keeps :math:`x_{1:d} = u_{1:d}` and sets
    :math:`x_{d+1:D} = u_{d+1:D} \odot \exp(s(u_{1:d})) + \mu(u_{1:d})`; its inverse needs no
    inverse of the network, :math:`u_{d+1:D} = (x_{d+1:D} - \mu(x_{1:d})) \exp(-s(x_{1:d}))`,
    and :math:`\log|\det J| = \sum_j s_j(u_{1:d})`. Sampling and density are both one pass.

    Parameters
    ----------
    ndim : int
        Event size :math:`D \geq 2`.
    hidden_units, num_layers, activation, batch_norm, log_scale_bound, seed
        As in :func:`maf`; the networks are :class:`nfbook.networks.CouplingAffine`.
    context_dim : int, optional
        Width :math:`k` of a context :math:`c`, which every coupling network takes beside
        the kept half, :math:`\mu(u_{1:d}, c)` and :math:`s(u_{1:d}, c)`: a conditional
        flow (:mod:`nfbook.conditional`). ``None``: unconditional.
    permutation : None, "random", sequence of int, or sequence of sequences of int
        As in :func:`maf`, but the default is the rotation :math:`p \mapsto (p + d) \bmod D`
        between every two layers: every coordinate a layer keeps is transformed by the next,
        so each is transformed in at least one of any two consecutive layers, and from three
        layers on (even :math:`D`; four for odd :math:`D`, as by default) every output
        depends on every base coordinate (:mod:`nfbook.permutations`).

    Returns
    -------
    tfb.Chain

    References
    ----------
    Dinh, Sohl-Dickstein and Bengio (2017), Density estimation using Real NVP,
    https://arxiv.org/abs/1605.08803.

    Examples
    --------
    >>> import numpy as np
    >>> flow = realnvp(2, hidden_units=(8,), num_layers=2)
    >>> bool(np.allclose(flow.forward(tf.ones([3, 2])), 1.0))  # identity before training
    True
    """
    return _coupling("realnvp", ndim, hidden_units, num_layers, activation, batch_norm,
                     log_scale_bound, permutation, seed, context_dim)


def nice(
    ndim: int,
    hidden_units: Sequence[int] = (128, 128),
    num_layers: int = 4,
    activation: str = "relu",
    batch_norm: bool = False,
    *,
    log_scale_bound: float = 3.0,
    permutation: PermutationSpec = None,
    seed: int = 0,
    context_dim: int | None = None,
) -> tfb.Chain:
    r"""NICE: additive (shift-only) coupling layers, then a trainable diagonal scale.

    A coupling layer sets :math:`x_{d+1:D} = u_{d+1:D} + \mu(u_{1:d})` and has
    :math:`\log|\det J| = 0`; the last bijector towards the data,
    :math:`x = \exp(\sigma) \odot y`, carries all of the volume change,
    :math:`\sum_i \sigma_i`.

    The shift networks' output layers start random, not at zero as in :func:`realnvp`: at
    zero, data whose conditional :math:`p(x_{d+1:D} \mid x_{1:d})` is symmetric about 0
    (concentric rings) give every weight of the network a zero gradient, and only the final
    scale would learn (:class:`nfbook.networks.CouplingAffine`). The untrained flow is a
    random volume-preserving shear of the base.

    Parameters
    ----------
    ndim, hidden_units, num_layers, activation, batch_norm, permutation, seed, context_dim
        As in :func:`realnvp`.
    log_scale_bound : float
        Not used by the additive layers, but checked like the other builders' (a positive,
        finite number), so that every builder accepts the same arguments.

    Returns
    -------
    tfb.Chain

    References
    ----------
    Dinh, Krueger and Bengio (2015), NICE: Non-linear Independent Components Estimation,
    https://arxiv.org/abs/1410.8516.

    Examples
    --------
    >>> flow = nice(4, hidden_units=(8,), num_layers=2)
    >>> log_det = flow.forward_log_det_jacobian(tf.ones([3, 4]), event_ndims=1)
    >>> float(tf.reduce_max(tf.abs(log_det)))  # volume-preserving until trained
    0.0
    """
    return _coupling("nice", ndim, hidden_units, num_layers, activation, batch_norm,
                     log_scale_bound, permutation, seed, context_dim)
