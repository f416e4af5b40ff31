"""Builders that return ordinary TFP bijectors: affine, MAF, IAF, RealNVP and NICE flows."""

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
    "rebuild",
    "spec_of",
]

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras
from tensorflow_probability.python.bijectors.chain import _Chain
from tensorflow_probability.python.bijectors.invert import _Invert

from nfbook.checks import (
    check_hidden_units,
    check_permutation,
    check_positive_int,
    check_real,
)
from nfbook.networks import AutoregressiveAffine, CouplingAffine
from nfbook.permutations import PermutationSpec, legacy_permutations, resolve_permutations
from nfbook.specs import attach_flow_spec, attach_spec, permutations_of, spec_of

tfb = tfp.bijectors

_SCHEME_1_BUILDERS = ("maf", "iaf", "realnvp", "nice")  # builders of nfbook 0.1.0


def rebuild(spec: dict[str, Any]) -> tfb.Bijector:
    """Build a fresh bijector (new, untrained variables) from a :func:`spec_of` record.

    Parameters
    ----------
    spec : dict
        ``{"builder": name, "kwargs": {...}}``, with ``"permutation_scheme"`` for a stack
        recorded by :func:`attach_flow_spec`. A MAF, IAF, RealNVP or NICE record without it
        and without ``permutation`` is one of nfbook 0.1.0, whose default permutations were
        drawn from the seed: it is rebuilt with those (``permutation="random"``).

    Returns
    -------
    tfb.Bijector

    Raises
    ------
    ValueError
        If the builder name is unknown or the arguments are missing.

    Examples
    --------
    >>> b = rebuild(spec_of(realnvp(2, num_layers=2)))
    >>> len(b.bijectors)
    3
    """
    from nfbook.continuous import ffjord  # continuous.py imports this module
    from nfbook.splines import nsf  # so does splines.py

    builders: dict[str, Callable[..., tfb.Bijector]] = {
        "ffjord": ffjord,
        "nsf": nsf,
        "affine": affine,
        "maf": maf,
        "iaf": iaf,
        "realnvp": realnvp,
        "nice": nice,
    }
    name = spec.get("builder")
    if name not in builders:
        raise ValueError(f"Unknown builder {name!r} in the saved record; expected one of "
                         f"{sorted(builders)}.")
    kwargs = spec.get("kwargs")
    if not isinstance(kwargs, dict):
        raise ValueError(f"The saved record of builder {name!r} has no arguments (a dict under "
                         f"'kwargs'), got {kwargs!r}.")
    if (name in _SCHEME_1_BUILDERS and "permutation_scheme" not in spec
            and kwargs.get("permutation") is None):
        # A record of nfbook 0.1.0, whose default permutations were drawn from the seed.
        kwargs = {**kwargs, "permutation": "random"}
    return builders[name](**kwargs)


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


def _batch_norm() -> tfb.BatchNormalization:
    # Positive gamma as in TFP's default layer; momentum 0.9 so that the running
    # statistics settle within a few epochs of large batches.
    layer = keras.layers.BatchNormalization(
        momentum=0.9, gamma_constraint=lambda gamma: tf.nn.relu(gamma) + 1e-6
    )
    return tfb.BatchNormalization(batchnorm_layer=layer, training=False)


