"""A model's input data, checked: arrays, lists, DataFrames and ``tf.data`` sets.

Arrays, lists, tensors and DataFrames are checked whole before any step
(:func:`nfbook.checks.check_data`). A ``tf.data.Dataset`` is checked in two places: its
element spec when it is passed (dtype, rank, width when known), and each batch as it is read
(width when unknown, NaN and infinity), by a ``map`` that :func:`data_errors` turns into a
``ValueError`` naming the argument and the batch. A conditional flow's data come with a
context, one row per point (:func:`check_context`), or as a data set of ``(x, context)``
pairs.
"""

from __future__ import annotations

__all__ = ["check_context", "check_dataset", "check_input", "check_validation", "data_errors",
           "size_known"]

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


def check_context(context: Any, context_dim: int | None, rows: int | None,
                  name: str = "context") -> np.ndarray | None:
    """A conditional flow's context, checked: ``None`` for an unconditional flow, else a
    float32 array of shape ``(rows, context_dim)`` with finite values.

    Parameters
    ----------
    context : array-like, tf.Tensor, pandas.DataFrame or None
        One row per data point.
    context_dim : int or None
        The flow's context width; ``None`` for an unconditional flow.
    rows : int or None
        Number of data points the context goes with (``None``: any).
    name : str
        Argument name, quoted in the error messages.

    Raises
    ------
    ValueError
        If a context is missing for a conditional flow or given to an unconditional one, has
        another width, or has another number of rows than the data (nothing is broadcast).

    Examples
    --------
    >>> check_context([[0.0], [1.0]], 1, rows=2).shape
    (2, 1)
    """
    if context_dim is None:
        if context is not None:
            raise ValueError(f"This flow is unconditional (built without context_dim), but "
                             f"`{name}` was given. Drop it, or build the flow with "
                             f"context_dim=k (e.g. nfbook.maf(ndim, context_dim=k)).")
        return None
    if context is None:
        raise ValueError(f"This flow is conditional (context_dim={context_dim}): pass "
                         f"`{name}`, shape (n, {context_dim}), one row per data point.")
    checked = check_data(context, context_dim, name)
    if rows is not None and len(checked) != rows:
        raise ValueError(f"`{name}` has {len(checked)} rows but the data has {rows}; expected "
                         "one context row per data point (nothing is broadcast).")
    return checked


def check_input(x: Any, ndim: int, name: str = "x", batch_size: int | None = None,
                context: Any = None, context_dim: int | None = None) -> tuple[Any, Any]:
    """``x`` and its context ready for ``fit``, ``evaluate`` or ``predict``: checked, as
    float32.

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
    context : array-like, optional
        A conditional flow's context for array data (:func:`check_context`); a data set
        brings its own, as ``(x, context)`` pairs.
    context_dim : int, optional
        The flow's context width; ``None`` for an unconditional flow.

    Returns
    -------
    x : numpy.ndarray, tf.data.Dataset or keras.utils.Sequence
        A float32 array of shape ``(n, ndim)``, or a data set (see :func:`check_dataset`).
    context : numpy.ndarray or None
        The checked context of array data.

    Raises
    ------
    TypeError
        If ``x`` is a Keras 3 object or holds no real numbers.
    ValueError
        If it has the wrong shape, is empty, or holds NaN or infinite values (for a data set,
        while it is read: see :func:`data_errors`); on a bad context.
    """
    if x is None:
        return None, check_context(context, None, None)
    check_tf_keras(x, name)
    if isinstance(x, (tf.data.Dataset, keras.utils.Sequence)):
        if context is not None:
            raise ValueError(f"`{name}` is a data set: it must bring its context itself, as "
                             "(x, context) pairs; drop the `context` argument.")
        if isinstance(x, keras.utils.Sequence):
            return x, None
        return check_dataset(x, ndim, name, batch_size, context_dim), None
    checked = check_data(x, ndim, name)
    return checked, check_context(context, context_dim, len(checked))


def check_validation(validation: Any, ndim: int, batch_size: int | None = None,
                     context_dim: int | None = None) -> Any:
    """``fit``'s ``validation_data`` ready for Keras: a checked data set, a 1-tuple holding
    the checked array (Keras tests ``if validation_data:``, ambiguous for a bare array), or
    for a conditional flow the pair ``(x, context)``. ``(x,)`` and ``(x, None)`` are taken as
    ``x``. Same checks as :func:`check_input`."""
    context = None
    if isinstance(validation, tuple):  # a list is data: a list of rows
        if all(v is None for v in validation[1:]):
            validation = validation[0]
        elif len(validation) == 2:
            validation, context = validation
        else:
            raise ValueError(f"`validation_data` must be x, (x,) or (x, context), got a "
                             f"{type(validation).__name__} of {len(validation)} items.")
    x, context = check_input(validation, ndim, "validation_data", batch_size, context,
                             context_dim)
    if isinstance(x, tf.data.Dataset):
        return x
    return (x,) if context is None else (x, context)


