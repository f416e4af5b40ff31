"""Which variables of a FlowModel are its weights, trainable or not, for Keras."""

from __future__ import annotations

__all__ = ["FlowWeights", "keras_layers"]

import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

from nfbook import private_api

tfb = tfp.bijectors


def keras_layers(bijector: tfb.Bijector) -> list[keras.layers.Layer]:
    """The outermost tf_keras layers held anywhere inside ``bijector``."""
    layers = [m for m in bijector.submodules if isinstance(m, keras.layers.Layer)]
    nested = {id(sub) for layer in layers for sub in layer.submodules}
    return [layer for layer in layers if id(layer) not in nested]


class FlowWeights:
    """The weights of :class:`nfbook.FlowModel`, mixed into it before ``keras.Model``.

    A FlowModel tracks its bijector, two distributions around it, a moving average of the
    weights and its metrics. Its weights, as the optimizer, ``summary()`` and
    :meth:`count_params` see them, are the variables of the flow and of the base
    distribution only: trainable ones (less those of frozen layers) and the rest (batch-norm
    statistics, frozen layers' weights).
    """

    @property
    def trainable_weights(self) -> list[tf.Variable]:
        """The trainable variables, in Keras's order, less those of frozen layers.

        The bijector is walked once, and the base's variables on their own: the two
        distributions that the model also tracks hold nothing else. Keras would take every
        variable of the bijector, a ``tf.Module``, as trainable, even those of a layer set
        ``trainable = False``: here a frozen layer stays frozen.
        """
        private_api.assert_weights_created(self)
        if not self.trainable:
            return []
        # the distributions hold the bijector; the weight average (set last in __init__)
        # holds references to the variables it averages, frozen or not
        skipped = (self._distribution, self._training_distribution,
                   getattr(self, "weight_average", None))
        variables = []
        for tracked in private_api.tracked_children(self):
            if any(tracked is other for other in skipped):
                continue
            if tracked is self._bijector:
                variables += self._bijector_trainable_variables()
                variables += self._distribution.distribution.trainable_variables  # the base's
            else:
                variables += tracked.trainable_variables
        return private_api.deduplicated(
            self, variables + private_api.own_trainable_weights(self))

    def _bijector_trainable_variables(self) -> list[tf.Variable]:
        """The bijector's trainable variables, less those of layers set ``trainable = False``
        (or inside one)."""
        frozen = set()
        for layer in self.flow_layers:
            if not layer.trainable:
                frozen.update(id(v) for v in layer.weights)
            elif not all(sub.trainable for sub in private_api.sublayers(layer)):
                trainable = {id(v) for v in layer.trainable_weights}
                frozen.update(id(v) for v in layer.weights if id(v) not in trainable)
        return [v for v in self._bijector.trainable_variables if id(v) not in frozen]

    @property
    def non_trainable_weights(self) -> list[tf.Variable]:
        """The flow's and the base's variables that gradients do not train: batch-norm
        statistics and the weights of frozen layers. The copies kept by the weight average
        and the metrics' counters are not weights of the model (``summary()`` counts
        :meth:`count_params` values)."""
        private_api.assert_weights_created(self)
        trainable = {id(v) for v in self.trainable_weights}
        variables = [*(v for layer in self.flow_layers for v in layer.weights),
                     *self.flow_variables, *self._distribution.distribution.variables]
        return private_api.deduplicated(self, [v for v in variables if id(v) not in trainable])

    def count_params(self) -> int:
        """Number of values in the model's weights, trainable or not (the flow's and the
        base's: weights, and batch-norm statistics if any); the weight average's copies and
        the metrics' counters are not counted. ``summary()`` gives the same total."""
        return int(sum(v.shape.num_elements()
                       for v in self.trainable_weights + self.non_trainable_weights))

