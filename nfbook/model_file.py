"""nfbook's model file: one zip archive holding a flow's record and its arrays."""

from __future__ import annotations

__all__ = [
    "FORMAT_VERSION",
    "base_weights",
    "flow_weights",
    "gaussian_probe_points",
    "probe_contexts",
    "read_model_file",
    "score",
    "write_model",
]

import io
import json
import os
import secrets
import stat
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

from nfbook.optimizer_state import optimizer_variables
from nfbook.specs import spec_of

_FORMAT = "nfbook-flow-model"
# 2: probe points sampled from the model, the base's variables; 3: the bijector record holds
# the resolved permutations between layers and their scheme (nfbook.permutations); 4: a
# conditional flow, with its context width and probe contexts (an unconditional model is still
# written as version 3, which earlier nfbooks read)
FORMAT_VERSION = 4
_PROBE_SIZE = 64
_PROBE_SEED = (20240917, 1)  # stateless: the same probe points at every save


def flow_weights(model: Any) -> list[tf.Variable]:
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


def base_weights(model: Any) -> list[tf.Variable]:
    """The variables of ``model``'s base distribution (none for the default base)."""
    return list(model.distribution.distribution.variables)


def gaussian_probe_points(ndim: int) -> np.ndarray:
    """The fixed N(0, I) probe points of format version 1, which stored none."""
    return np.random.default_rng(12345).normal(size=(_PROBE_SIZE, ndim)).astype(np.float32)


def probe_contexts(context_dim: int | None) -> np.ndarray | None:
    """Fixed N(0, I) contexts for a conditional flow's probe points (``None`` if
    unconditional)."""
    if context_dim is None:
        return None
    return np.random.default_rng(54321).normal(size=(_PROBE_SIZE, context_dim)).astype(
        np.float32)


def _sampled_probe_points(model: Any, context: np.ndarray | None) -> np.ndarray:
    """Probe points drawn from ``model`` itself with a fixed seed, so inside its support
    (where N(0, I) points need not be, e.g. for a flow ending in ``tfb.Exp``)."""
    points = model.sample(_PROBE_SIZE, seed=_PROBE_SEED, context=context)
    return points.numpy().astype(np.float32)


def score(model: Any, points: np.ndarray, context: np.ndarray | None = None) -> np.ndarray:
    """``log p`` of the probe points (given their contexts), without
    :meth:`nfbook.FlowModel.log_prob`'s data checks (a sample may overflow to infinity)."""
    x = tf.constant(points, dtype=tf.float32)
    return model.call(x if context is None else (x, tf.constant(context))).numpy()


def write_model(model: Any, path: str | os.PathLike, overwrite: bool = True) -> None:
    """Write ``model`` to the single file ``path`` in nfbook's format, as
    :func:`nfbook.saving.save` describes it (that function checks ``model`` first).

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is ``False``.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it.")
    weights = flow_weights(model)
    base = base_weights(model)
    context = probe_contexts(model.context_dim)
    probe = _sampled_probe_points(model, context)
    record: dict[str, Any] = {
        "format": _FORMAT,
        "format_version": 3 if context is None else FORMAT_VERSION,
        "ndim": model.ndim,
        "bijector": spec_of(model.bijector),
        "default_base": model.default_base,
        "average_weights": model.average_weights,
        "weights": [[w.name, list(w.shape)] for w in weights],
        "base_weights": [[w.name, list(w.shape)] for w in base],
        "probe_points": probe.tolist(),
        "probe_log_prob": score(model, probe, context).tolist(),  # NaN, inf kept as such
        "optimizer": None,
    }
    if context is not None:
        record["context_dim"] = model.context_dim
        record["probe_context"] = context.tolist()
    arrays = {f"w{i}": w.numpy() for i, w in enumerate(weights)}
    arrays.update({f"b{i}": w.numpy() for i, w in enumerate(base)})
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


def read_model_file(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
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
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer nfbook (file format version "
                         f"{version}; this nfbook reads versions 1 to {FORMAT_VERSION}): "
                         "upgrade nfbook to load it.")
    if version not in range(1, FORMAT_VERSION + 1):
        raise ValueError(f"{path} has an unknown nfbook file format version {version!r}.")
    return record, arrays
