"""Every private name of tf_keras and TensorFlow Probability that nfbook uses, in one place.

Each is used only where no public API does the job; each function says why. A change in a
new release of tf_keras or TFP then breaks here, and nowhere else.
"""

from __future__ import annotations

__all__ = [
    "Chain",
    "Invert",
    "assert_weights_created",
    "batch_norm_training",
    "bijector_fn",
    "create_legacy_slots",
    "deduplicated",
    "drop_cached_validation",
    "event_ndims",
    "flatten_modules",
    "num_masked",
    "own_trainable_weights",
    "plain_graph_model",
    "shift_and_log_scale_fn",
    "step_counter",
    "steps_per_execution",
    "sublayers",
    "tracked_children",
    "without_graph_optimizer",
]

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

# The per-call graph options: see without_graph_optimizer.
from tensorflow.python.eager import context as eager_context

# tfb.Chain(...) and tfb.Invert(...) build instances of these private base classes (the public
# names are auto-composite subclasses), so isinstance(b, tfb.Chain) is False for most chains.
from tensorflow_probability.python.bijectors.chain import _Chain as Chain
from tensorflow_probability.python.bijectors.invert import _Invert as Invert

tfb = tfp.bijectors


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


def assert_weights_created(model: keras.Model) -> None:
    """Raise Keras's own error if ``model`` has not created its weights yet; a ``weights``
    property that overrides Keras's must do the same."""
    model._assert_weights_created()


def tracked_children(model: keras.Model) -> list[Any]:
    """The objects a Keras model tracks in its attributes (layers, modules, variables), in
    the order Keras lists their weights."""
    return list(model._self_tracked_trackables)


def own_trainable_weights(model: keras.Model) -> list[tf.Variable]:
    """The trainable variables added to ``model`` itself with ``add_weight``."""
    return list(model._trainable_weights)


def deduplicated(model: keras.Model, variables: list[tf.Variable]) -> list[tf.Variable]:
    """``variables`` without repeats, as Keras lists a model's weights."""
    return model._dedup_weights(variables)


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
