"""Notebook helper: glue computed values into the book's prose, and run anywhere else."""

from __future__ import annotations

__all__ = ["glue"]

from typing import Any

import numpy as np


def glue(name: str, value: Any, display: bool = False) -> Any:
    """Store ``value`` under ``name`` for MyST's ``{glue:text}`` role, and return it.

    In the book build (myst-nb installed) this is :func:`myst_nb.glue`, so prose such as
    ``{glue:text}`nll:.3f``` shows the number the notebook computed. Where myst-nb is not
    installed (Colab, a plain Jupyter) it only returns ``value``.

    Parameters
    ----------
    name : str
        Key used in the prose.
    value : Any
        Number, string or figure.
    display : bool
        Also show the value in the notebook's output.

    Returns
    -------
    Any
        ``value``, unchanged.

    Examples
    --------
    >>> glue("answer", 42)
    42
    >>> glue("mean", np.float64(0.5))  # returned as given; glued as a Python float
    np.float64(0.5)
    """
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        return value
    # NumPy scalars print as "np.float64(...)" since NumPy 2, which {glue:text} cannot format.
    myst_glue(name, value.item() if isinstance(value, np.generic) else value, display=display)
    return value
