"""Polyak averaging: a moving average of the weights, handed to the model after each epoch."""

from __future__ import annotations

__all__ = ["AverageWeightsEachEpoch", "WeightAverage"]

from collections.abc import Sequence

import tensorflow as tf
import tf_keras as keras


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
