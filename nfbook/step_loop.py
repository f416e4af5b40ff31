"""The compiled function that runs many training (or evaluation) steps per call."""

from __future__ import annotations

__all__ = ["one_step_per_call_if", "step_loop", "steps_per_call"]

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import tensorflow as tf

from nfbook import private_api


def step_loop(
    step: Callable[[Any], object],
    logs: Callable[[], dict[str, tf.Tensor]],
    steps_per_execution: tf.Variable,
    counter: tf.Variable,
    jit_compile: bool = False,
    graph_optimizer: bool = False,
) -> Callable[[Any], dict[str, tf.Tensor]]:
    """A compiled function that runs ``step`` on up to ``steps_per_execution`` batches.

    Keras's ``fit`` and ``evaluate`` call the returned function with a data iterator once per
    execution. It runs the steps in one ``tf.while_loop`` inside one ``tf.function``, so that
    Python and Keras's callbacks are visited once per execution instead of once per batch
    (for a small batch that visit can cost more than the step). Unlike Keras's own loop it
    traces ``step`` once (Keras traces it twice when ``steps_per_execution > 1``) and without
    AutoGraph, which the step does not need, so the first update comes sooner. A data set
    that ends inside an execution ends the loop there; an execution that finds no batch at
    all raises the iterator's ``OutOfRangeError``, which tells Keras that the epoch is over.

    By default the function runs without TensorFlow's graph optimizer, Grappler
    (:func:`nfbook.private_api.without_graph_optimizer`): its rewriting of a step of many small
    operations takes part of the first epoch and does not make later steps of a discrete flow
    faster (the rows "Grappler off" and "on" of ``benchmarks/results/training_speed.md``). A
    step that solves an ODE is different: its solver loop evaluates the network many times,
    the rewritten evaluations are faster, and FFJORD's later epochs are shorter with Grappler
    on although its first epoch is longer (``benchmarks/results/ode_grappler.md``), so such a
    model passes ``graph_optimizer=True``.

    Parameters
    ----------
    step : callable
        One step on one batch (e.g. ``model.train_step``); its return value is ignored.
    logs : callable
        Returns the logs for the callbacks (the metrics' results) after the steps.
    steps_per_execution : tf.Variable
        The number of batches per call (Keras's ``model._steps_per_execution``, which ``fit``
        lowers for the last execution of an epoch).
    counter : tf.Variable
        Incremented once per step (Keras's ``_train_counter`` or ``_test_counter``).
    jit_compile : bool
        Compile ``step`` with XLA.
    graph_optimizer : bool
        Keep Grappler on for the function.

    Returns
    -------
    callable
        ``function(iterator) -> logs``.
    """
    if jit_compile:
        step = tf.function(step, jit_compile=True, reduce_retracing=True)

    def run(iterator: Any) -> dict[str, tf.Tensor]:
        limit = tf.cast(steps_per_execution, tf.int64)

        def fetch(count: tf.Tensor) -> tf.experimental.Optional:  # none after `limit` steps
            return tf.cond(count < limit, iterator.get_next_as_optional,
                           lambda: tf.experimental.Optional.empty(iterator.element_spec))

        def body(count: tf.Tensor, batch: tf.experimental.Optional
                 ) -> tuple[tf.Tensor, tf.experimental.Optional]:
            step(batch.get_value())
            counter.assign_add(1)
            return count + 1, fetch(count + 1)

        start = tf.constant(0, tf.int64)
        count, _ = tf.while_loop(lambda count, batch: batch.has_value(), body,
                                 (start, fetch(start)))

        def end_of_data() -> tf.Tensor:  # next() on an exhausted iterator raises OutOfRange
            first = tf.nest.flatten(next(iterator))[0]
            return count + tf.cast(tf.size(first), tf.int64)

        tf.cond(count > 0, lambda: count, end_of_data)
        return logs()

    compiled = tf.function(run, autograph=False, reduce_retracing=True)
    if graph_optimizer:
        return compiled

    def run_without_grappler(iterator: Any) -> dict[str, tf.Tensor]:
        with private_api.without_graph_optimizer():
            return compiled(iterator)

    return run_without_grappler


@contextlib.contextmanager
def one_step_per_call_if(model: Any, condition: bool) -> Iterator[None]:
    """Run ``model`` at one step per compiled call while inside, if ``condition``: Keras
    refuses ``steps_per_execution > 1`` on data whose number of batches it cannot tell."""
    variable = private_api.steps_per_execution(model)
    if not condition or variable is None or int(variable.numpy()) == 1:
        yield
        return
    saved = int(variable.numpy())
    variable.assign(1)
    try:
        yield
    finally:
        variable.assign(saved)


def steps_per_call(model: Any) -> int:
    """The training steps ``model`` runs per compiled call (Keras's ``steps_per_execution``)."""
    variable = private_api.steps_per_execution(model)
    return 1 if variable is None else int(variable.numpy())
