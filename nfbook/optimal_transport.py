"""Minibatch optimal transport between equally large point sets: the exact assignment, the
coupling it gives flow matching, and the 2-Wasserstein distance."""

from __future__ import annotations

__all__ = ["ot_couple", "ot_pairing", "wasserstein2"]

from typing import Any

import numpy as np
import tensorflow as tf
from scipy.optimize import linear_sum_assignment

from nfbook.checks import check_data, check_positive_int


def _assignment(x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """Column indices of the exact assignment of rows of ``x1`` to rows of ``x0``."""
    a, b = x1.astype(np.float64), x0.astype(np.float64)
    cost = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return linear_sum_assignment(cost)[1]


def _check_pair(x0: Any, x1: Any) -> tuple[np.ndarray, np.ndarray]:
    x0 = np.asarray(x0)
    if x0.ndim != 2:
        raise ValueError(f"`x0` must have shape (n, D), got shape {x0.shape}.")
    x0 = check_data(x0, x0.shape[1], "x0")
    x1 = check_data(x1, x0.shape[1], "x1")
    if len(x1) != len(x0):
        raise ValueError(f"`x0` and `x1` must hold as many points, got {len(x0)} and {len(x1)}.")
    return x0, x1


def ot_pairing(x0: Any, x1: Any) -> np.ndarray:
    r"""The minibatch optimal-transport coupling: which base point goes with which data point.

    Among all permutations :math:`\pi` of the :math:`n` points, the one minimising the total
    squared distance

    .. math:: \sum_{i=1}^n \lVert x_0^{(\pi(i))} - x_1^{(i)} \rVert^2 ,

    found exactly by the Hungarian-type solver ``scipy.optimize.linear_sum_assignment`` on the
    :math:`n \times n` matrix of squared distances (:math:`O(n^3)` time).

    Parameters
    ----------
    x0, x1 : array-like
        Base and data points, both of shape ``(n, D)``.

    Returns
    -------
    numpy.ndarray
        The permutation :math:`\pi`, integers of shape ``(n,)``: ``x0[perm][i]`` goes with
        ``x1[i]``.

    Raises
    ------
    TypeError, ValueError
        If the arrays are not 2-D of the same shape, are empty, or hold NaN or inf.

    References
    ----------
    Tong et al. (2024), Improving and generalizing flow-based generative models with minibatch
    optimal transport, https://arxiv.org/abs/2302.00482; Pooladian et al. (2023), Multisample
    flow matching, https://arxiv.org/abs/2304.14772.

    Examples
    --------
    >>> ot_pairing([[0.0, 0.0], [5.0, 5.0]], [[5.1, 5.0], [0.1, 0.0]]).tolist()
    [1, 0]
    """
    return _assignment(*_check_pair(x0, x1))


def wasserstein2(x: Any, y: Any) -> float:
    r"""Exact 2-Wasserstein distance between two equally large sets of points.

    Between the empirical distributions of :math:`n` points each, an optimal coupling is a
    permutation, so

    .. math:: W_2 = \Big(\min_\pi \frac1n \sum_{i=1}^n
        \lVert x^{(\pi(i))} - y^{(i)} \rVert^2\Big)^{1/2},

    computed with the same exact assignment as :func:`ot_pairing`.

    Parameters
    ----------
    x, y : array-like
        Points, both of shape ``(n, D)``.

    Returns
    -------
    float

    Raises
    ------
    TypeError, ValueError
        As :func:`ot_pairing`.

    Examples
    --------
    >>> wasserstein2([[0.0, 0.0], [1.0, 0.0]], [[1.0, 3.0], [0.0, 3.0]])
    3.0
    """
    x, y = _check_pair(x, y)
    perm = _assignment(x, y)
    return float(np.sqrt(np.mean(np.sum((x[perm].astype(np.float64) - y) ** 2, axis=1))))


def _block_assignment(x0: np.ndarray, x1: np.ndarray, block_size: int) -> np.ndarray:
    """:func:`_assignment` within consecutive blocks of ``block_size`` rows."""
    perm = np.empty(len(x0), np.int32)
    for start in range(0, len(x0), block_size):
        stop = min(start + block_size, len(x0))
        perm[start:stop] = start + _assignment(x0[start:stop], x1[start:stop])
    return perm


def ot_couple(x0: tf.Tensor, x1: tf.Tensor, block_size: int | None = None) -> tf.Tensor:
    r"""``x0`` reordered by :func:`ot_pairing` against ``x1``, inside a TensorFlow graph.

    The assignment runs in NumPy and SciPy on the CPU (``tf.numpy_function``); no gradient
    flows through the reordering, and none is needed: the pairs are data for the regression.
    Its cost grows as :math:`n^3` with the number :math:`n` of rows; with ``block_size=b``
    the rows are split into consecutive blocks of :math:`b` (the last may be shorter), each
    assigned exactly within itself, for :math:`n b^2` (the pairing of a batch of :math:`b`).

    Parameters
    ----------
    x0, x1 : tf.Tensor
        Finite base and data points of shape ``(n, D)``.
    block_size : int, optional
        Rows per assignment; ``None``: all rows at once.

    Returns
    -------
    tf.Tensor
        ``x0`` permuted, same shape.

    Raises
    ------
    TypeError, ValueError
        If ``block_size`` is not a positive integer.

    Examples
    --------
    >>> ot_couple(tf.constant([[0.0], [5.0]]), tf.constant([[5.2], [0.3]])).numpy().tolist()
    [[5.0], [0.0]]
    """
    if block_size is not None:
        block_size = check_positive_int("block_size", block_size)

    def permutation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if block_size is None:
            return _assignment(a, b).astype(np.int32)
        return _block_assignment(a, b, block_size)

    perm = tf.numpy_function(permutation, [x0, x1], tf.int32, stateful=False)
    perm.set_shape(x0.shape[:1])
    return tf.gather(tf.stop_gradient(x0), perm)
