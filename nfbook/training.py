"""Training-loop helpers shared by nfbook's models: the in-graph step loop, the NaN guard,
weight averaging and the optimizer's state."""

from __future__ import annotations

__all__ = [
    "AverageWeightsEachEpoch",
    "NonFiniteLossError",
    "RollBackOnNonFinite",
    "StopOnNonFinite",
    "WeightAverage",
    "add_guard",
    "apply_if_finite",
    "build_optimizer",
    "optimizer_variables",
    "resolve_optimizer",
    "step_is_finite",
    "step_loop",
    "without_graph_optimizer",
]

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import tensorflow as tf
import tf_keras as keras
from tensorflow.python.eager import context as eager_context


class NonFiniteLossError(FloatingPointError):
    """Raised by :meth:`nfbook.FlowModel.fit` and :meth:`nfbook.FlowModel.fit_reverse_kl`
    when the loss of a batch became NaN or infinite."""


def step_is_finite(
    loss: tf.Tensor,
    gradients: Sequence[tf.Tensor | None],
    halted: tf.Tensor | bool = False,
) -> tf.Tensor:
    """Whether a training step counts: its loss and every gradient are finite.

    Parameters
    ----------
    loss : tf.Tensor
        The scalar loss of the batch.
    gradients : sequence of tf.Tensor or None
        Its gradients (``None`` entries are ignored).
    halted : bool or tf.Tensor
        Do not count the step whatever its loss: an earlier step of the epoch was not finite.

    Returns
    -------
    tf.Tensor
        A boolean scalar, ``False`` for a non-finite (or halted) step. A training step sums
        ``1 - cast(finite)`` in a ``keras.metrics.Sum`` named ``"skipped_steps"`` for
        :class:`StopOnNonFinite`.

    Examples
    --------
    >>> bool(step_is_finite(tf.constant(1.0), [tf.constant([0.0, float("inf")]), None]))
    False
    >>> bool(step_is_finite(tf.constant(1.0), [tf.constant([0.0, 2.0])]))
    True
    """
    # One test over all numbers of a dtype (no cast, which could overflow): a test per gradient
    # adds four operations per variable to the graph traced and optimised before the first step.
    flat: dict[tf.DType, list[tf.Tensor]] = {}
    vector = tf.constant([-1])  # one shape constant for every reshape
    for tensor in [loss, *(g for g in gradients if g is not None)]:
        flat.setdefault(tensor.dtype, []).append(tf.reshape(tensor, vector))
    finite = tf.logical_not(halted)
    for values in flat.values():
        finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(tf.concat(values, 0))))
    return finite


def apply_if_finite(
    optimizer: keras.optimizers.Optimizer,
    loss: tf.Tensor,
    gradients: Sequence[tf.Tensor | None],
    variables: Sequence[tf.Variable],
    halted: tf.Tensor | bool = False,
) -> tf.Tensor:
    """Apply ``gradients`` only if ``loss`` and every gradient are finite.

    One NaN in one step would otherwise turn every weight to NaN. Works eagerly and inside a
    ``tf.function`` train step. The test must see every gradient of the step before any
    update starts, which costs the time the updates of the last layers could have overlapped
    with the gradients of the first; :class:`RollBackOnNonFinite` guards
    :meth:`nfbook.FlowModel.fit` without that wait.

    Parameters
    ----------
    optimizer : keras.optimizers.Optimizer
        The tf_keras optimizer that applies the update.
    loss : tf.Tensor
        The scalar loss of the batch.
    gradients : sequence of tf.Tensor or None
        Gradients of ``loss`` with respect to ``variables`` (``None`` entries count as zero).
    variables : sequence of tf.Variable
        The trainable variables.
    halted : bool or tf.Tensor
        Skip this update whatever its loss: an earlier step of the epoch was skipped. With
        ``steps_per_execution > 1`` Keras runs several steps before any callback can stop
        training; this keeps the weights at the last finite step meanwhile.

    Returns
    -------
    tf.Tensor
        A float32 scalar: ``0.0`` when the update was applied, ``1.0`` when it was skipped
        (:func:`step_is_finite` says which).

    Examples
    --------
    >>> v = tf.Variable(1.0)
    >>> opt = keras.optimizers.SGD(0.1)
    >>> float(apply_if_finite(opt, tf.constant(float("nan")), [tf.constant(1.0)], [v]))
    1.0
    >>> float(v.numpy())
    1.0
    """
    pairs = [(g, v) for g, v in zip(gradients, variables) if g is not None]

    def apply() -> tf.Tensor:
        optimizer.apply_gradients(pairs)
        return tf.constant(0.0)

    return tf.cond(step_is_finite(loss, gradients, halted), apply, lambda: tf.constant(1.0))


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
        optimizer._create_all_weights(variables)
    return optimizer_variables(optimizer)