def _stack(
    ndim: int,
    num_layers: int,
    make_layer: Callable[[int], tfb.Bijector],
    batch_norm: bool,
    permutation: PermutationSpec,
    seed: int,
    name: str,
) -> tfb.Chain:
    """Chain ``num_layers`` flow layers, each optionally followed (towards the data) by a
    batch norm, with a permutation between consecutive layers: ``permutation`` as the
    builders take it (:func:`nfbook.permutations.resolve_permutations`; ``"random"`` draws
    scheme 1's from ``seed``). The default scheme is chosen by the layers' kind: coupling
    layers (:class:`tfb.RealNVP`) or autoregressive ones (anything else)."""
    layers = [make_layer(i) for i in range(num_layers)]
    if isinstance(permutation, str):
        if permutation != "random":
            raise ValueError(f"`permutation` must be None, 'random', a permutation or a list "
                             f"of them, got {permutation!r}.")
        perms = legacy_permutations(ndim, num_layers, seed)
    else:
        num_masked = layers[0]._num_masked if isinstance(layers[0], tfb.RealNVP) else None
        perms = resolve_permutations(permutation, ndim, num_layers, num_masked)
    base_to_data: list[tfb.Bijector] = []
    for i, layer in enumerate(layers):
        if i > 0 and perms:
            base_to_data.append(tfb.Permute(perms[i - 1], name=f"permute_{i}"))
        base_to_data.append(layer)
        if batch_norm:
            base_to_data.append(_batch_norm())
    # tfb.Chain applies its last bijector first when going forward (base to data).
    return tfb.Chain(list(reversed(base_to_data)), name=name)


def _check_flow_args(ndim: int, num_layers: int, hidden_units: Sequence[int],
                     log_scale_bound: float, seed: int) -> tuple:
    """The builders' common arguments, checked and as plain Python values (for the spec)."""
    return (
        check_positive_int("ndim", ndim),
        check_positive_int("num_layers", num_layers),
        check_hidden_units(hidden_units),
        check_real("log_scale_bound", log_scale_bound, positive=True),
        check_positive_int("seed", seed, minimum=0),
    )