def check_dataset(dataset: tf.data.Dataset, ndim: int, name: str = "x",
                  batch_size: int | None = None, context_dim: int | None = None
                  ) -> tf.data.Dataset:
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
    rank = _check_spec(first, ndim, what, "points", "one per coordinate of this flow")
    if context_dim is None:
        if nested and len(spec) > 1:
            raise ValueError(f"{what} yields tuples of {len(spec)} tensors, but this flow is "
                             "unconditional: it takes points only. Yield points, or build a "
                             "conditional flow (context_dim=k) for (x, context) pairs.")
    else:
        if not nested or len(spec) != 2:
            raise ValueError(f"{what} must yield (x, context) pairs for this conditional flow "
                             f"(context_dim={context_dim}), got elements {spec}.")
        context_rank = _check_spec(spec[1], context_dim, f"the context of {what}",
                                   "contexts", "the flow's context_dim")
        if None not in (rank, context_rank) and rank != context_rank:
            raise ValueError(f"{what} yields points of shape {tuple(first.shape)} with contexts "
                             f"of shape {tuple(spec[1].shape)}; expected one context row per "
                             "point.")
    if rank == 1:  # single points
        size = _DEFAULT_BATCH_SIZE if batch_size is None else batch_size
        dataset = dataset.batch(check_positive_int("batch_size", size))

    def check(index: tf.Tensor, element: Any) -> Any:
        x = _checked_batch(element[0] if nested else element, ndim, index, f"{name}:")
        if context_dim is None:
            return (x, *element[1:]) if nested else x
        context = _checked_batch(element[1], context_dim, index, f"{name}:context_")
        rows = tf.debugging.Assert(
            tf.equal(tf.shape(context)[0], tf.shape(x)[0]),
            [f"{_MARK}:{name}:rows", index, tf.shape(x)[0], tf.shape(context)[0]])
        with tf.control_dependencies([rows]):
            return tf.identity(x), context

    return dataset.enumerate().map(check)


def _check_spec(spec: Any, width: int, what: str, items: str, columns: str) -> int | None:
    """Check the element spec of a data set's points or contexts: a tensor of real numbers,
    shape ``(batch, width)`` or ``(width,)`` where known; return its rank."""
    if not isinstance(spec, tf.TensorSpec):
        raise TypeError(f"{what} yields {spec}; expected tensors of {items}, shape "
                        f"(batch, {width}) or ({width},).")
    if not (spec.dtype.is_floating or spec.dtype.is_integer) or spec.dtype.is_complex:
        raise TypeError(f"{what} yields dtype {spec.dtype.name}; expected real numbers "
                        f"(float32, or another float or integer type, cast to float32).")
    rank = spec.shape.rank
    if rank not in (None, 1, 2):
        raise ValueError(f"{what} yields elements of shape {tuple(spec.shape)}; expected "
                         f"batches, shape (batch, {width}), or single {items}, shape "
                         f"({width},).")
    known = None if rank is None else spec.shape[-1]
    if known is not None and known != width:
        raise ValueError(f"{what} yields elements of shape {tuple(spec.shape)}; expected "
                         f"{width} columns, {columns}, got {known}.")
    return rank


def _checked_batch(values: tf.Tensor, width: int, index: tf.Tensor, tag: str) -> tf.Tensor:
    """A batch cast to float32, once it is asserted to have ``width`` columns and finite
    rows (the assertions' messages start with :data:`_MARK` and ``tag``, for
    :func:`data_errors`)."""
    values = tf.cast(values, tf.float32)
    shape = tf.shape(values)
    checks = []
    if values.shape.rank is None or values.shape[-1] is None:
        checks.append(tf.debugging.Assert(
            tf.logical_and(tf.equal(tf.rank(values), 2), tf.equal(shape[-1], width)),
            [f"{_MARK}:{tag}shape", index, width, shape], summarize=8))
    finite = tf.reduce_all(tf.math.is_finite(values), axis=-1)
    bad_rows = tf.reduce_sum(tf.cast(tf.logical_not(finite), tf.int32))
    checks.append(tf.debugging.Assert(tf.equal(bad_rows, 0),
                                      [f"{_MARK}:{tag}finite", index, bad_rows, shape[0]]))
    with tf.control_dependencies(checks):
        return tf.identity(values)


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
        if kind.startswith("context_"):
            what, kind = f"the context of {what}", kind.removeprefix("context_")
        if kind == "finite":
            message = (f"{what} holds NaN or infinite values: {numbers[1]} of the "
                       f"{numbers[2]} rows of {where}. Remove or impute them (e.g. "
                       "`dataset.filter(...)` or `dataset.map(...)`); the model never saw "
                       "that batch.")
        elif kind == "rows":
            message = (f"{what} yields a batch of {numbers[1]} points with {numbers[2]} "
                       f"context rows in {where}; expected one context row per point.")
        else:
            width, shape = numbers[1], tuple(numbers[2:])
            got = f", got {shape[-1]}" if len(shape) == 2 else ""
            columns = ("one per coordinate of this flow" if what.startswith("`")
                       else "the flow's context_dim")
            message = (f"{what} yields a batch of shape {shape} in {where}; expected "
                       f"(batch, {width}): {width} columns, {columns}{got}.")
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