def resolve_optimizer(optimizer: Any) -> Any:
    r"""The optimizer that ``compile(optimizer=...)`` should get: the string ``"adam"`` (any
    case) becomes ``keras.optimizers.legacy.Adam(1e-3)``; anything else is returned unchanged.

    Both of tf_keras's Adams take the same step,
    :math:`\theta \leftarrow \theta - \alpha_t\, m_t / (\sqrt{v_t} + \epsilon)` with
    :math:`\alpha_t = \eta \sqrt{1 - \beta_2^t} / (1 - \beta_1^t)`, but the legacy one
    does it in one fused kernel per variable where the current one builds some forty graph
    operations per variable: fewer operations to trace and optimise before the first step,
    and fewer to run at every step.

    Examples
    --------
    >>> type(resolve_optimizer("adam")).__module__.split(".")[-2:]
    ['legacy', 'adam']
    >>> resolve_optimizer("sgd")
    'sgd'
    """
    if isinstance(optimizer, str) and optimizer.lower() == "adam":
        return keras.optimizers.legacy.Adam(1e-3)
    return optimizer


def optimizer_variables(optimizer: Any) -> list[tf.Variable]:
    """All variables of a tf_keras optimizer, new or legacy, in the order it created them
    (the iteration count first, then e.g. Adam's two moment estimates per variable).

    The new optimizers list them in the property ``variables``, the legacy ones in the method
    ``variables()``.
    """
    variables = optimizer.variables
    return list(variables() if callable(variables) else variables)