def _maf_layer(ndim: int, hidden_units: tuple[int, ...], activation: str,
               log_scale_bound: float, index: int) -> tfb.MaskedAutoregressiveFlow:
    network = AutoregressiveAffine(ndim, hidden_units, activation, log_scale_bound,
                                   name=f"made_{index}")
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

    Returns
    -------
    tfb.Chain
        Flow layers from base (applied first when sampling) to data.

    Raises
    ------
    ValueError, TypeError
        On a bad ``ndim``, ``num_layers``, ``hidden_units`` or ``permutation``.

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
    >>> z = tf.random.normal([4, 2])
    >>> bool(np.allclose(flow.inverse(tf.identity(flow.forward(z))), z, atol=1e-5))
    True
    """
    ndim, num_layers, hidden_units, log_scale_bound, seed = _check_flow_args(
        ndim, num_layers, hidden_units, log_scale_bound, seed)
    chain = _stack(
        ndim, num_layers,
        lambda i: _maf_layer(ndim, hidden_units, activation, log_scale_bound, i),
        batch_norm, permutation, seed, name="maf",
    )
    return attach_flow_spec(
        chain, "maf", ndim=ndim, hidden_units=list(hidden_units), num_layers=num_layers,
        activation=activation, batch_norm=bool(batch_norm), log_scale_bound=log_scale_bound,
        seed=seed,
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

    Returns
    -------
    tfb.Chain

    References
    ----------
    Kingma et al. (2016), Improved Variational Inference with Inverse Autoregressive Flow,
    https://arxiv.org/abs/1606.04934.

    Examples
    --------
    >>> flow = iaf(3, hidden_units=(16,), num_layers=2)
    >>> flow.forward(tf.zeros([4, 3])).shape
    TensorShape([4, 3])
    """
    ndim, num_layers, hidden_units, log_scale_bound, seed = _check_flow_args(
        ndim, num_layers, hidden_units, log_scale_bound, seed)

    def make_layer(i: int) -> tfb.Bijector:
        return tfb.Invert(_maf_layer(ndim, hidden_units, activation, log_scale_bound, i),
                          name=f"iaf_{i}")

    chain = _stack(ndim, num_layers, make_layer, batch_norm, permutation, seed, name="iaf")
    return attach_flow_spec(
        chain, "iaf", ndim=ndim, hidden_units=list(hidden_units), num_layers=num_layers,
        activation=activation, batch_norm=bool(batch_norm), log_scale_bound=log_scale_bound,
        seed=seed,
    )


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
) -> tfb.Chain:
    ndim, num_layers, hidden_units, log_scale_bound, seed = _check_flow_args(
        ndim, num_layers, hidden_units, log_scale_bound, seed)
    if ndim < 2:
        raise ValueError(f"`ndim` must be >= 2 for a coupling flow (it splits the dimensions "
                         f"in two halves), got {ndim}.")
    num_masked = ndim // 2
    shift_only = builder == "nice"

    def make_layer(i: int) -> tfb.Bijector:
        network = CouplingAffine(ndim - num_masked, hidden_units, activation,
                                 shift_only=shift_only, log_scale_bound=log_scale_bound,
                                 name=f"coupling_net_{i}")
        return tfb.RealNVP(num_masked=num_masked, shift_and_log_scale_fn=network,
                           is_constant_jacobian=shift_only, name=f"{builder}_{i}")

    chain = _stack(ndim, num_layers, make_layer, batch_norm, permutation, seed, name=builder)
    if shift_only:
        # NICE's final diagonal scaling (Dinh et al. 2015, sec. 3.3): the only layer that
        # changes volume.
        log_scale = tf.Variable(tf.zeros([ndim]), name="nice_log_scale")
        chain = tfb.Chain([tfb.Scale(log_scale=log_scale, name="scale"), *chain.bijectors],
                          name=builder)
    return attach_flow_spec(
        chain, builder, ndim=ndim, hidden_units=list(hidden_units), num_layers=num_layers,
        activation=activation, batch_norm=bool(batch_norm), log_scale_bound=log_scale_bound,
        seed=seed,
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
    >>> flow = realnvp(2, hidden_units=(8,), num_layers=2)
    >>> bool(np.allclose(flow.forward(tf.ones([3, 2])), 1.0))  # identity before training
    True
    """
    return _coupling("realnvp", ndim, hidden_units, num_layers, activation, batch_norm,
                     log_scale_bound, permutation, seed)


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
    ndim, hidden_units, num_layers, activation, batch_norm, permutation, seed
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
                     log_scale_bound, permutation, seed)


def batch_norm_mode(bijector: tfb.Bijector, training: bool) -> tfb.Bijector:
    """Return ``bijector`` with every :class:`tfb.BatchNormalization` inside in the given mode.

    ``tfb.BatchNormalization``'s ``training`` is fixed when it is built, and Keras's
    ``training=`` argument never reaches it. This rebuilds the ``Chain``/``Invert`` wrappers
    around each batch-norm bijector with ``training`` flipped, sharing its layer (and so its
    variables) and sharing every other bijector unchanged.

    Parameters
    ----------
    bijector : tfb.Bijector
        Any bijector.
    training : bool
        ``True``: batch statistics in the density direction (and running averages updated);
        ``False``: running statistics.

    Returns
    -------
    tfb.Bijector
        ``bijector`` itself when nothing inside needs to change.

    Examples
    --------
    >>> flow = maf(2, num_layers=1, batch_norm=True)
    >>> train_flow = batch_norm_mode(flow, training=True)
    >>> train_flow.bijectors[0].batchnorm is flow.bijectors[0].batchnorm
    True
    """
    if isinstance(bijector, tfb.BatchNormalization):
        if bijector._training == training:
            return bijector
        return tfb.BatchNormalization(batchnorm_layer=bijector.batchnorm, training=training,
                                      name=bijector.name)
    # tfb.Chain(...) and tfb.Invert(...) build instances of these private base classes when
    # a part holds Keras layers, so isinstance(x, tfb.Chain) is False for every nfbook flow.
    if isinstance(bijector, _Chain):
        parts = [batch_norm_mode(b, training) for b in bijector.bijectors]
        if all(new is old for new, old in zip(parts, bijector.bijectors)):
            return bijector
        return tfb.Chain(parts, name=bijector.name)
    if isinstance(bijector, _Invert):
        inner = batch_norm_mode(bijector.bijector, training)
        return bijector if inner is bijector.bijector else tfb.Invert(inner, name=bijector.name)
    return bijector
