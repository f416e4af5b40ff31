"""Notebook helper: glue computed values into the book's prose, and run anywhere else."""

from __future__ import annotations

__all__ = ["glue"]

from typing import Any


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
    """
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        return value
    myst_glue(name, value, display=display)
    return value
