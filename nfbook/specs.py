"""The records of how nfbook's builders made a bijector, from which a saved model is rebuilt."""

from __future__ import annotations

__all__ = ["attach_flow_spec", "attach_spec", "permutations_of", "spec_of"]

import json
from typing import Any

import tensorflow_probability as tfp

from nfbook.permutations import SCHEME

tfb = tfp.bijectors

_SPEC_ATTRIBUTE = "_nfbook_spec"


def attach_spec(bijector: tfb.Bijector, builder: str, **kwargs: Any) -> tfb.Bijector:
    """Record how ``bijector`` was built (builder name and JSON-able arguments), so that a
    saved model can be rebuilt exactly by :func:`nfbook.saving.rebuild`."""
    setattr(bijector, _SPEC_ATTRIBUTE, json.dumps({"builder": builder, "kwargs": kwargs}))
    return bijector


def spec_of(bijector: tfb.Bijector) -> dict[str, Any] | None:
    """Return the ``{"builder": ..., "kwargs": ...}`` record of an nfbook-built bijector.

    Parameters
    ----------
    bijector : tfb.Bijector
        Any bijector.

    Returns
    -------
    dict or None
        The builder's name and arguments, or ``None`` for a bijector not made by nfbook.

    Examples
    --------
    >>> from nfbook import maf
    >>> spec_of(maf(2, num_layers=1))["builder"]
    'maf'
    """
    text = getattr(bijector, _SPEC_ATTRIBUTE, None)
    return None if text is None else json.loads(text)


def permutations_of(chain: tfb.Bijector) -> list[list[int]]:
    """The permutations between the layers of a stack built by an nfbook builder, base side
    first (empty for a single layer or one dimension).

    Examples
    --------
    >>> from nfbook import realnvp
    >>> permutations_of(realnvp(4, hidden_units=(8,), num_layers=3))
    [[2, 3, 0, 1], [2, 3, 0, 1]]
    """
    return [b.permutation.numpy().tolist() for b in reversed(chain.bijectors)
            if isinstance(b, tfb.Permute)]


def attach_flow_spec(chain: tfb.Bijector, builder: str, **kwargs: Any) -> tfb.Bijector:
    """:func:`attach_spec` for a stack of layers: records, as ``permutation``, the resolved
    permutations between its layers (whatever the builder was given) and the permutation
    scheme, so that :func:`nfbook.saving.rebuild` makes the same flow under any later
    default scheme. A ``context_dim`` of ``None`` (an unconditional flow) is left out, so the
    record reads as one written before conditional flows existed."""
    if "context_dim" in kwargs and kwargs["context_dim"] is None:
        del kwargs["context_dim"]
    kwargs["permutation"] = permutations_of(chain)
    attach_spec(chain, builder, **kwargs)
    spec = spec_of(chain)
    spec["permutation_scheme"] = SCHEME
    setattr(chain, _SPEC_ATTRIBUTE, json.dumps(spec))
    return chain
