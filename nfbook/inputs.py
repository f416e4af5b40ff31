"""A model's input data, checked: arrays, lists, DataFrames and ``tf.data`` sets.

Arrays, lists, tensors and DataFrames are checked whole before any step
(:func:`nfbook.checks.check_data`). A ``tf.data.Dataset`` is checked in two places: its
element spec when it is passed (dtype, rank, width when known), and each batch as it is read
(width when unknown, NaN and infinity), by a ``map`` that :func:`data_errors` turns into a
``ValueError`` naming the argument and the batch.
"""

from __future__ import annotations

__all__ = ["check_dataset", "check_input", "check_validation", "data_errors", "size_known"]

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

from nfbook.checks import check_data, check_positive_int
from nfbook.keras_checks import check_tf_keras

_MARK = "nfbook-data-check"
_DEFAULT_BATCH_SIZE = 32  # Keras's, for a data set of single points


def check_input(x: Any, ndim: int, name: str = "x", batch_size: int | None = None) -> Any:
    """``x`` ready for ``fit``, ``evaluate`` or ``predict``: checked, as float32.

    Parameters
    ----------
    x : array-like, pandas.DataFrame, tf.Tensor, tf.data.Dataset, keras.utils.Sequence or None
        The data. A ``Sequence`` (and ``None``) is passed through unchecked.
    ndim : int
        Number of columns the flow expects.
    name : str
        Argument name, quoted in the error messages.
    batch_size : int, optional
        Batch size for a data set of single points (32 if not given).

    Returns
    -------
    numpy.ndarray, tf.data.Dataset or keras.utils.Sequence
        A float32 array of shape ``(n, ndim)``, or a data set (see :func:`check_dataset`).

    Raises
    ------
    TypeError
        If ``x`` is a Keras 3 object or holds no real numbers.
    ValueError
        If it has the wrong shape, is empty, or holds NaN or infinite values (for a data set,
        while it is read: see :func:`data_errors`).
    """
    if x is None:
        return None
    check_tf_keras(x, name)
    if isinstance(x, tf.data.Dataset):
        return check_dataset(x, ndim, name, batch_size)
    if isinstance(x, keras.utils.Sequence):
        return x
    return check_data(x, ndim, name)


def check_validation(validation: Any, ndim: int, batch_size: int | None = None) -> Any:
    """``fit``'s ``validation_data`` ready for Keras: a checked data set, or a 1-tuple holding
    the checked array (Keras tests ``if validation_data:``, ambiguous for a bare array).
    ``(x,)`` and ``(x, None)`` are taken as ``x``. Same checks as :func:`check_input`."""
    if isinstance(validation, (tuple, list)) and all(v is None for v in validation[1:]):
        validation = validation[0]
    checked = check_input(validation, ndim, "validation_data", batch_size)
    return checked if isinstance(checked, tf.data.Dataset) else (checked,)


