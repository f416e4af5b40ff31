"""Density images of 2-D models: the grid, one panel with its colour bar, panels on one scale.

:mod:`nfbook.plot` re-exports everything public here; use it through ``nfbook.plot``.
"""

from __future__ import annotations

__all__ = ["densities", "density", "density_grid"]

import math
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.image import AxesImage

from nfbook.checks import check_positive_int, check_real

_Extent = tuple[float, float, float, float]

#: Label of the colour bars.
COLORBAR_LABEL = "density $p(x)$"
_COLORBAR_PLACES = ("right", "left", "top", "bottom", None)


def check_extent(extent: Any) -> _Extent:
    """``extent`` as four finite floats ``(xmin, xmax, ymin, ymax)``, increasing in pairs.

    Raises
    ------
    ValueError
        If ``extent`` is not four finite numbers with ``xmin < xmax`` and ``ymin < ymax``.
    """
    try:
        values = tuple(float(v) for v in extent)
    except (TypeError, ValueError):
        values = ()
    if (
        len(values) != 4
        or not all(math.isfinite(v) for v in values)
        or not (values[0] < values[1] and values[2] < values[3])
    ):
        raise ValueError(
            f"`extent` must be four finite numbers (xmin, xmax, ymin, ymax) with xmin < xmax "
            f"and ymin < ymax, got {extent!r}."
        )
    return values


def new_axes(ax: Axes | None) -> Axes:
    """``ax``, or the Axes of a new figure when ``ax`` is None."""
    return plt.subplots()[1] if ax is None else ax


def _not_2d(model: Any) -> str | None:
    """How ``model`` says its points are not 2-D (``ndim`` or ``event_shape``), else None."""
    ndim = getattr(model, "ndim", None)
    if isinstance(ndim, (int, np.integer)) and not isinstance(ndim, bool):
        return None if ndim == 2 else f"ndim={int(ndim)}"
    shape = getattr(model, "event_shape", None)
    dims = shape.as_list() if hasattr(shape, "as_list") else None
    if dims is None or dims == [2] or dims == [None]:
        return None
    return f"event shape {dims}"


def _log_prob_fn(model: Any, context: Any = None) -> Callable[[np.ndarray], Any]:
    """The ``log_prob`` of a 2-D ``model`` (its method, or ``model`` itself if a callable);
    given one ``context`` row, that of a conditional model at that context."""
    problem = _not_2d(model)
    if problem is not None:
        raise ValueError(
            f"Density plots need a model of 2-D points; this {type(model).__name__} has "
            f"{problem}. For a higher-dimensional model, scatter two coordinates of its "
            f"samples instead, e.g. `plot.samples(model.sample(2000)[:, :2])`."
        )
    log_prob = getattr(model, "log_prob", None)
    if context is not None:
        if getattr(model, "context_dim", None) is None:
            raise ValueError(f"A `context` was given, but this {type(model).__name__} is not "
                             "a conditional nfbook.FlowModel.")
        row = np.asarray(context, dtype=np.float32).reshape(1, -1)
        return lambda points: log_prob(points, context=np.repeat(row, len(points), axis=0))
    if callable(log_prob):
        return log_prob
    if callable(model):
        return model
    raise TypeError(
        f"Expected an object with a `log_prob(points)` method (a tfd.Distribution, a "
        f"FlowModel) or a callable, got {type(model).__name__}."
    )


