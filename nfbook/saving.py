"""Save a FlowModel to one file and load it back, checked against a recorded probe."""

from __future__ import annotations

__all__ = ["load", "save"]

import io
import json
import os
import secrets
import stat
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
# 2: probe points sampled from the model, the base's variables; 3: the bijector record holds
# the resolved permutations between layers and their scheme (nfbook.permutations)
_FORMAT_VERSION = 3
_PROBE_SIZE = 64
_PROBE_SEED = (20240917, 1)  # stateless: the same probe points at every save


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


def _base_weights(model: FlowModel) -> list[tf.Variable]:
    """The variables of ``model``'s base distribution (none for the default base)."""
    return list(model.distribution.distribution.variables)


def _gaussian_probe_points(ndim: int) -> np.ndarray:
    """The fixed N(0, I) probe points of format version 1, which stored none."""
    return np.random.default_rng(12345).normal(size=(_PROBE_SIZE, ndim)).astype(np.float32)


def _sampled_probe_points(model: FlowModel) -> np.ndarray:
    """Probe points drawn from ``model`` itself with a fixed seed, so inside its support
    (where N(0, I) points need not be, e.g. for a flow ending in ``tfb.Exp``)."""
    return model.sample(_PROBE_SIZE, seed=_PROBE_SEED).numpy().astype(np.float32)


def _score(model: FlowModel, points: np.ndarray) -> np.ndarray:
    """``log p`` of the probe points, without :meth:`FlowModel.log_prob`'s data checks (a
    sample may overflow to infinity)."""
    return model.call(tf.constant(points, dtype=tf.float32)).numpy()


def save(model: FlowModel, path: str | os.PathLike, overwrite: bool = True) -> None:
    """Write ``model`` to the single file ``path``.

    The file is a zip archive holding ``model.json`` (the builder's name and arguments,
    the permutations between layers included, whether the base is the default one, the
    shapes of the variables, the optimizer's configuration, and 64 probe points drawn from
    the model with a fixed seed, with their log-densities) and ``weights.npz`` (every flow
    variable, batch-norm running statistics included, the base distribution's variables,
    and the optimizer's state). A custom base is not itself saved, only its variables (a
    trained ``loc``, say): pass a base built the same way to :func:`load`. The file is
    written to a temporary file, flushed to disk and moved into place, so an interrupted
    save never destroys an earlier file; it gets the permissions a plain write would give
    (those of the file it replaces, if any).

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
    base_weights = _base_weights(model)
    probe = _sampled_probe_points(model)
    record: dict[str, Any] = {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "ndim": model.ndim,
        "bijector": spec_of(model.bijector),
        "default_base": model.default_base,
        "average_weights": model.weight_average is not None,
        "weights": [[w.name, list(w.shape)] for w in weights],
        "base_weights": [[w.name, list(w.shape)] for w in base_weights],
        "probe_points": probe.tolist(),
        "probe_log_prob": _score(model, probe).tolist(),  # NaN or inf are kept as such
        "optimizer": None,
    }
    arrays = {f"w{i}": w.numpy() for i, w in enumerate(weights)}
    arrays.update({f"b{i}": w.numpy() for i, w in enumerate(base_weights)})
    optimizer = model.optimizer
    if optimizer is not None:
        record["optimizer"] = keras.optimizers.serialize(optimizer)
        state = optimizer_variables(optimizer)
        record["optimizer_weights"] = len(state)
        arrays.update({f"o{i}": v.numpy() for i, v in enumerate(state)})
    _write(path, record, arrays)


def _write(path: Path, record: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write ``record`` (as ``model.json``) and ``arrays`` (as ``weights.npz``) to the zip
    archive ``path``, through a temporary file synced to disk and moved into place."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = _create_temporary(path)
    try:
        with os.fdopen(handle, "wb") as file:
            with zipfile.ZipFile(file, "w") as archive:
                archive.writestr("model.json", json.dumps(record, default=float))
                archive.writestr("weights.npz", buffer.getvalue())
            file.flush()
            os.fsync(file.fileno())  # on disk before it replaces the earlier file
        if path.exists():  # as `open(path, "wb")` would, keep the replaced file's mode
            os.chmod(temporary, stat.S_IMODE(path.stat().st_mode))
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _create_temporary(path: Path) -> tuple[int, Path]:
    """Create a new hidden file next to ``path``, with the mode a plain ``open(path, "wb")``
    gives (``0o666`` less the umask; ``tempfile.mkstemp`` gives ``0o600``).

    Returns
    -------
    handle : int
        The file descriptor, open for writing.
    temporary : Path
        The file's path.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:
            continue
    raise FileExistsError(f"No free temporary file name next to {path}.")


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
    version = record.get("format_version")
    if isinstance(version, int) and version > _FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer nfbook (file format version "
                         f"{version}; this nfbook reads versions 1 to {_FORMAT_VERSION}): "
                         "upgrade nfbook to load it.")
    if version not in range(1, _FORMAT_VERSION + 1):
        raise ValueError(f"{path} has an unknown nfbook file format version {version!r}.")
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


