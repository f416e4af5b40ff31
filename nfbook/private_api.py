"""Every private name of tf_keras and TensorFlow Probability that nfbook uses, in one place.

Each is used only where no public API does the job; each function says why. A change in a
new release of tf_keras or TFP then breaks here, and nowhere else.
"""

from __future__ import annotations

__all__ = [
    "Chain",
    "Invert",
    "batch_norm_training",
    "bijector_fn",
    "create_legacy_slots",
    "drop_cached_validation",
    "event_ndims",
    "flatten_modules",
    "num_masked",
    "plain_graph_model",
    "shift_and_log_scale_fn",
    "spline_bins",
    "step_counter",
    "steps_per_execution",
    "sublayers",
]

from collections.abc import Callable
from typing import Any

import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

# tfb.Chain(...) and tfb.Invert(...) build instances of these private base classes (the public
# names are auto-composite subclasses), so isinstance(b, tfb.Chain) is False for most chains.
from tensorflow_probability.python.bijectors.chain import _Chain as Chain
from tensorflow_probability.python.bijectors.invert import _Invert as Invert

tfb = tfp.bijectors


def plain_graph_model(model: keras.Model) -> bool:
    """Whether ``model`` trains in one graph on one device: not eagerly, not under a
    distribution strategy or a parameter-server coordinator (Keras keeps both privately)."""
    return (not model.run_eagerly and model._distribution_strategy is None
            and model._cluster_coordinator is None)


def steps_per_execution(model: keras.Model) -> tf.Variable | None:
    """The variable holding the steps per compiled call, which ``fit`` lowers for the last
    call of an epoch (``None`` before ``compile``). Keras exposes no public accessor."""
    return model._steps_per_execution


def step_counter(model: keras.Model, which: str) -> tf.Variable:
    """Keras's count of ``"train"`` or ``"test"`` steps, which its callbacks and progress bar
    read; a replacement execution function must advance it."""
    return model._train_counter if which == "train" else model._test_counter


def drop_cached_validation(model: keras.Model) -> None:
    """Forget the validation data that ``fit`` caches and drops only when it ends normally."""
    model._eval_data_handler = None


def create_legacy_slots(optimizer: Any, variables: list[tf.Variable]) -> None:
    """Create a legacy tf_keras optimizer's slots now; it has no public ``build``."""
    optimizer._create_all_weights(variables)


def sublayers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """Every layer nested in ``layer`` (not itself); tf_keras lists them only privately."""
    return list(layer._flatten_layers(include_self=False))


def flatten_modules(module: tf.Module, predicate: Callable[[Any], bool]) -> list[Any]:
    """Every attribute value under ``module`` for which ``predicate`` holds, layers included
    (``tf.Module.submodules`` lists modules only)."""
    return list(module._flatten(predicate=predicate))


def batch_norm_training(bijector: tfb.BatchNormalization) -> bool:
    """Whether a ``tfb.BatchNormalization`` uses batch statistics; set only at construction."""
    return bool(bijector._training)


def num_masked(bijector: tfb.Bijector) -> Any:
    """The number of conditioning coordinates of a ``tfb.RealNVP`` (``None`` for other
    bijectors); not exposed."""
    return getattr(bijector, "_num_masked", None)


def event_ndims(bijector: tfb.Bijector) -> int:
    """The event rank a ``tfb.MaskedAutoregressiveFlow`` was built for (1 if not recorded);
    not exposed."""
    return getattr(bijector, "_event_ndims", 1)


def shift_and_log_scale_fn(bijector: tfb.Bijector) -> Any:
    """The network of a TFP MAF or RealNVP bijector built from one (else ``None``); not
    exposed, and needed to run it once per layer."""
    return getattr(bijector, "_shift_and_log_scale_fn", None)


def bijector_fn(bijector: tfb.Bijector) -> Any:
    """The function of a TFP MAF or RealNVP bijector built with ``bijector_fn`` (else
    ``None``); not exposed."""
    return getattr(bijector, "_bijector_fn", None)


def spline_bins(spline: tfb.RationalQuadraticSpline, y: tf.Tensor) -> Any:
    """The knots of the bin of each ``y``, found as TFP's own inverse finds them."""
    return spline._compute_shared(y=y)
