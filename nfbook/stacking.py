"""What every layered builder shares: the stack of layers with permutations and optional batch
norm between them, the checks of the common arguments, and batch norm's training mode."""

from __future__ import annotations

__all__ = ["batch_norm_mode", "check_flow_args", "stack"]

from collections.abc import Callable, Sequence

import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

from nfbook import private_api
from nfbook.checks import check_hidden_units, check_positive_int, check_real
from nfbook.permutations import PermutationSpec, legacy_permutations, resolve_permutations

tfb = tfp.bijectors


def _batch_norm() -> tfb.BatchNormalization:
    # Positive gamma as in TFP's default layer; momentum 0.9 so that the running
    # statistics settle within a few epochs of large batches.
    layer = keras.layers.BatchNormalization(
        momentum=0.9, gamma_constraint=lambda gamma: tf.nn.relu(gamma) + 1e-6
    )
    return tfb.BatchNormalization(batchnorm_layer=layer, training=False)


def stack(
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
        num_masked = (private_api.num_masked(layers[0]) if isinstance(layers[0], tfb.RealNVP)
                      else None)
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


def check_flow_args(ndim: int, num_layers: int, hidden_units: Sequence[int],
                     log_scale_bound: float, seed: int) -> tuple:
    """The builders' common arguments, checked and as plain Python values (for the spec)."""
    return (
        check_positive_int("ndim", ndim),
        check_positive_int("num_layers", num_layers),
        check_hidden_units(hidden_units),
        check_real("log_scale_bound", log_scale_bound, positive=True),
        check_positive_int("seed", seed, minimum=0),
    )


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
    >>> from nfbook import maf
    >>> flow = maf(2, num_layers=1, batch_norm=True)
    >>> train_flow = batch_norm_mode(flow, training=True)
    >>> train_flow.bijectors[0].batchnorm is flow.bijectors[0].batchnorm
    True
    """
    if isinstance(bijector, tfb.BatchNormalization):
        if private_api.batch_norm_training(bijector) == training:
            return bijector
        return tfb.BatchNormalization(batchnorm_layer=bijector.batchnorm, training=training,
                                      name=bijector.name)
    if isinstance(bijector, private_api.Chain):
        parts = [batch_norm_mode(b, training) for b in bijector.bijectors]
        if all(new is old for new, old in zip(parts, bijector.bijectors)):
            return bijector
        return tfb.Chain(parts, name=bijector.name)
    if isinstance(bijector, private_api.Invert):
        inner = batch_norm_mode(bijector.bijector, training)
        return bijector if inner is bijector.bijector else tfb.Invert(inner, name=bijector.name)
    return bijector
