"""The state of a tf_keras optimizer, new or legacy: created before training, listed in order."""

from __future__ import annotations

__all__ = ["build_optimizer", "optimizer_variables"]

from collections.abc import Sequence
from typing import Any

import tensorflow as tf
import tf_keras as keras  # noqa: F401  (the doctests use it)

from nfbook import private_api


def build_optimizer(optimizer: Any, variables: Sequence[tf.Variable]) -> list[tf.Variable]:
    """Create the state of a tf_keras optimizer for ``variables`` now, outside any compiled
    function, and return all of the optimizer's variables.

    The optimizers of ``tf_keras.optimizers`` have ``build``; the legacy ones
    (``tf_keras.optimizers.legacy``, which Keras recommends on Apple silicon) create their
    slots on first use instead, and have no ``build``.

    Parameters
    ----------
    optimizer : keras.optimizers.Optimizer or keras.optimizers.legacy.Optimizer
        The optimizer.
    variables : sequence of tf.Variable
        The variables it will update.

    Returns
    -------
    list of tf.Variable
        See :func:`optimizer_variables`.

    Examples
    --------
    >>> v = tf.Variable([1.0, 2.0])
    >>> [tuple(w.shape) for w in build_optimizer(keras.optimizers.legacy.Adam(), [v])][-2:]
    [(2,), (2,)]
    """
    if hasattr(optimizer, "build"):
        optimizer.build(variables)
    else:
        private_api.create_legacy_slots(optimizer, list(variables))
    return optimizer_variables(optimizer)


def optimizer_variables(optimizer: Any) -> list[tf.Variable]:
    """All variables of a tf_keras optimizer, new or legacy, in the order it created them
    (the iteration count first, then e.g. Adam's two moment estimates per variable).

    The new optimizers list them in the property ``variables``, the legacy ones in the method
    ``variables()``.
    """
    variables = optimizer.variables
    return list(variables() if callable(variables) else variables)
