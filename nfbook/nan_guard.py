"""The NaN guard of every nfbook trainer: a step whose loss or gradient is not finite stops
training, and the model goes back to its state from before the compiled call that ran it."""

from __future__ import annotations

__all__ = ["NonFiniteLossError", "RollBackOnNonFinite", "step_is_finite"]

from collections.abc import Callable, Sequence

import tensorflow as tf
import tf_keras as keras


class NonFiniteLossError(FloatingPointError):
    """Raised by the ``fit`` of every nfbook trainer (:meth:`nfbook.FlowModel.fit`,
    :meth:`nfbook.FlowModel.fit_reverse_kl`, :meth:`nfbook.FlowMatching.fit`) when the loss or
    a gradient of a batch became NaN or infinite."""


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
        A boolean scalar, ``False`` for a non-finite (or halted) step.

    Examples
    --------
    >>> bool(step_is_finite(tf.constant(1.0), [tf.constant([0.0, float("inf")]), None]))
    False
    >>> bool(step_is_finite(tf.constant(1.0), [tf.constant([0.0, 2.0])]))
    True
    """
    # One test over all numbers of a dtype, each at its own precision (no cast, which could
    # overflow), instead of four graph operations per variable.
    flat: dict[tf.DType, list[tf.Tensor]] = {}
    vector = tf.constant([-1])
    for tensor in [loss, *(g for g in gradients if g is not None)]:
        flat.setdefault(tensor.dtype, []).append(tf.reshape(tensor, vector))
    finite = tf.logical_not(halted)
    for values in flat.values():
        finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(tf.concat(values, 0))))
    return finite


class RollBackOnNonFinite(keras.callbacks.Callback):
    """Stop training at the first non-finite step and undo it, with the steps since a copy.

    The training step applies every update, finite or not, and counts the non-finite ones in
    the trainer's ``skipped_steps`` metric (:func:`step_is_finite`), so no update waits for a
    finiteness test of the whole step. This callback makes up for it. Before the first
    compiled call, and before any call that would take the steps since the last copy beyond
    ``interval``, it keeps the values of ``state``; after a call that counted a non-finite
    step it writes them back, before any later callback sees the model, and stops training.
    Undone are the non-finite step, the finite steps since the copy (at most
    ``max(interval, steps_per_execution) - 1``, counted in ``undone``) and any after it in the
    same call. It must come first in the callback list.

    Parameters
    ----------
    state : callable
        Returns every variable that training changes and that must be restored: the model's
        weights and statistics, the optimizer's variables, any moving average. Called at the
        start of each ``fit``.
    steps_per_call : callable
        Returns the number of steps the coming compiled call runs.
    interval : int
        Steps between copies; each copy reads every variable once, which costs little next
        to ``interval`` steps.
    """

    def __init__(self, state: Callable[[], Sequence[tf.Variable]],
                 steps_per_call: Callable[[], int], interval: int = 100) -> None:
        super().__init__()
        self.state = state
        self.steps_per_call = steps_per_call
        self.interval = interval
        self.variables: list[tf.Variable] = []
        self.copy: list[tf.Tensor] | None = None
        self.steps_since_copy = 0
        self.first_batch = 0
        self.epoch = 0
        self.stopped_epoch: int | None = None
        self.undone = 0

    def skipped(self) -> int:
        """Non-finite steps in the epoch so far."""
        return int(self.model.skipped_steps.result())

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.variables = list(self.state())
        self.copy = None
        self.stopped_epoch = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        size = self.steps_per_call()
        if self.copy is None or self.steps_since_copy + size > self.interval:
            # A read shares the variable's buffer; the next update in place copies it first.
            self.copy = [v.read_value() for v in self.variables]
            self.steps_since_copy = 0
        self.first_batch = batch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.stopped_epoch is not None:
            return
        steps = batch - self.first_batch + 1  # Keras numbers the last batch of the call
        skipped = self.skipped()
        if skipped == 0:
            self.steps_since_copy += steps
            return
        self.stopped_epoch = self.epoch + 1
        self.model.stop_training = True
        # No earlier call of this epoch had a non-finite step, so the epoch's count of
        # skipped steps runs from this call's first non-finite step to its end.
        self.undone = self.steps_since_copy + steps - skipped
        for variable, value in zip(self.variables, self.copy):
            variable.assign(value)

    def on_train_end(self, logs: dict | None = None) -> None:
        self.copy = None  # free the memory

    def raise_if_stopped(self, what: str, advice: str, weights: str) -> None:
        """Raise :class:`NonFiniteLossError` if training was stopped.

        Parameters
        ----------
        what : str
            What became non-finite, e.g. ``"the NLL of a batch"``.
        advice : str
            What the user may do about it, one or more full sentences.
        weights : str
            What the model holds now, e.g. ``"the weights"``.

        Raises
        ------
        NonFiniteLossError
            If a step was not finite during the last ``fit``.
        """
        if self.stopped_epoch is None:
            return
        if self.undone == 0:
            outcome = f"that update was undone and the model holds {weights} from before it"
        else:
            plural = "s" if self.undone > 1 else ""
            outcome = (f"that update was undone, with the {self.undone} finite update{plural} "
                       f"before it, and the model holds {weights} from before them")
        raise NonFiniteLossError(
            f"Training stopped in epoch {self.stopped_epoch}: {what} became NaN or infinite, "
            f"so {outcome}. {advice} The history so far is in model.history.")
