r"""Timing of TensorFlow calls that holds up on a busy machine: warm-up, interleaving, minimum.

A single timing of a TensorFlow function says little: the first call traces and compiles
it, and on a shared machine any one call can be slowed down by other processes. This module
times several functions together. Each is first called ``warmup`` times (untimed), then
every round calls each function once, in the same order, for ``repeats`` rounds. Because the
functions take turns, a burst of load from elsewhere slows all of them about equally, instead
of falling on one. For each function it reports the fastest call, :math:`t_{\min} =
\min_r t_r`, the least disturbed estimate of its cost, and the median over the rounds.
"""

from __future__ import annotations

__all__ = ["Timing", "time_calls"]

import time
from collections.abc import Callable, Hashable, Mapping
from statistics import median
from typing import Any, NamedTuple

import tensorflow as tf

from nfbook.checks import check_positive_int


class Timing(NamedTuple):
    """Seconds per call of one function, from :func:`time_calls`."""

    best: float
    """Fastest call (seconds)."""
    median: float
    """Median call (seconds)."""
    seconds: tuple[float, ...]
    """Every timed call, in round order (seconds)."""


def _block(result: Any) -> None:
    """Wait until every tensor in ``result`` holds its value (copies it to the host)."""
    for item in tf.nest.flatten(result):
        numpy = getattr(item, "numpy", None)
        if callable(numpy):
            numpy()


def time_calls(
    functions: Mapping[Hashable, Callable[[], Any]],
    repeats: int = 7,
    warmup: int = 1,
) -> dict[Hashable, Timing]:
    r"""Time functions of no arguments, interleaved, after a warm-up; seconds per call.

    Every function is called ``warmup`` times untimed (the first call of a ``tf.function``
    traces it), then ``repeats`` rounds each call every function once, in the order of
    ``functions``. A call's time runs from just before the call until every tensor it
    returned (anywhere in a nested structure) has been copied to NumPy, so work that
    TensorFlow runs asynchronously is counted. With :math:`t_1, \dots, t_R` the times of one
    function over :math:`R` rounds, it returns :math:`\min_r t_r` and the median.

    Parameters
    ----------
    functions : mapping of hashable to callable
        Labels (strings, tuples...) and functions of no arguments, e.g.
        ``{"sample": lambda: f(n)}`` where ``f`` is a ``tf.function``, traced or not yet.
    repeats : int
        Number of timed rounds :math:`R \geq 1`.
    warmup : int
        Untimed calls of each function before the first round, ``>= 0``.

    Returns
    -------
    dict of label to Timing
        For each label, in the order given: ``Timing(best, median, seconds)``.

    Raises
    ------
    TypeError
        If ``functions`` is not a mapping, a value is not callable, or ``repeats`` /
        ``warmup`` is not an integer.
    ValueError
        If ``functions`` is empty, ``repeats < 1`` or ``warmup < 0``.

    Examples
    --------
    >>> import tensorflow as tf
    >>> square = tf.function(lambda x: tf.matmul(x, x))
    >>> x = tf.ones([64, 64])
    >>> timings = time_calls({"small": lambda: square(x[:8, :8]), "big": lambda: square(x)},
    ...                      repeats=3)
    >>> list(timings), len(timings["big"].seconds)
    (['small', 'big'], 3)
    >>> all(0 <= t.best <= t.median for t in timings.values())
    True
    """
    if not isinstance(functions, Mapping):
        raise TypeError(f"`functions` must be a mapping from names to functions of no "
                        f"arguments, got {type(functions).__name__}.")
    if not functions:
        raise ValueError("`functions` is empty: give at least one name and function to time.")
    for name, function in functions.items():
        if not callable(function):
            raise TypeError(f"`functions[{name!r}]` must be callable with no arguments, got "
                            f"{function!r}.")
    repeats = check_positive_int("repeats", repeats, 1)
    warmup = check_positive_int("warmup", warmup, 0)

    for function in functions.values():
        for _ in range(warmup):
            _block(function())
    seconds: dict[Hashable, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            _block(function())
            seconds[name].append(time.perf_counter() - start)
    return {name: Timing(min(values), median(values), tuple(values))
            for name, values in seconds.items()}
