"""Seeding of Python, NumPy and TensorFlow in one call."""

from __future__ import annotations

__all__ = ["set_seed"]

import tf_keras as keras

from nfbook.checks import check_positive_int


def set_seed(seed: int) -> None:
    """Seed Python's ``random``, NumPy and TensorFlow's global generator.

    After ``set_seed(s)``, building and training the same model twice gives the same initial
    weights, the same shuffling and nearly the same loss history: multi-threaded reductions
    may add in a different order, which changes the last digits. Bitwise-identical runs also
    need ``tf.config.experimental.enable_op_determinism()`` and single-threaded ops,
    ``tf.config.threading.set_inter_op_parallelism_threads(1)`` and
    ``tf.config.threading.set_intra_op_parallelism_threads(1)``, which must be called before
    TensorFlow runs its first op. Sampling with a stateless seed pair,
    ``model.sample(n, seed=(1, 2))``, is repeatable without any of this.

    Parameters
    ----------
    seed : int
        A non-negative integer.

    Raises
    ------
    TypeError, ValueError
        If ``seed`` is not a non-negative integer.

    Examples
    --------
    >>> import numpy as np
    >>> set_seed(0); a = np.random.rand()
    >>> set_seed(0); b = np.random.rand()
    >>> a == b
    True
    """
    keras.utils.set_random_seed(check_positive_int("seed", seed, minimum=0))
