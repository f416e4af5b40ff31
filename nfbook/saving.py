"""Save a FlowModel to one file and load it back, checked against a recorded probe."""

from __future__ import annotations

__all__ = ["BUILDERS", "load", "rebuild", "save"]

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_probability as tfp
import tf_keras as keras

from nfbook.bijectors import affine, iaf, maf, nice, realnvp
from nfbook.continuous import ffjord
from nfbook.model import FlowModel
from nfbook.model_file import (
    flow_weights,
    gaussian_probe_points,
    read_model_file,
    score,
    write_model,
)
from nfbook.optimizer_state import build_optimizer
from nfbook.splines import nsf

tfb = tfp.bijectors
tfd = tfp.distributions

BUILDERS: dict[str, Callable[..., tfb.Bijector]] = {
    "affine": affine,
    "ffjord": ffjord,
    "iaf": iaf,
    "maf": maf,
    "nice": nice,
    "nsf": nsf,
    "realnvp": realnvp,
}
"""The builders whose records :func:`load` rebuilds, by the name :func:`nfbook.specs.spec_of`
records."""

_SCHEME_1_BUILDERS = ("maf", "iaf", "realnvp", "nice")  # builders of nfbook 0.1.0


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
    write_model(model, path, overwrite=overwrite)


def rebuild(spec: dict[str, Any]) -> tfb.Bijector:
    """Build a fresh bijector (new, untrained variables) from a :func:`spec_of` record.

    Parameters
    ----------
    spec : dict
        ``{"builder": name, "kwargs": {...}}``, with ``"permutation_scheme"`` for a stack
        recorded by :func:`attach_flow_spec`. A MAF, IAF, RealNVP or NICE record without it
        and without ``permutation`` is one of nfbook 0.1.0, whose default permutations were
        drawn from the seed: it is rebuilt with those (``permutation="random"``).

    Returns
    -------
    tfb.Bijector

    Raises
    ------
    ValueError
        If the builder name is unknown or the arguments are missing.

    Examples
    --------
    >>> from nfbook.specs import spec_of
    >>> b = rebuild(spec_of(realnvp(2, num_layers=2)))
    >>> len(b.bijectors)
    3
    """
    name = spec.get("builder")
    if name not in BUILDERS:
        raise ValueError(f"Unknown builder {name!r} in the saved record; expected one of "
                         f"{sorted(BUILDERS)}.")
    kwargs = spec.get("kwargs")
    if not isinstance(kwargs, dict):
        raise ValueError(f"The saved record of builder {name!r} has no arguments (a dict under "
                         f"'kwargs'), got {kwargs!r}.")
    if (name in _SCHEME_1_BUILDERS and "permutation_scheme" not in spec
            and kwargs.get("permutation") is None):
        # A record of nfbook 0.1.0, whose default permutations were drawn from the seed.
        kwargs = {**kwargs, "permutation": "random"}
    return BUILDERS[name](**kwargs)


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
    points = (gaussian_probe_points(model.ndim) if points is None
              else np.asarray(points, dtype=np.float32).reshape(-1, model.ndim))
    context = record.get("probe_context")  # conditional flows only (version 4)
    if context is not None:
        context = np.asarray(context, dtype=np.float32).reshape(len(points), -1)
    log_prob = score(model, points, context)
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
    a model that loads is the model that was saved (a conditional flow's with its context
    width, checked on recorded probe contexts). Files of format versions 1 to 4 load;
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
    record, arrays = read_model_file(path)
    if bijector is None:
        if record["bijector"] is None:
            raise ValueError(f"{path} holds a flow that no nfbook builder made; pass "
                             "`bijector=` built the same way as the saved one.")
        bijector = rebuild(record["bijector"])
    if base is None and not record["default_base"]:
        raise ValueError(f"{path} was saved with a custom base distribution; pass `base=`.")
    model = FlowModel(bijector, record["ndim"], base=base,
                      average_weights=record.get("average_weights", True),
                      context_dim=record.get("context_dim"))
    weights = flow_weights(model)
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