def step_loop(
    step: Callable[[Any], object],
    logs: Callable[[], dict[str, tf.Tensor]],
    steps_per_execution: tf.Variable,
    counter: tf.Variable,
    jit_compile: bool = False,
    optimize_graph: bool = False,
) -> Callable[[Any], dict[str, tf.Tensor]]:
    """A compiled function that runs ``step`` on up to ``steps_per_execution`` batches.

    Keras's ``fit`` and ``evaluate`` call the returned function with a data iterator once per
    execution. It runs the steps in one ``tf.while_loop`` inside one ``tf.function``, so that
    Python and Keras's callbacks are visited once per execution instead of once per batch
    (for a small batch that visit can cost more than the step). Unlike Keras's own loop it
    traces ``step`` once (Keras traces it twice when ``steps_per_execution > 1``) and without
    AutoGraph, which the step does not need, so the first update comes sooner. A data set
    that ends inside an execution
    ends the loop there; an execution that finds no batch at all raises the iterator's
    ``OutOfRangeError``, which tells Keras that the epoch is over.

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
    optimize_graph : bool
        Let TensorFlow's graph optimizer, Grappler, rewrite the function when it is first
        called (see :func:`without_graph_optimizer`). Off by default: rewriting delays the
        first step, and the rewritten step pays that back only over many steps.

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
    if optimize_graph:
        return compiled

    def run_unoptimized(iterator: Any) -> dict[str, tf.Tensor]:
        with without_graph_optimizer():
            return compiled(iterator)

    return run_unoptimized


@contextlib.contextmanager
def without_graph_optimizer() -> Iterator[None]:
    """Call compiled functions in this block, on this thread, without Grappler's rewrites.

    TensorFlow optimises a ``tf.function``'s graph (constant folding, arithmetic
    simplification, operation fusion...) when the function is first called, with the graph
    options of the call. This block turns Grappler off for the calls made in it, the way
    TensorFlow itself calls functions nested in a graph, and restores the previous options on
    leaving, so that other functions are not affected. TensorFlow keeps one optimised copy of a
    function per options: a function first called in this block should always be called in
    one. There is no public API for the per-call options (``tf.config.optimizer`` changes
    them for every thread and every function), hence ``tensorflow.python.eager.context``.

    Examples
    --------
    >>> options = eager_context.context().function_call_options
    >>> with without_graph_optimizer():
    ...     config = tf.compat.v1.ConfigProto.FromString(
    ...         eager_context.context().function_call_options.config_proto_serialized)
    >>> config.graph_options.rewrite_options.disable_meta_optimizer
    True
    >>> eager_context.context().function_call_options is options
    True
    """
    context = eager_context.context()
    saved = context.function_call_options
    config = tf.compat.v1.ConfigProto.FromString(saved.config_proto_serialized)
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    context.function_call_options = eager_context.FunctionCallOptions(
        executor_type=saved.executor_type, config_proto=config)
    try:
        yield
    finally:
        context.function_call_options = saved


class StopOnNonFinite(keras.callbacks.Callback):
    """Stop training at the first batch whose update was skipped for a non-finite loss.

    It reads the count of non-finite steps of the epoch after each call of the training
    function: the model's ``skipped_steps`` metric (see :func:`apply_if_finite` and
    :func:`step_is_finite`), or a ``"skipped_steps"`` entry of the batch logs for a model
    without one; after ``fit`` returns, :meth:`raise_if_stopped` turns a stop into
    :class:`NonFiniteLossError`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.epoch = 0
        self.stopped_epoch: int | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def skipped(self, logs: dict | None) -> int:
        """Non-finite steps in the epoch so far."""
        metric = getattr(self.model, "skipped_steps", None)
        if isinstance(metric, keras.metrics.Metric):
            return int(metric.result())
        return int((logs or {}).get("skipped_steps", 0))

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.stopped_epoch is None and self.skipped(logs) > 0:
            self.stopped_epoch = self.epoch + 1
            self.model.stop_training = True

    def outcome(self, weights: str) -> str:
        """What happened, as a clause ending in ``weights``, which says what the model
        holds now."""
        return f"that update was not applied and {weights}"

    def raise_if_stopped(self, what: str, advice: str,
                         weights: str = "the weights are those of the last finite step") -> None:
        """Raise :class:`NonFiniteLossError` if training was stopped.

        Parameters
        ----------
        what : str
            What became non-finite, e.g. ``"the NLL of a batch"``.
        advice : str
            What the user may do about it, one or more full sentences.
        weights : str
            Which weights the model holds now, as :meth:`outcome` takes it.

        Raises
        ------
        NonFiniteLossError
            If a step was skipped during the last ``fit``.
        """
        if self.stopped_epoch is not None:
            raise NonFiniteLossError(
                f"Training stopped in epoch {self.stopped_epoch}: {what} became NaN or "
                f"infinite, so {self.outcome(weights)}. {advice} The history so far is in "
                "model.history."
            )


