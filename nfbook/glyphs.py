"""Points spread uniformly inside the letters of a text: the data of chapter 7's letters."""

from __future__ import annotations

__all__ = ["text"]

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from matplotlib.font_manager import FontProperties
from matplotlib.path import Path
from matplotlib.textpath import TextPath

from nfbook.checks import check_positive_int, check_real

# Glyphs are laid out this many units high so that matplotlib's curve flattening, which
# works to about one unit, follows the outlines to ~0.1% of the letter height.
_GLYPH_SIZE = 1000.0
_TEXT_HALF_WIDTH = 2.0


@lru_cache(maxsize=16)
def _glyph_polygons(text: str) -> tuple[tuple[np.ndarray, int], ...]:
    """Closed outline polygons of ``text`` in DejaVu Sans Bold, each with its orientation sign."""
    font = FontProperties(family="DejaVu Sans", weight="bold")
    path = TextPath((0, 0), text, size=_GLYPH_SIZE, prop=font)
    polygons = []
    for poly in path.to_polygons(closed_only=True):
        x, y = poly[:, 0], poly[:, 1]
        area = 0.5 * np.sum(x[:-1] * y[1:] - x[1:] * y[:-1])  # shoelace, signed
        if area != 0:
            polygons.append((poly, int(np.sign(area))))
    return tuple(polygons)


def _inside_glyphs(points: np.ndarray, polygons: Sequence[tuple[np.ndarray, int]]) -> np.ndarray:
    """Non-zero winding rule: outer contours and holes run in opposite directions in fonts,
    so a point in a hole is inside two contours of opposite sign and its winding sums to 0."""
    winding = np.zeros(len(points), dtype=np.int64)
    for poly, sign in polygons:
        winding += sign * Path(poly, closed=True).contains_points(points)
    return winding != 0


def text(text: str = "SIGGRAPH", n: int = 10000, seed: int = 0, noise: float = 0.0) -> np.ndarray:
    """Points drawn uniformly inside the letters of ``text``.

    The outline of ``text`` in DejaVu Sans Bold (shipped with matplotlib) is taken from
    ``matplotlib.textpath.TextPath``; points are rejection-sampled uniformly from its bounding
    box and kept when inside the glyphs by the non-zero winding rule, so the holes of letters
    such as A, O, P, R stay empty. The cloud is then centred on the text's bounding box and
    scaled, keeping the aspect ratio, so that the text spans exactly :math:`[-2, 2]` in
    :math:`x_1`; finally isotropic Gaussian noise of standard deviation ``noise`` is added.

    Parameters
    ----------
    text : str
        The text to draw, one line, with at least one visible character.
    n : int
        Number of points, ``>= 1``.
    seed : int
        Random seed, ``>= 0``.
    noise : float
        Standard deviation of the Gaussian noise added after scaling, ``>= 0``.

    Returns
    -------
    numpy.ndarray
        Shape ``(n, 2)``, float32.

    Raises
    ------
    TypeError
        If ``text`` is not a string, ``n`` or ``seed`` not an integer, ``noise`` not a number.
    ValueError
        If ``text`` is empty or has no visible glyph, ``n < 1``, ``seed < 0``, or ``noise`` is
        negative or not finite.

    Examples
    --------
    >>> x = text("NF", n=500)
    >>> x.shape, x.dtype
    ((500, 2), dtype('float32'))
    >>> bool(np.abs(x[:, 0]).max() <= 2.0)
    True
    """
    if not isinstance(text, str):
        raise TypeError(f"`text` must be a string, got {text!r} of type {type(text).__name__}.")
    if not text.strip():
        raise ValueError(f"`text` must contain at least one visible character, got {text!r}.")
    n = check_positive_int("n", n, 1)
    noise = check_real("noise", noise)
    rng = np.random.default_rng(check_positive_int("seed", seed, 0))
    polygons = _glyph_polygons(text)
    if not polygons:
        raise ValueError(f"`text` {text!r} has no glyph outlines in DejaVu Sans to sample from.")
    vertices = np.concatenate([poly for poly, _ in polygons])
    low, high = vertices.min(axis=0), vertices.max(axis=0)

    kept: list[np.ndarray] = []
    count = 0
    while count < n:
        candidates = rng.uniform(low, high, size=(max(2 * n, 1000), 2))
        inside = candidates[_inside_glyphs(candidates, polygons)]
        kept.append(inside)
        count += len(inside)
    points = np.concatenate(kept)[:n]

    points = (points - (low + high) / 2) * (2 * _TEXT_HALF_WIDTH / (high[0] - low[0]))
    if noise > 0:
        points = points + rng.normal(scale=noise, size=points.shape)
    return points.astype(np.float32)
