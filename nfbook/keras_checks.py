"""Checks of what users hand to nfbook's models from Keras: tf_keras objects rather than
Keras 3 ones, callbacks, compile options, and file names for a whole model."""

from __future__ import annotations

__all__ = ["check_callbacks", "check_compile_args", "check_model_path", "check_tf_keras",
           "is_keras3", "keras3_layers"]

import os
from typing import Any

import tensorflow_probability as tfp
import tf_keras as keras

from nfbook import private_api


def is_keras3(value: Any) -> bool:
    """Whether ``value`` is an object of Keras 3 (what ``tf.keras`` and ``import keras`` give
    since TensorFlow 2.16), rather than of tf_keras (Keras 2).

    Examples
    --------
    >>> is_keras3(keras.optimizers.SGD())
    False
    """
    return any(cls.__module__.split(".")[0] == "keras" for cls in type(value).__mro__)


def check_tf_keras(value: Any, name: str) -> Any:
    """Return ``value`` after checking that it is not a Keras 3 object.

    nfbook's models are tf_keras models: Keras 3 optimizers, callbacks, layers, models and
    data sets (``tf.keras.*`` or ``keras.*``) do not work with them.

    Parameters
    ----------
    value : Any
        An optimizer, callback, metric, layer or data passed to a model.
    name : str
        Argument name, quoted in the error message.

    Returns
    -------
    Any
        ``value``, unchanged.

    Raises
    ------
    TypeError
        If ``value`` is a Keras 3 object; the message names its class and says to use
        ``import tf_keras as keras``.

    Examples
    --------
    >>> check_tf_keras(keras.callbacks.History(), "callbacks").__class__.__name__
    'History'
    """
    if is_keras3(value):
        kind = type(value)
        package = kind.__module__.replace(".src", "").split(".")[:2]  # e.g. keras.optimizers
        where = ".".join(package)
        same = len(package) == 2 and hasattr(getattr(keras, package[1], None), kind.__name__)
        then = f", then `{where}.{kind.__name__}(...)`" if same else ""
        raise TypeError(
            f"`{name}` is a Keras 3 object ({kind.__name__} from `{where}`, which is what "
            f"`tf.keras` gives in this TensorFlow); nfbook's models are tf_keras models and "
            f"cannot use it. Make it with tf_keras instead: `import tf_keras as keras`{then}."
        )
    return value


def check_compile_args(optimizer: Any, strategy: Any, kwargs: dict[str, Any]) -> None:
    """Check ``compile``'s optimizer and metrics (tf_keras objects, :func:`check_tf_keras`)
    and refuse ``jit_compile=True`` under a ``strategy`` whose replicas are CPU devices."""
    check_tf_keras(optimizer, "optimizer")
    if kwargs.get("jit_compile") and strategy.num_replicas_in_sync > 1 and any(
            "CPU" in device.upper() for device in strategy.extended.worker_devices):
        raise ValueError("jit_compile=True does not work with replicas on CPU devices: XLA "
                         "cannot read a variable placed on another CPU device. Compile "
                         "without jit_compile, or train on GPUs.")
    for name in ("metrics", "weighted_metrics"):
        for metric in kwargs.get(name) or []:
            check_tf_keras(metric, name)


def check_model_path(path: Any, name: str = "filepath") -> str:
    """Return ``path`` as a string after checking that it does not name a Keras model file.

    A :class:`~nfbook.FlowModel` is saved in nfbook's own format (:func:`nfbook.load` reads
    it), since Keras's formats do not round-trip a model holding TFP objects. A ``.keras``,
    ``.h5`` or ``.hdf5`` name promises a file that ``keras.models.load_model`` reads, so it
    is refused; any other name is taken (``.nfbook`` suggested).

    Parameters
    ----------
    path : str or os.PathLike
        The file name.
    name : str
        Argument name, quoted in the error message.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        If ``path`` ends in ``.keras``, ``.h5`` or ``.hdf5``.

    Examples
    --------
    >>> check_model_path("flow.nfbook")
    'flow.nfbook'
    """
    text = os.fspath(path)
    suffix = next((s for s in (".keras", ".h5", ".hdf5") if text.lower().endswith(s)), None)
    if suffix is not None:
        raise ValueError(
            f"`{name}` {text!r} ends in {suffix}, Keras's own format, which cannot hold a "
            "FlowModel (Keras does not rebuild TFP objects). Use a `.nfbook` name: "
            "FlowModel.save (and ModelCheckpoint) write nfbook's format, which `nfbook.load` "
            "reads; or save the weights only (`save_weights`, "
            "`ModelCheckpoint(..., save_weights_only=True)`) and `load_weights` them into a "
            "model built the same way."
        )
    return text


def check_callbacks(callbacks: Any) -> list[keras.callbacks.Callback]:
    """Return ``fit``'s ``callbacks`` as a list after checking them before any step.

    Each must be a tf_keras callback (:func:`check_tf_keras`); a ``ModelCheckpoint`` that
    saves the whole model must have a file name that :func:`check_model_path` accepts.

    Parameters
    ----------
    callbacks : sequence of keras.callbacks.Callback or None
        The callbacks passed to ``fit``.

    Returns
    -------
    list of keras.callbacks.Callback

    Raises
    ------
    TypeError
        If one is a Keras 3 object.
    ValueError
        If a whole-model ``ModelCheckpoint`` names a ``.keras`` or ``.h5`` file.

    Examples
    --------
    >>> len(check_callbacks([keras.callbacks.ModelCheckpoint("best.nfbook")]))
    1
    """
    callbacks = list(callbacks or [])
    for callback in callbacks:
        check_tf_keras(callback, "callbacks")
        whole_model = not getattr(callback, "save_weights_only", True)
        if isinstance(callback, keras.callbacks.ModelCheckpoint) and whole_model:
            check_model_path(callback.filepath, "ModelCheckpoint's filepath")
    return callbacks


def keras3_layers(bijector: tfp.bijectors.Bijector) -> list[str]:
    """Names of the Keras 3 layers held by ``bijector`` or its modules (``tf.keras`` layers
    since TF 2.16: tf_keras models do not track them)."""

    def is_keras3_layer(value: Any) -> bool:
        return any(cls.__module__.startswith("keras.src.layers") for cls in type(value).__mro__)

    return sorted({layer.name for layer in private_api.flatten_modules(bijector, is_keras3_layer)})
