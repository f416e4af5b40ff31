"""Argument and data validation shared by the builders and the model."""

from __future__ import annotations

__all__ = [
    "check_activation",
    "check_data",
    "check_hidden_units",
    "check_permutation",
    "check_positive_int",
    "check_real",
]

import difflib
import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """Return ``value`` as an ``int`` after checking that it is an integer ``>= minimum``.

    Parameters
    ----------
    name : str
        Argument name, quoted in the error message.
    value : Any
        The value to check. Booleans are rejected even though ``bool`` is an ``int``.
    minimum : int
        Smallest allowed value.

    Returns
    -------
    int

    Raises
    ------
    TypeError
        If ``value`` is not an integer.
    ValueError
        If ``value < minimum``.

    Examples
    --------
    >>> check_positive_int("num_layers", 3)
    3
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"`{name}` must be an integer, got {value!r} of type {type(value).__name__}."
        )
    if value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_real(name: str, value: Any, positive: bool = False) -> float:
    """Return ``value`` as a ``float`` after checking that it is a finite real number
    ``>= 0`` (``> 0`` if ``positive``).

    Parameters
    ----------
    name : str
        Argument name, quoted in the error message.
    value : Any
        The value to check: a Python or NumPy real number. Booleans are rejected.
    positive : bool
        Reject zero as well.

    Returns
    -------
    float

    Raises
    ------
    TypeError
        If ``value`` is not a real number.
    ValueError
        If ``value`` is NaN, infinite, negative, or zero when ``positive``.

    Examples
    --------
    >>> check_real("noise", 0.05)
    0.05
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"`{name}` must be a real number, got {value!r} of type {type(value).__name__}."
        )
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        expected = "> 0" if positive else ">= 0"
        raise ValueError(f"`{name}` must be a finite number {expected}, got {value!r}.")
    return float(value)


def check_hidden_units(hidden_units: Any) -> tuple[int, ...]:
    """Return ``hidden_units`` as a tuple of positive ints.

    Parameters
    ----------
    hidden_units : sequence of int
        Widths of the hidden layers of a network, input side first.

    Returns
    -------
    tuple of int

    Raises
    ------
    TypeError
        If ``hidden_units`` is not a sequence of integers.
    ValueError
        If it is empty or holds a width below 1.

    Examples
    --------
    >>> check_hidden_units([128, 128])
    (128, 128)
    """
    if isinstance(hidden_units, (str, bytes)) or not isinstance(hidden_units, Sequence):
        raise TypeError(
            f"`hidden_units` must be a sequence of positive integers such as (128, 128), "
            f"got {hidden_units!r}."
        )
    if len(hidden_units) == 0:
        raise ValueError(
            "`hidden_units` is empty: a network needs at least one hidden layer, "
            "e.g. hidden_units=(128, 128)."
        )
    return tuple(check_positive_int("hidden_units[i]", h) for h in hidden_units)


def check_permutation(permutation: Any, ndim: int) -> np.ndarray:
    """Return ``permutation`` as an int32 array after checking it permutes ``range(ndim)``.

    Parameters
    ----------
    permutation : sequence of int
        Candidate permutation of the ``ndim`` event dimensions.
    ndim : int
        Number of event dimensions.

    Returns
    -------
    numpy.ndarray
        The permutation, dtype int32.

    Raises
    ------
    ValueError
        If it is not a rearrangement of ``0, ..., ndim - 1``.

    Examples
    --------
    >>> check_permutation([2, 0, 1], 3).tolist()
    [2, 0, 1]
    """
    perm = np.asarray(permutation)
    if perm.ndim != 1 or perm.size != ndim or not np.issubdtype(perm.dtype, np.integer):
        raise ValueError(
            f"Invalid permutation {permutation!r}: expected {ndim} integers, "
            f"a rearrangement of 0..{ndim - 1}."
        )
    if sorted(perm.tolist()) != list(range(ndim)):
        raise ValueError(
            f"Invalid permutation {perm.tolist()}: expected each of 0..{ndim - 1} exactly once."
        )
    return perm.astype(np.int32)


