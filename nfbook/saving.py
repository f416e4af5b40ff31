"""Save a FlowModel to one file and load it back, checked against a recorded probe."""

from __future__ import annotations

__all__ = ["load", "save"]

import io
import json
import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

from nfbook.bijectors import rebuild, spec_of
from nfbook.model import FlowModel
from nfbook.training import build_optimizer, optimizer_variables

tfb = tfp.bijectors
tfd = tfp.distributions

_FORMAT = "nfbook-flow-model"
_FORMAT_VERSION = 1
_PROBE_SIZE = 64


def _flow_weights(model: FlowModel) -> list[tf.Variable]:
    """The model's flow variables (layers' weights, running statistics, stray variables),
    in a fixed order, without duplicates and without the metrics' counters."""
    seen: set[int] = set()
    weights = []
    for variable in [v for layer in model.flow_layers for v in layer.weights] + list(
        model.flow_variables
    ):
        if id(variable) not in seen:
            seen.add(id(variable))
            weights.append(variable)
    return weights


def _probe_points(ndim: int) -> np.ndarray:
    return np.random.default_rng(12345).normal(size=(_PROBE_SIZE, ndim)).astype(np.float32)


def save(model: FlowModel, path: str | os.PathLike, overwrite: bool = True) -> None:
    """Write ``model`` to the single file ``path``.

    The file is a zip archive holding ``model.json`` (the builder's name and arguments, the
    base, the shapes of the variables, the optimizer's configuration, and the log-densities
    of 64 fixed probe points) and ``weights.npz`` (every flow variable, batch-norm running
    statistics included, and the optimizer's state). It is written to a temporary file first
    and then moved into place, so an interrupted save never destroys an earlier file.

    Parameters
    ----------
    model : FlowModel
        The model to save.
    path : str or os.PathLike
        Destination file (``.nfbook`` suggested).
    overwrite : bool
        Replace an existing file; if ``False`` an existing file raises ``FileExistsError``.

    Raises
    ------
    TypeError
        If ``model`` is not a :class:`~nfbook.FlowModel`.
    FileExistsError
        If ``path`` exists and ``overwrite`` is ``False``.
    """
    if not isinstance(model, FlowModel):
        raise TypeError(f"`model` must be an nfbook.FlowModel, got {type(model).__name__}.")
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it.")
    weights = _flow_weights(model)
    probe = _probe_points(model.ndim)
    record: dict[str, Any] = {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "ndim": model.ndim,
        "bijector": spec_of(model.bijector),
        "default_base": model.default_base,
        "average_weights": model.weight_average is not None,
        "weights": [[w.name, list(w.shape)] for w in weights],
        "probe_log_prob": model.log_prob(probe).numpy().tolist(),
        "optimizer": None,
    }
    arrays = {f"w{i}": w.numpy() for i, w in enumerate(weights)}
    optimizer = model.optimizer
    if optimizer is not None:
        record["optimizer"] = keras.optimizers.serialize(optimizer)
        state = optimizer_variables(optimizer)
        record["optimizer_weights"] = len(state)
        arrays.update({f"o{i}": v.numpy() for i, v in enumerate(state)})
    _write(path, record, arrays)