def density_grid(
    log_prob: Any,
    extent: Sequence[float] = (-3.0, 3.0, -3.0, 3.0),
    resolution: int = 200,
    batch_size: int = 20000,
    context: Any = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Evaluate a density on the centres of a ``resolution x resolution`` grid of cells.

    The rectangle ``extent`` :math:`= (x_{\min}, x_{\max}, y_{\min}, y_{\max})` is cut into
    cells of size :math:`\Delta x = (x_{\max} - x_{\min}) / r` by
    :math:`\Delta y = (y_{\max} - y_{\min}) / r`, and :math:`p = \exp(\log p)` is evaluated at
    the cell centres, ``batch_size`` points per call. So the midpoint rule
    :math:`\int p \approx \Delta x \, \Delta y \sum_{ij} p_{ij}` is
    ``p.sum() * cell_area``; it is close to 1 for a normalised density whose mass lies
    inside ``extent``.

    Parameters
    ----------
    log_prob : object with ``log_prob`` or callable
        Anything whose method ``log_prob(points)`` (or, without one, the object itself called
        as ``log_prob(points)``) takes a float32 array of shape ``(m, 2)`` and returns ``m``
        log-densities, e.g. a ``tfd.Distribution`` with event shape ``[2]`` or a ``FlowModel``
        with ``ndim=2``.
    extent : sequence of 4 floats
        ``(xmin, xmax, ymin, ymax)`` with ``xmin < xmax`` and ``ymin < ymax``.
    resolution : int
        Cells per side :math:`r`, ``>= 2``.
    batch_size : int
        Points per ``log_prob`` call, ``>= 1``; bounds the memory used.
    context : array-like, optional
        For a conditional :class:`nfbook.FlowModel`, the one context (shape ``(k,)`` or
        ``(1, k)``) at which to evaluate :math:`p(x \mid c)`.

    Returns
    -------
    xx, yy : numpy.ndarray
        float32 arrays of shape ``(resolution, resolution)``, the cell centres; ``xx`` varies
        along columns and ``yy`` along rows, row 0 at ``ymin`` (as ``imshow(origin="lower")``).
    p : numpy.ndarray
        float64 array of shape ``(resolution, resolution)``, the density at the centres
        (NaN where ``log_prob`` returned NaN).

    Raises
    ------
    TypeError
        If ``log_prob`` has no ``log_prob`` method and is not callable.
    ValueError
        If the model's points are not 2-D (its ``ndim`` or ``event_shape`` says so), if
        ``extent`` or ``resolution`` is invalid, or ``log_prob`` does not return one value
        per point.

    Examples
    --------
    >>> import tensorflow_probability as tfp
    >>> normal = tfp.distributions.MultivariateNormalDiag(loc=[0.0, 0.0])
    >>> extent = (-6, 6, -6, 6)
    >>> xx, yy, p = density_grid(normal, extent, resolution=100)
    >>> xx.shape, p.shape
    ((100, 100), (100, 100))
    >>> cell_area = (12 / 100) ** 2
    >>> bool(abs(p.sum() * cell_area - 1) < 1e-3)
    True
    """
    fn = _log_prob_fn(log_prob, context)
    xmin, xmax, ymin, ymax = check_extent(extent)
    resolution = check_positive_int("resolution", resolution, 2)
    batch_size = check_positive_int("batch_size", batch_size, 1)
    dx, dy = (xmax - xmin) / resolution, (ymax - ymin) / resolution
    xs = xmin + dx * (np.arange(resolution) + 0.5)
    ys = ymin + dy * (np.arange(resolution) + 0.5)
    xx, yy = (a.astype(np.float32) for a in np.meshgrid(xs, ys))
    points = np.stack([xx.ravel(), yy.ravel()], axis=1)
    chunks = []
    for start in range(0, len(points), batch_size):
        batch = points[start : start + batch_size]
        values = np.asarray(fn(batch), dtype=np.float64)
        if values.shape != (len(batch),):
            raise ValueError(
                f"`log_prob` returned shape {values.shape} for {len(batch)} points of shape "
                f"{batch.shape}; expected ({len(batch)},): one log-density per point."
            )
        chunks.append(values)
    p = np.exp(np.concatenate(chunks)).reshape(resolution, resolution)
    return xx, yy, p


def _peak(p: np.ndarray) -> float:
    """The largest finite value of ``p``, or 1 when there is none above 0."""
    finite = p[np.isfinite(p)]
    top = float(finite.max()) if finite.size else 0.0
    return top if top > 0 else 1.0


def _draw(p: np.ndarray, limits: _Extent, ax: Axes, cmap: str, vmax: float) -> AxesImage:
    image = ax.imshow(p, origin="lower", extent=limits, aspect="equal", cmap=cmap, vmin=0.0,
                      vmax=vmax)
    ax.grid(False)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    return image


def density(
    model_or_distribution: Any,
    extent: Sequence[float] = (-3.0, 3.0, -3.0, 3.0),
    resolution: int = 200,
    ax: Axes | None = None,
    cmap: str = "viridis",
    vmax: float | None = None,
    colorbar: bool = True,
    context: Any = None,
) -> Axes:
    r"""Show the density :math:`p(x) = \exp \log p(x)` as an image over ``extent``.

    The values come from :func:`density_grid`; the image has ``origin="lower"`` and equal
    aspect, so pixel :math:`(i, j)` sits at the cell centre :math:`(x_j, y_i)`. Colours map
    :math:`[0, v_{\max}]` linearly, with :math:`v_{\max} = \max_{ij} p_{ij}` unless ``vmax``
    is given: pass the same ``vmax`` to panels that are compared, or use :func:`densities`.

    Parameters
    ----------
    model_or_distribution : object with ``log_prob`` or callable
        See ``log_prob`` in :func:`density_grid`; its points must be 2-D.
    extent : sequence of 4 floats
        ``(xmin, xmax, ymin, ymax)``.
    resolution : int
        Pixels per side, ``>= 2``.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure's Axes by default.
    cmap : str
        Colour map name.
    vmax : float, optional
        Density at the top of the colour scale, ``> 0``; higher values saturate.
    colorbar : bool
        Draw a colour bar beside ``ax`` (reachable as ``ax.images[0].colorbar``).
    context : array-like, optional
        For a conditional model, the context of the density shown, as in
        :func:`density_grid`.

    Returns
    -------
    matplotlib.axes.Axes

    Raises
    ------
    TypeError, ValueError
        As :func:`density_grid`; also if ``vmax`` is not a finite number ``> 0``.

    Examples
    --------
    >>> import tensorflow_probability as tfp
    >>> ax = density(tfp.distributions.MultivariateNormalDiag(loc=[0.0, 0.0]), resolution=20)
    >>> ax.images[0].get_array().shape, ax.images[0].colorbar is not None
    ((20, 20), True)
    >>> plt.close(ax.figure)
    """
    limits = check_extent(extent)
    top = None if vmax is None else check_real("vmax", vmax, positive=True)
    _, _, p = density_grid(model_or_distribution, limits, resolution, context=context)
    ax = new_axes(ax)
    image = _draw(p, limits, ax, cmap, _peak(p) if top is None else top)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, label=COLORBAR_LABEL)
    return ax


def densities(
    models: Sequence[Any],
    extent: Sequence[float] | Sequence[Sequence[float]] = (-3.0, 3.0, -3.0, 3.0),
    resolution: int = 200,
    axes: Sequence[Axes] | np.ndarray | None = None,
    cmap: str = "viridis",
    titles: Sequence[str] | None = None,
    colorbar: str | None = "right",
) -> list[Axes]:
    r"""Densities of several models side by side, on one colour scale with one colour bar.

    Every panel maps :math:`[0, v_{\max}]` to the same colours, with :math:`v_{\max}` the
    largest density over all panels, so equal colours mean equal densities across panels.

    Parameters
    ----------
    models : sequence
        Objects with ``log_prob`` or callables, as in :func:`density_grid`; at least one.
    extent : 4 floats, or one such sequence per model
        ``(xmin, xmax, ymin, ymax)`` shared by every panel, or one per panel.
    resolution : int
        Pixels per side, ``>= 2``.
    axes : sequence of matplotlib.axes.Axes, optional
        One Axes per model; by default a new figure with one row of panels.
    cmap : str
        Colour map name.
    titles : sequence of str, optional
        One title per panel.
    colorbar : {"right", "left", "top", "bottom"} or None
        Where the shared colour bar goes, beside all the panels; None draws none.

    Returns
    -------
    list of matplotlib.axes.Axes

    Raises
    ------
    TypeError, ValueError
        As :func:`density_grid`; ``ValueError`` also if ``models`` is empty, ``axes``,
        ``titles`` or a list of extents does not hold one entry per model, or ``colorbar`` is
        not one of the places above.

    Examples
    --------
    >>> import tensorflow_probability as tfp
    >>> tfd = tfp.distributions
    >>> wide = tfd.MultivariateNormalDiag(loc=[0.0, 0.0], scale_diag=[2.0, 2.0])
    >>> narrow = tfd.MultivariateNormalDiag(loc=[0.0, 0.0])
    >>> axes = densities([wide, narrow], resolution=21, titles=["wide", "narrow"])
    >>> [ax.images[0].get_clim() == axes[1].images[0].get_clim() for ax in axes]
    [True, True]
    >>> plt.close(axes[0].figure)
    """
    models = list(models)
    if not models:
        raise ValueError("`models` is empty; expected at least one model to plot.")
    if colorbar not in _COLORBAR_PLACES:
        raise ValueError(f"`colorbar` must be one of {_COLORBAR_PLACES}, got {colorbar!r}.")
    k = len(models)
    try:
        shared = all(np.ndim(v) == 0 for v in extent)
    except TypeError:
        shared = True
    if shared:
        extents = [check_extent(extent)] * k
    else:
        extents = [check_extent(e) for e in _one_per_model("extent", extent, k)]
    names = None if titles is None else _one_per_model("titles", titles, k)
    if axes is None:
        axes = plt.subplots(1, k, figsize=(3.4 * k + 1, 3.2), squeeze=False,
                            layout="constrained")[1][0]
    axes = _one_per_model("axes", np.ravel(axes), k)
    grids = [density_grid(m, e, resolution)[2] for m, e in zip(models, extents)]
    top = max(_peak(p) for p in grids)
    images = [_draw(p, e, ax, cmap, top) for p, e, ax in zip(grids, extents, axes)]
    for ax, title in zip(axes, names or []):
        ax.set_title(title)
    if colorbar is not None:
        axes[0].figure.colorbar(images[0], ax=axes, location=colorbar, label=COLORBAR_LABEL)
    return axes


def _one_per_model(name: str, values: Any, k: int) -> list[Any]:
    """``values`` as a list, after checking it holds one entry per model."""
    try:
        items = list(values)
    except TypeError:
        items = None
    if items is None or len(items) != k:
        raise ValueError(f"`{name}` must hold one entry per model ({k}), got {values!r}.")
    return items