def check_dataset(dataset: tf.data.Dataset, ndim: int, name: str = "x",
                  batch_size: int | None = None) -> tf.data.Dataset:
    """A data set of batches of points, shape ``(batch, ndim)``, checked as it is read.

    ``dataset`` yields points (shape ``(ndim,)``, then batched here by ``batch_size``) or
    batches of points (shape ``(batch, ndim)``), or tuples whose first element is such
    (the rest is passed on unchanged). Its elements are cast to float32, and each batch is
    checked as it is read: ``ndim`` columns (when the spec does not say), every value finite.
    A batch that fails stops the pass that reads it with an error that :func:`data_errors`
    reports as a ``ValueError``; the batch never reaches the model.

    Parameters
    ----------
    dataset : tf.data.Dataset
        The data.
    ndim : int
        Number of columns the flow expects.
    name : str
        Argument name, quoted in the error messages.
    batch_size : int, optional
        Batch size for a data set of single points (32 if not given).

    Returns
    -------
    tf.data.Dataset

    Raises
    ------
    TypeError
        If the elements are not tensors of real numbers.
    ValueError
        If their shape is known not to be ``(ndim,)`` or ``(batch, ndim)``.

    Examples
    --------
    >>> points = tf.data.Dataset.from_tensor_slices(np.zeros((10, 2)))  # float64 points
    >>> check_dataset(points, 2, batch_size=4).element_spec
    TensorSpec(shape=(None, 2), dtype=tf.float32, name=None)
    """
    spec = dataset.element_spec
    nested = isinstance(spec, tuple)
    first = spec[0] if nested and spec else spec
    what = f"`{name}` (a tf.data.Dataset)"
    if not isinstance(first, tf.TensorSpec):
        raise TypeError(f"{what} yields {first}; expected tensors of points, shape "
                        f"(batch, {ndim}) or ({ndim},).")
    if not (first.dtype.is_floating or first.dtype.is_integer) or first.dtype.is_complex:
        raise TypeError(f"{what} yields dtype {first.dtype.name}; expected real numbers "
                        f"(float32, or another float or integer type, cast to float32).")
    rank = first.shape.rank
    if rank not in (None, 1, 2):
        raise ValueError(f"{what} yields elements of shape {tuple(first.shape)}; expected "
                         f"batches of points, shape (batch, {ndim}), or single points, shape "
                         f"({ndim},).")
    width = None if rank is None else first.shape[-1]
    if width is not None and width != ndim:
        raise ValueError(f"{what} yields elements of shape {tuple(first.shape)}; expected "
                         f"{ndim} columns, one per coordinate of this flow, got {width}.")
    if rank == 1:  # single points
        size = _DEFAULT_BATCH_SIZE if batch_size is None else batch_size
        dataset = dataset.batch(check_positive_int("batch_size", size))

    def check(index: tf.Tensor, element: Any) -> Any:
        x = tf.cast(element[0] if nested else element, tf.float32)
        shape = tf.shape(x)
        checks = []
        if width is None:
            columns = shape[-1]
            checks.append(tf.debugging.Assert(
                tf.logical_and(tf.equal(tf.rank(x), 2), tf.equal(columns, ndim)),
                [f"{_MARK}:{name}:shape", index, ndim, shape], summarize=8))
        finite = tf.reduce_all(tf.math.is_finite(x), axis=-1)
        bad_rows = tf.reduce_sum(tf.cast(tf.logical_not(finite), tf.int32))
        checks.append(tf.debugging.Assert(tf.equal(bad_rows, 0),
                                          [f"{_MARK}:{name}:finite", index, bad_rows, shape[0]]))
        with tf.control_dependencies(checks):
            x = tf.identity(x)
        return (x, *element[1:]) if nested else x

    return dataset.enumerate().map(check)


@contextlib.contextmanager
def data_errors(epoch: Callable[[], int | None] = lambda: None) -> Iterator[None]:
    """A block in which a batch that fails :func:`check_dataset`'s checks raises a
    ``ValueError`` that names the argument, the batch (counted from 1) and, if ``epoch``
    returns one, the epoch; other errors pass unchanged.

    Parameters
    ----------
    epoch : callable
        Returns the epoch being run (counted from 1), or ``None`` outside training.
    """
    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        found = re.search(rf"{_MARK}:(\w+):(\w+)\]((?: \[[^\]]*\])*)", error.message)
        if found is None:
            raise
        name, kind, values = found.groups()
        numbers = [int(n) for n in re.findall(r"-?\d+", values)]
        where = f"batch {numbers[0] + 1}"
        if epoch() is not None:
            where += f" of epoch {epoch()}"
        what = f"`{name}` (a tf.data.Dataset)"
        if kind == "finite":
            message = (f"{what} holds NaN or infinite values: {numbers[1]} of the "
                       f"{numbers[2]} rows of {where}. Remove or impute them (e.g. "
                       "`dataset.filter(...)` or `dataset.map(...)`); the model never saw "
                       "that batch.")
        else:
            ndim, shape = numbers[1], tuple(numbers[2:])
            got = f", got {shape[-1]}" if len(shape) == 2 else ""
            message = (f"{what} yields a batch of shape {shape} in {where}; expected "
                       f"(batch, {ndim}): {ndim} columns, one per coordinate of this "
                       f"flow{got}.")
        raise ValueError(message) from None


def size_known(data: Any, steps: int | None) -> bool:
    """Whether Keras can tell the number of batches of ``data`` (or ``steps`` gives it)."""
    if steps is not None or data is None:
        return True
    if isinstance(data, tuple) and len(data) == 1:
        data = data[0]
    if isinstance(data, tf.data.Dataset):
        return int(data.cardinality()) >= 0
    return isinstance(data, (np.ndarray, tf.Tensor, keras.utils.Sequence, list))