def _write(path: Path, record: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write ``record`` (as ``model.json``) and ``arrays`` (as ``weights.npz``) to the zip
    archive ``path``, through a temporary file moved into place."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file, zipfile.ZipFile(file, "w") as archive:
            archive.writestr("model.json", json.dumps(record, default=float))
            archive.writestr("weights.npz", buffer.getvalue())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _read(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    try:
        with zipfile.ZipFile(path) as archive:
            record = json.loads(archive.read("model.json"))
            with np.load(io.BytesIO(archive.read("weights.npz"))) as npz:
                arrays = {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, ValueError, OSError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise ValueError(f"{path} is not a readable nfbook model file (written by "
                         f"FlowModel.save): {error}") from error
    if record.get("format") != _FORMAT:
        raise ValueError(f"{path} is not an nfbook model file: its format is "
                         f"{record.get('format')!r}, expected {_FORMAT!r}.")
    return record, arrays


def _restore_optimizer_state(model: FlowModel, saved_count: int, arrays: dict[str, np.ndarray],
                             path: Path) -> None:
    """Set the state of ``model``'s freshly built optimizer from the file's arrays ``o0``,
    ``o1``... A file saved before the first step holds no state beyond the step count (at most
    one array): the fresh optimizer is then that state. Any other mismatch is reported."""
    state = build_optimizer(model.optimizer, model.trainable_variables)
    saved = [arrays[f"o{i}"] for i in range(saved_count)]
    if [list(v.shape) for v in state] == [list(a.shape) for a in saved]:
        for variable, value in zip(state, saved):
            variable.assign(value)
    elif saved_count > 1:
        warnings.warn(f"{path}: the saved optimizer state ({saved_count} arrays) does not fit "
                      f"the rebuilt {type(model.optimizer).__name__} ({len(state)} variables, "
                      "e.g. a different TensorFlow version): the flow's weights are loaded, "
                      "but the optimizer starts afresh at step 0.", RuntimeWarning,
                      stacklevel=3)


def load(
    path: str | os.PathLike,
    bijector: tfb.Bijector | None = None,
    base: tfd.Distribution | None = None,
) -> FlowModel:
    """Load a model written by :meth:`FlowModel.save`, and check it scores as it did.

    The flow is rebuilt from the recorded builder and arguments (or from ``bijector``),
    its variables are set from the file, the optimizer is restored with its state, and the
    log-densities of the recorded probe points must match those saved, so a model that
    loads is the model that was saved.

    Parameters
    ----------
    path : str or os.PathLike
        File written by :meth:`FlowModel.save`.
    bijector : tfb.Bijector, optional
        Required when the saved flow was not made by an nfbook builder: a new bijector built
        the same way (its variables are overwritten).
    base : tfd.Distribution, optional
        Required when the saved model had a custom base distribution.

    Returns
    -------
    FlowModel

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not an nfbook model, a required ``bijector``/``base`` is missing, the
        variables do not match the rebuilt flow, or the reloaded model scores differently.

    Warns
    -----
    RuntimeWarning
        If the saved optimizer state does not fit the rebuilt optimizer: the weights load,
        the optimizer starts afresh.

    Examples
    --------
    >>> import tempfile, nfbook
    >>> model = nfbook.FlowModel(nfbook.realnvp(2, hidden_units=(8,)), ndim=2)
    >>> path = tempfile.mkdtemp() + "/flow.nfbook"
    >>> model.save(path)
    >>> x = [[0.5, -0.5]]
    >>> bool(np.allclose(load(path).log_prob(x), model.log_prob(x)))
    True
    """
    path = Path(path)
    record, arrays = _read(path)
    if bijector is None:
        if record["bijector"] is None:
            raise ValueError(f"{path} holds a flow that no nfbook builder made; pass "
                             "`bijector=` built the same way as the saved one.")
        bijector = rebuild(record["bijector"])
    if base is None and not record["default_base"]:
        raise ValueError(f"{path} was saved with a custom base distribution; pass `base=`.")
    model = FlowModel(bijector, record["ndim"], base=base,
                      average_weights=record.get("average_weights", True))
    weights = _flow_weights(model)
    saved_shapes = [shape for _, shape in record["weights"]]
    shapes = [list(w.shape) for w in weights]
    if shapes != saved_shapes:
        raise ValueError(f"The rebuilt flow's variables do not match {path}: "
                         f"{len(shapes)} variables with shapes {shapes[:4]}..., the file has "
                         f"{len(saved_shapes)} with shapes {saved_shapes[:4]}....")
    for i, weight in enumerate(weights):
        weight.assign(arrays[f"w{i}"])
    if record["optimizer"] is not None:
        model.compile(optimizer=keras.optimizers.deserialize(record["optimizer"]))
        _restore_optimizer_state(model, record["optimizer_weights"], arrays, path)
    log_prob = model.log_prob(_probe_points(model.ndim)).numpy()
    saved = np.asarray(record["probe_log_prob"], dtype=np.float32)
    if not np.allclose(log_prob, saved, rtol=1e-5, atol=1e-5):
        raise ValueError(f"The model loaded from {path} does not reproduce its saved "
                         f"log-densities (max difference {np.max(np.abs(log_prob - saved)):.3g})"
                         ": the bijector or base passed in differs from the saved one.")
    return model