def check_data(x: Any, ndim: int, name: str = "x") -> np.ndarray:
    """Return data as a float32 array of shape ``(n, ndim)`` after checking it is usable.

    Parameters
    ----------
    x : array-like, tf.Tensor or pandas.DataFrame
        Data points, one per row: a NumPy array of any real dtype, nested lists, a tensor or
        a DataFrame with ``ndim`` numeric columns.
    ndim : int
        Number of columns the flow expects.
    name : str
        Argument name, quoted in the error messages.

    Returns
    -------
    numpy.ndarray
        ``x`` as float32, shape ``(n, ndim)`` with ``n >= 1``.

    Raises
    ------
    TypeError
        If the values are not real numbers (strings, objects, complex numbers, booleans, a
        DataFrame column that is not numeric).
    ValueError
        If the shape is not ``(n, ndim)`` (ragged lists included), the data set is empty, or
        rows hold NaN or infinite values (the message says how many rows).

    Examples
    --------
    >>> check_data([[0.0, 1.0], [2.0, 3.0]], ndim=2).shape
    (2, 2)
    """
    array = _as_array(x, name)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(
            f"`{name}` must hold real numbers, got dtype {array.dtype}; "
            f"expected a float array of shape (n, {ndim})."
        )
    if array.ndim != 2 or array.shape[1] != ndim:
        got = f", got {array.shape[1]} columns" if array.ndim == 2 else ""
        raise ValueError(
            f"`{name}` has shape {array.shape}; expected (n, {ndim}): "
            f"one row per point, {ndim} column(s) for this flow{got}."
        )
    if array.shape[0] == 0:
        raise ValueError(f"`{name}` is empty (shape {array.shape}); expected at least one row.")
    array = array.astype(np.float32, copy=False)
    bad_rows = int(np.count_nonzero(~np.isfinite(array).all(axis=1)))
    if bad_rows:
        raise ValueError(
            f"`{name}` has {bad_rows} row(s) with NaN or infinite values out of "
            f"{array.shape[0]}; remove or impute them before fitting or scoring."
        )
    return array


def _as_array(x: Any, name: str) -> np.ndarray:
    """``x`` as a NumPy array: a tensor's values, a DataFrame's numeric columns (missing
    values as NaN), anything else through ``np.asarray``."""
    if isinstance(x, tf.Tensor):
        return x.numpy()
    dtypes = getattr(x, "dtypes", None)
    if dtypes is not None and hasattr(x, "to_numpy") and hasattr(dtypes, "items"):
        # a pandas DataFrame: every column must be numeric (kind i, u or f, nullable too)
        columns = [str(c) for c, t in dtypes.items() if getattr(t, "kind", "O") not in "iuf"]
        if columns:
            raise TypeError(f"`{name}` has non-numeric column(s) {columns}; expected "
                            "numeric columns only, one per coordinate.")
        return x.to_numpy(dtype=np.float64, na_value=np.nan)
    try:
        return np.asarray(x)
    except ValueError as error:  # ragged nested lists
        raise ValueError(f"`{name}` is not a rectangular array (rows of different lengths?): "
                         f"{error}") from error


def check_activation(activation: Any, name: str = "activation") -> Any:
    """Return ``activation`` after checking that Keras knows it.

    Parameters
    ----------
    activation : str, callable or None
        The name of a tf_keras activation (``"relu"``, ``"tanh"``, ``"swish"``...), a
        callable mapping a tensor to a tensor of the same shape, or ``None`` (linear).
    name : str
        Argument name, quoted in the error message.

    Returns
    -------
    str, callable or None
        ``activation``, unchanged.

    Raises
    ------
    TypeError
        If it is neither a string, a callable nor ``None``.
    ValueError
        If it is a name no tf_keras activation has (the message suggests the closest).

    Examples
    --------
    >>> check_activation("tanh")
    'tanh'
    """
    if activation is None or callable(activation):
        return activation
    if not isinstance(activation, str):
        raise TypeError(f"`{name}` must be the name of a Keras activation or a callable, got "
                        f"{activation!r} of type {type(activation).__name__}.")
    try:
        keras.activations.get(activation)
    except ValueError:
        known = sorted(n for n in dir(keras.activations) if not n.startswith("_")
                       and n not in ("get", "serialize", "deserialize"))
        close = difflib.get_close_matches(activation, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"`{name}` {activation!r} is not a Keras activation; expected one of "
                         f"{', '.join(known)}, or a callable.{hint}") from None
    return activation