class RollBackOnNonFinite(StopOnNonFinite):
    """Stop training at the first non-finite step and undo it, with the steps since a copy.

    The training steps apply every update, finite or not, and only count the non-finite ones
    (:func:`step_is_finite`): no update waits for the finiteness test of the whole step, as
    in :func:`apply_if_finite`, so the updates of the last layers overlap with the gradients
    of the first. This callback makes up for it. Before the first compiled call of the
    training function, and before any call that would take the steps since the last copy
    beyond ``interval``, it keeps the values of ``state``; after a call that reports a
    non-finite step, it writes them back, before any later callback sees the model, and stops
    training. Undone are the non-finite step, the finite steps since the copy (at most
    ``max(interval, steps_per_execution) - 1``, counted in ``undone``) and any after it in the
    same call. It must come first in the callback list.

    Parameters
    ----------
    state : callable
        Returns every variable that training changes and that must be restored: the model's
        weights and statistics, the optimizer's variables, any moving average. Called at the
        start of each ``fit``.
    interval : int
        Steps between copies; each copy reads every variable once, so that it costs little
        next to ``interval`` steps.
    """

    def __init__(self, state: Callable[[], Sequence[tf.Variable]], interval: int = 100) -> None:
        super().__init__()
        self.state = state
        self.interval = interval
        self.variables: list[tf.Variable] = []
        self.copy: list[tf.Tensor] | None = None
        self.steps_since_copy = 0
        self.first_batch = 0
        self.undone = 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.variables = list(self.state())
        self.copy = None

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        # Keras sets the size of the coming call (smaller for the last of an epoch).
        size = getattr(self.model, "_steps_per_execution", None)
        size = 1 if size is None else int(size.numpy())
        if self.copy is None or self.steps_since_copy + size > self.interval:
            # A read shares the variable's buffer; the next update in place copies it first.
            self.copy = [tf.raw_ops.ReadVariableOp(resource=v.handle, dtype=v.dtype)
                         for v in self.variables]
            self.steps_since_copy = 0
        self.first_batch = batch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.stopped_epoch is not None:
            return
        steps = batch - self.first_batch + 1  # Keras numbers the last batch of the call
        super().on_train_batch_end(batch, logs)
        if self.stopped_epoch is None:
            self.steps_since_copy += steps
            return
        # No earlier call of this epoch had a non-finite step, so the epoch's count of
        # skipped steps runs from this call's first non-finite step to its end.
        self.undone = self.steps_since_copy + steps - self.skipped(logs)
        for variable, value in zip(self.variables, self.copy):
            variable.assign(value)

    def on_train_end(self, logs: dict | None = None) -> None:
        self.copy = None  # free the memory

    def outcome(self, weights: str) -> str:
        """What happened, as a clause; ``weights`` names what the model holds, e.g. ``"the
        weights"``."""
        if self.undone == 0:
            return f"that update was undone and the model holds {weights} from before it"
        plural = "s" if self.undone > 1 else ""
        return (f"that update was undone, with the {self.undone} finite update{plural} "
                f"before it, and the model holds {weights} from before them")


def add_guard(kwargs: dict[str, Any],
              state: Callable[[], Sequence[tf.Variable]] | None = None) -> StopOnNonFinite:
    """Add a guard against non-finite steps to ``kwargs["callbacks"]`` and return it.

    Without ``state``, a :class:`StopOnNonFinite` at the end of the list (for training steps
    that use :func:`apply_if_finite`); with it, a :class:`RollBackOnNonFinite` at the front
    (for training steps that apply every update and count non-finite ones with
    :func:`step_is_finite`).
    """
    callbacks = list(kwargs.get("callbacks") or [])
    if state is None:
        guard = StopOnNonFinite()
        kwargs["callbacks"] = [*callbacks, guard]
    else:
        guard = RollBackOnNonFinite(state)
        kwargs["callbacks"] = [guard, *callbacks]
    return guard