def _restore_base(base: tfd.Distribution, record: dict[str, Any],
                  arrays: dict[str, np.ndarray], path: Path) -> None:
    """Set the variables of ``base``, the base passed to :func:`load`, from the file's arrays
    ``b0``, ``b1``... (a file of format version 1 saved none)."""
    if "base_weights" not in record:
        return
    variables = list(base.variables)
    shapes = [list(v.shape) for v in variables]
    saved_shapes = [shape for _, shape in record["base_weights"]]
    if shapes != saved_shapes:
        raise ValueError(f"The base passed in ({type(base).__name__} {base.name!r}) does not "
                         f"match the one saved in {path}: it has {len(shapes)} variables with "
                         f"shapes {shapes}, the file has {len(saved_shapes)} with shapes "
                         f"{saved_shapes}. Pass a base built the same way as the saved one.")
    for i, variable in enumerate(variables):
        variable.assign(arrays[f"b{i}"])


def _check_probe(model: FlowModel, record: dict[str, Any], path: Path) -> None:
    """Check that ``model`` gives the probe points the log-densities saved with them (NaN or
    infinity where they were NaN or the same infinity)."""
    points = record.get("probe_points")  # none in format version 1
    points = (_gaussian_probe_points(model.ndim) if points is None
              else np.asarray(points, dtype=np.float32).reshape(-1, model.ndim))
    log_prob = _score(model, points)
    saved = np.asarray(record["probe_log_prob"], dtype=np.float32)
    wrong = ~np.isclose(log_prob, saved, rtol=1e-5, atol=1e-5, equal_nan=True)
    if wrong.any():
        difference = np.abs(log_prob - saved)[wrong].max()
        raise ValueError(f"The model loaded from {path} does not reproduce its saved "
                         f"log-densities (max difference {difference:.3g}, at {wrong.sum()} "
                         f"of {wrong.size} probe points): the bijector or base passed in "
                         "differs from the saved one.")


def load(
    path: str | os.PathLike,
    bijector: tfb.Bijector | None = None,
    base: tfd.Distribution | None = None,
) -> FlowModel:
    """Load a model written by :meth:`FlowModel.save`, and check it scores as it did.

    The flow is rebuilt from the recorded builder and arguments (or from ``bijector``),
    its variables and those of the base are set from the file, the optimizer is restored with
    its state, and the log-densities of the recorded probe points must match those saved, so
    a model that loads is the model that was saved. Files of format versions 1 to 3 load;
    those of nfbook 0.1.0 (versions 1 and 2) record their default permutations by a seed
    only, and are rebuilt with the permutations that version drew from it.

    Parameters
    ----------
    path : str or os.PathLike
        File written by :meth:`FlowModel.save`.
    bijector : tfb.Bijector, optional
        Required when the saved flow was not made by an nfbook builder: a new bijector built
        the same way (its variables are overwritten).
    base : tfd.Distribution, optional
        Required when the saved model had a custom base distribution: a base built the same
        way (the base's variables are saved: they are set from the file, e.g. a trained
        ``loc``).

    Returns
    -------
    FlowModel

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not an nfbook model or was written by a newer nfbook, a required
        ``bijector``/``base`` is missing, the variables do not match the rebuilt flow or the
        base passed in, or the reloaded model scores differently.

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
    if base is not None:
        _restore_base(base, record, arrays, path)
    if record["optimizer"] is not None:
        model.compile(optimizer=keras.optimizers.deserialize(record["optimizer"]))
        _restore_optimizer_state(model, record["optimizer_weights"], arrays, path)
    _check_probe(model, record, path)
    return model
