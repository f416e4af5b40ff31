"""The NaN guard shared by every nfbook training loop: skip a non-finite update, then stop."""

from __future__ import annotations

__all__ = ["NonFiniteLossError", "StopOnNonFinite", "add_guard", "apply_if_finite"]

from collections.abc import Sequence
from typing import Any

import tensorflow as tf
import tf_keras as keras


class NonFiniteLossError(FloatingPointError):
    """Raised by :meth:`nfbook.FlowModel.fit` and :meth:`nfbook.FlowModel.fit_reverse_kl`
    when the loss of a batch became NaN or infinite."""


def apply_if_finite(
    optimizer: keras.optimizers.Optimizer,
    loss: tf.Tensor,
    gradients: Sequence[tf.Tensor | None],
    variables: Sequence[tf.Variable],
) -> tf.Tensor:
    """Apply ``gradients`` only if ``loss`` and every gradient are finite.

    One NaN in one step would otherwise turn every weight to NaN, and no callback can undo
    that afterwards. Works eagerly and inside a ``tf.function`` train step.

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

    Returns
    -------
    tf.Tensor
        A float32 scalar: ``0.0`` when the update was applied, ``1.0`` when it was skipped
        (sum it in a ``keras.metrics.Sum`` named ``"skipped_steps"`` for
        :class:`StopOnNonFinite`).

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
    finite = tf.reduce_all(tf.math.is_finite(loss))
    for gradient, _ in pairs:
        finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(gradient)))

    def apply() -> tf.Tensor:
        optimizer.apply_gradients(pairs)
        return tf.constant(0.0)

    return tf.cond(finite, apply, lambda: tf.constant(1.0))


class StopOnNonFinite(keras.callbacks.Callback):
    """Stop training at the first batch whose update was skipped for a non-finite loss.

    It watches the ``"skipped_steps"`` entry of the batch logs (see :func:`apply_if_finite`);
    after ``fit`` returns, :meth:`raise_if_stopped` turns a stop into
    :class:`NonFiniteLossError`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.epoch = 0
        self.stopped_epoch: int | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if logs and logs.get("skipped_steps", 0) > 0 and self.stopped_epoch is None:
            self.stopped_epoch = self.epoch + 1
            self.model.stop_training = True

    def raise_if_stopped(self, what: str, advice: str) -> None:
        """Raise :class:`NonFiniteLossError` if training was stopped.

        Parameters
        ----------
        what : str
            What became non-finite, e.g. ``"the NLL of a batch"``.
        advice : str
            What the user may do about it, one or more full sentences.

        Raises
        ------
        NonFiniteLossError
            If a step was skipped during the last ``fit``.
        """
        if self.stopped_epoch is not None:
            raise NonFiniteLossError(
                f"Training stopped in epoch {self.stopped_epoch}: {what} became NaN or "
                "infinite, so that update was not applied and the weights are those of the "
                f"last finite step. {advice} The history so far is in model.history."
            )


def add_guard(kwargs: dict[str, Any]) -> StopOnNonFinite:
    """Append a new :class:`StopOnNonFinite` to ``kwargs["callbacks"]`` and return it."""
    guard = StopOnNonFinite()
    kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), guard]
    return guard