class WeightAverage(tf.Module):
    r"""An exponential moving average of a model's trainable variables (Polyak averaging).

    After every optimiser step :meth:`update` sets
    :math:`\bar\theta \leftarrow \beta \bar\theta + (1 - \beta)\theta`. With a constant
    learning rate the iterates :math:`\theta` keep jittering around a minimum by an amount set
    by the gradient noise; their average sits closer to it, so it scores better on held-out
    data without any extra gradient computation. :class:`AverageWeightsEachEpoch` decides
    which weights the model holds when.

    Parameters
    ----------
    variables : sequence of tf.Variable
        The trainable variables to average.

    Examples
    --------
    >>> v = tf.Variable([0.0, 0.0])
    >>> average = WeightAverage([v])
    >>> _ = average.momentum.assign(0.5)
    >>> _ = v.assign([2.0, 4.0])
    >>> average.update()
    >>> average.swap_in()
    >>> v.numpy().tolist()
    [1.0, 2.0]
    >>> average.swap_out()
    >>> v.numpy().tolist()
    [2.0, 4.0]
    """

    def __init__(self, variables: Sequence[tf.Variable]) -> None:
        super().__init__(name="weight_average")
        self.variables_ = list(variables)
        self.averages = [tf.Variable(v, trainable=False) for v in self.variables_]
        self.backups = [tf.Variable(v, trainable=False) for v in self.variables_]
        self.momentum = tf.Variable(0.99, trainable=False, dtype=tf.float32)
        self.swapped = False

    def reset(self) -> None:
        """Restart the average at the current weights (the start of every ``fit``)."""
        for average, variable in zip(self.averages, self.variables_):
            average.assign(variable)
        self.swapped = False

    def update(self) -> None:
        r"""One averaging step, :math:`\bar\theta \leftarrow \bar\theta - (1 - \beta)(\bar\theta
        - \theta)` (the same update in fewer graph operations); called inside the compiled train
        step."""
        rate = 1.0 - self.momentum
        for average, variable in zip(self.averages, self.variables_):
            # one fused kernel: average -= rate * (average - variable)
            tf.raw_ops.ResourceApplyGradientDescent(
                var=average.handle, alpha=tf.cast(rate, variable.dtype), delta=average - variable)

    def swap_in(self) -> None:
        """Give the model the averaged weights, keeping the raw ones aside (idempotent)."""
        if not self.swapped:
            for backup, average, variable in zip(self.backups, self.averages, self.variables_):
                backup.assign(variable)
                variable.assign(average)
            self.swapped = True

    def swap_out(self) -> None:
        """Give the model back its raw weights, to go on training from them (idempotent)."""
        if self.swapped:
            for backup, variable in zip(self.backups, self.variables_):
                variable.assign(backup)
            self.swapped = False


class AverageWeightsEachEpoch(keras.callbacks.Callback):
    """Hand the averaged weights to validation, the other callbacks and the caller.

    Training steps use and update the raw weights. At the end of each epoch (before the
    validation pass, if any) the model takes the averaged weights, so ``val_loss``,
    ``EarlyStopping(restore_best_weights=True)``, ``ModelCheckpoint`` and the model returned
    by ``fit`` all see them; the next epoch goes on from the raw weights. The momentum is
    :math:`\\beta = 1 - 3/\\text{steps per epoch}` (at least 0.5, at most 0.999), so the average
    spans about the last third of an epoch whatever the batch size. Must come first in the
    callback list, so that it swaps before the others act on ``on_epoch_end``.

    Parameters
    ----------
    average : WeightAverage
        The model's average.
    """

    def __init__(self, average: WeightAverage) -> None:
        super().__init__()
        self.average = average

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.average.reset()
        steps = self.params.get("steps") if self.params else None
        momentum = 0.99 if not steps else min(max(1.0 - 3.0 / steps, 0.5), 0.999)
        self.average.momentum.assign(momentum)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.average.swap_out()

    def on_test_begin(self, logs: dict | None = None) -> None:
        self.average.swap_in()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.average.swap_in()

    def on_train_end(self, logs: dict | None = None) -> None:
        self.average.swap_in()
        self.average.swapped = False  # the averaged weights are now the model's own
