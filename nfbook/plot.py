"""Plots for the book: house style, densities, samples, loss curves and the stages of a flow."""

from __future__ import annotations

__all__ = [
    "PALETTE",
    "density",
    "density_grid",
    "flow_stages",
    "loss",
    "samples",
    "stage_samples",
    "style",
]

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import tensorflow as tf
import tensorflow_probability as tfp
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator

from nfbook.checks import check_data, check_positive_int

tfb = tfp.bijectors

#: The book's colour cycle (blue, orange, green, red, purple), colour-blind friendly.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7")

_Extent = tuple[float, float, float, float]


def style() -> None:
    """Apply the book's house style to matplotlib's global ``rcParams``.

    A seaborn ``whitegrid`` theme in the ``notebook`` context with :data:`PALETTE` as the
    colour cycle, readable font sizes, figures at 100 dpi on screen and 150 dpi when saved.
    Call it once at the top of a notebook; importing this module changes nothing.

    Examples
    --------
    >>> import matplotlib as mpl
    >>> with mpl.rc_context():
    ...     style()
    ...     mpl.rcParams["figure.dpi"]
    100.0
    """
    sns.set_theme(
        context="notebook",
        style="whitegrid",
        palette=list(PALETTE),
        rc={
            "figure.dpi": 100,
            "savefig.dpi": 150,
            "savefig.bbox": "tight",
            "font.size": 11,
            "axes.titlesize": 12,
            "axes.labelsize": 11,
            "xtick.labelsize": 10,
            "ytick.labelsize": 10,
            "legend.fontsize": 10,
            "image.cmap": "viridis",
        },
    )


def _check_extent(extent: Any) -> _Extent:
    """``extent`` as four finite floats ``(xmin, xmax, ymin, ymax)``, increasing in pairs."""
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


def _log_prob_fn(model: Any) -> Callable[[np.ndarray], Any]:
    """The ``log_prob`` method of ``model``, or ``model`` itself if it is a plain callable."""
    log_prob = getattr(model, "log_prob", None)
    if callable(log_prob):
        return log_prob
    if callable(model):
        return model
    raise TypeError(
        f"Expected an object with a `log_prob(points)` method (a tfd.Distribution, a "
        f"FlowModel) or a callable, got {type(model).__name__}."
    )


def _new_axes(ax: Axes | None) -> Axes:
    return plt.subplots()[1] if ax is None else ax


def density_grid(
    log_prob: Any,
    extent: Sequence[float] = (-3.0, 3.0, -3.0, 3.0),
    resolution: int = 200,
    batch_size: int = 20000,
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
        log-densities, e.g. a ``tfd.Distribution`` with event shape ``[2]`` or a ``FlowModel``.
    extent : sequence of 4 floats
        ``(xmin, xmax, ymin, ymax)`` with ``xmin < xmax`` and ``ymin < ymax``.
    resolution : int
        Cells per side :math:`r`, ``>= 2``.
    batch_size : int
        Points per ``log_prob`` call, ``>= 1``; bounds the memory used.

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
        If ``extent`` or ``resolution`` is invalid, or ``log_prob`` does not return one value
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
    fn = _log_prob_fn(log_prob)
    xmin, xmax, ymin, ymax = _check_extent(extent)
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


def density(
    model_or_distribution: Any,
    extent: Sequence[float] = (-3.0, 3.0, -3.0, 3.0),
    resolution: int = 200,
    ax: Axes | None = None,
    cmap: str = "viridis",
) -> Axes:
    r"""Show the density :math:`p(x) = \exp \log p(x)` as an image over ``extent``.

    The values come from :func:`density_grid`; the image has ``origin="lower"`` and equal
    aspect, so pixel :math:`(i, j)` sits at the cell centre :math:`(x_j, y_i)`.

    Parameters
    ----------
    model_or_distribution : object with ``log_prob`` or callable
        See ``log_prob`` in :func:`density_grid`.
    extent : sequence of 4 floats
        ``(xmin, xmax, ymin, ymax)``.
    resolution : int
        Pixels per side, ``>= 2``.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure's Axes by default.
    cmap : str
        Colour map name.

    Returns
    -------
    matplotlib.axes.Axes

    Raises
    ------
    TypeError, ValueError
        As :func:`density_grid`.

    Examples
    --------
    >>> import tensorflow_probability as tfp
    >>> ax = density(tfp.distributions.MultivariateNormalDiag(loc=[0.0, 0.0]), resolution=20)
    >>> ax.images[0].get_array().shape
    (20, 20)
    >>> plt.close(ax.figure)
    """
    limits = _check_extent(extent)
    _, _, p = density_grid(model_or_distribution, limits, resolution)
    ax = _new_axes(ax)
    ax.imshow(p, origin="lower", extent=limits, aspect="equal", cmap=cmap)
    ax.grid(False)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    return ax


def samples(
    x: Any,
    ax: Axes | None = None,
    s: float = 2.0,
    alpha: float = 0.5,
    color: Any = None,
    extent: Sequence[float] | None = None,
) -> Axes:
    """Scatter plot of 2-D points with equal aspect.

    Parameters
    ----------
    x : array-like or tf.Tensor
        Points, shape ``(n, 2)``, all finite.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure's Axes by default.
    s : float
        Marker area in points squared.
    alpha : float
        Marker opacity.
    color : color, optional
        Marker colour; the next colour of the Axes' cycle by default.
    extent : sequence of 4 floats, optional
        ``(xmin, xmax, ymin, ymax)`` axis limits; matplotlib's autoscaling by default.

    Returns
    -------
    matplotlib.axes.Axes

    Raises
    ------
    TypeError
        If ``x`` does not hold real numbers.
    ValueError
        If ``x`` is not of shape ``(n, 2)`` with ``n >= 1``, has NaN or infinite rows (the
        message says how many), or ``extent`` is invalid.

    Examples
    --------
    >>> ax = samples(np.zeros((5, 2)), extent=(-1, 1, -1, 1))
    >>> ax.collections[0].get_offsets().shape, tuple(map(float, ax.get_xlim()))
    ((5, 2), (-1.0, 1.0))
    >>> plt.close(ax.figure)
    """
    points = check_data(x, 2)
    limits = None if extent is None else _check_extent(extent)
    ax = _new_axes(ax)
    ax.scatter(points[:, 0], points[:, 1], s=s, alpha=alpha, color=color, linewidths=0,
               rasterized=True)
    if limits is not None:
        ax.set_xlim(limits[0], limits[1])
        ax.set_ylim(limits[2], limits[3])
    ax.set_aspect("equal")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    return ax


def loss(history: Any, ax: Axes | None = None, floor: float | None = None) -> Axes:
    """Training (and validation) negative log-likelihood against the epoch.

    Parameters
    ----------
    history : keras.callbacks.History or mapping
        A ``History`` returned by ``fit`` or its ``history`` dict; ``"loss"`` is required and
        ``"val_loss"`` is drawn when present. Epochs are numbered from 1.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure's Axes by default.
    floor : float, optional
        A lower bound to draw as a dashed horizontal line, labelled "entropy floor" (the
        NLL of a perfect model is the entropy of the data distribution).

    Returns
    -------
    matplotlib.axes.Axes

    Raises
    ------
    TypeError
        If ``history`` is neither a ``History`` nor a mapping, or ``floor`` is not a number.
    ValueError
        If ``"loss"`` is missing or empty, ``"val_loss"`` has another length, or ``floor``
        is not finite.

    Examples
    --------
    >>> ax = loss({"loss": [2.0, 1.5, 1.2], "val_loss": [2.1, 1.6, 1.4]}, floor=1.0)
    >>> [line.get_label() for line in ax.get_lines()]
    ['train', 'validation', 'entropy floor']
    >>> plt.close(ax.figure)
    """
    logs = getattr(history, "history", history)
    if not isinstance(logs, Mapping):
        raise TypeError(
            f"`history` must be a keras History or a dict of lists, got {type(history).__name__}."
        )
    if len(logs.get("loss", ())) == 0:
        raise ValueError(
            f"`history` has no 'loss' values; expected a non-empty 'loss' list, got keys "
            f"{sorted(logs)}."
        )
    train = np.asarray(logs["loss"], dtype=float)
    epochs = np.arange(1, len(train) + 1)
    val = logs.get("val_loss")
    if val is not None and len(val) != len(train):
        raise ValueError(
            f"`history` has {len(val)} 'val_loss' values for {len(train)} 'loss' values; "
            f"expected one of each per epoch."
        )
    if floor is not None and (
        isinstance(floor, bool) or not isinstance(floor, (int, float, np.integer, np.floating))
    ):
        raise TypeError(f"`floor` must be a number, got {floor!r}.")
    if floor is not None and not math.isfinite(floor):
        raise ValueError(f"`floor` must be a finite number, got {floor!r}.")
    ax = _new_axes(ax)
    ax.plot(epochs, train, label="train")
    if val is not None:
        ax.plot(epochs, np.asarray(val, dtype=float), label="validation")
    if floor is not None:
        ax.axhline(floor, color="0.3", linestyle="--", linewidth=1, label="entropy floor")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("NLL (nats)")
    ax.legend()
    return ax


def stage_samples(model: Any, n: int = 2000, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    r"""Samples of a flow after each of its stages, from the base distribution to the data.

    With ``model.bijector`` :math:`= f_0 \circ f_1 \circ \dots \circ f_{K-1}` (a ``tfb.Chain``
    of ``bijectors[0], ..., bijectors[K-1]``; a lone bijector counts as a chain of one), draw
    :math:`z \sim p_z` from the base ``model.distribution.distribution`` and apply
    :math:`f_{K-1}, \dots, f_0` in turn. ``tfb.Permute`` stages are applied but not recorded.
    The last array is distributed as the model (and equals ``model.distribution.sample(n,
    seed=(0, seed))``).

    Parameters
    ----------
    model : object
        Has ``.distribution`` (a ``tfd.TransformedDistribution``) and ``.bijector``, e.g. a
        ``FlowModel``.
    n : int
        Number of samples, ``>= 1``.
    seed : int
        Seed ``>= 0``; the base is sampled with the stateless seed ``(0, seed)``, so equal
        seeds give equal samples.

    Returns
    -------
    list of (str, numpy.ndarray)
        ``("base", z)`` then, per recorded stage, ``("<name> [i]", x)`` where ``i`` indexes
        ``model.bijector.bijectors`` (just ``"<name>"`` for a lone bijector); each array has
        shape ``(n, D)``.

    Raises
    ------
    TypeError
        If ``model`` lacks ``.distribution.distribution`` or ``.bijector``, or ``n`` or
        ``seed`` is not an integer.
    ValueError
        If ``n < 1`` or ``seed < 0``.

    Examples
    --------
    >>> import tensorflow_probability as tfp
    >>> from types import SimpleNamespace
    >>> tfb, tfd = tfp.bijectors, tfp.distributions
    >>> chain = tfb.Chain([tfb.Shift([1.0, 2.0]), tfb.Scale([2.0, 3.0])])
    >>> base = tfd.MultivariateNormalDiag(loc=[0.0, 0.0])
    >>> model = SimpleNamespace(distribution=tfd.TransformedDistribution(base, chain),
    ...                         bijector=chain)
    >>> stages = stage_samples(model, n=4)
    >>> [name for name, _ in stages]
    ['base', 'scale [1]', 'shift [0]']
    >>> bool(np.allclose(stages[2][1], stages[0][1] * [2, 3] + [1, 2]))
    True
    """
    n = check_positive_int("n", n, 1)
    seed = check_positive_int("seed", seed, 0)
    base = getattr(getattr(model, "distribution", None), "distribution", None)
    bijector = getattr(model, "bijector", None)
    if base is None or not isinstance(bijector, tfb.Bijector):
        raise TypeError(
            f"`model` must have `.distribution` (a tfd.TransformedDistribution) and "
            f"`.bijector` (a tfb.Bijector), got {type(model).__name__}."
        )
    # nfbook's chains are private tfb _Chain instances (isinstance(x, tfb.Chain) is False).
    parts = getattr(bijector, "bijectors", None)
    if parts is None:
        labelled = [(bijector.name, bijector)]
    else:
        labelled = [(f"{b.name} [{i}]", b) for i, b in enumerate(parts)]
    z = base.sample(n, seed=tf.constant([0, seed], dtype=tf.int32))
    stages = [("base", np.asarray(z))]
    for label, b in reversed(labelled):
        z = b.forward(z)
        if not isinstance(b, tfb.Permute):
            stages.append((label, np.asarray(z)))
    return stages


def flow_stages(
    model: Any,
    n: int = 2000,
    seed: int = 0,
    axes: Sequence[Axes] | np.ndarray | None = None,
    extent: Sequence[float] | None = None,
) -> list[Axes]:
    """One scatter panel per stage of a flow, base distribution first, data last.

    The samples come from :func:`stage_samples`; each panel is titled with its label, e.g.
    ``"maf_0 [4]"`` for ``model.bijector.bijectors[4]``.

    Parameters
    ----------
    model : object
        Has ``.distribution`` (a ``tfd.TransformedDistribution``) and ``.bijector``, e.g. a
        ``FlowModel`` with 2-D events.
    n : int
        Number of samples, ``>= 1``.
    seed : int
        Seed ``>= 0`` for the base samples.
    axes : sequence of matplotlib.axes.Axes, optional
        One Axes per stage; by default a new figure with one row of square panels.
    extent : sequence of 4 floats, optional
        ``(xmin, xmax, ymin, ymax)`` limits for every panel; autoscaled by default.

    Returns
    -------
    list of matplotlib.axes.Axes

    Raises
    ------
    TypeError, ValueError
        As :func:`stage_samples` and :func:`samples`; ``ValueError`` also if ``axes`` does not
        hold one Axes per stage.

    Examples
    --------
    >>> import tensorflow_probability as tfp
    >>> from types import SimpleNamespace
    >>> tfb, tfd = tfp.bijectors, tfp.distributions
    >>> chain = tfb.Chain([tfb.Shift([1.0, 2.0]), tfb.Permute([1, 0]), tfb.Scale([2.0, 3.0])])
    >>> base = tfd.MultivariateNormalDiag(loc=[0.0, 0.0])
    >>> model = SimpleNamespace(distribution=tfd.TransformedDistribution(base, chain),
    ...                         bijector=chain)
    >>> axes = flow_stages(model, n=100)
    >>> [ax.get_title() for ax in axes]
    ['base', 'scale [2]', 'shift [0]']
    >>> plt.close(axes[0].figure)
    """
    stages = stage_samples(model, n, seed)
    if extent is not None:
        _check_extent(extent)
    if axes is None:
        k = len(stages)
        axes = plt.subplots(1, k, figsize=(3 * k, 3.2), squeeze=False, layout="constrained")[1][0]
    axes = list(np.ravel(axes))
    if len(axes) != len(stages):
        raise ValueError(
            f"`axes` holds {len(axes)} Axes for {len(stages)} stages "
            f"({[label for label, _ in stages]}); expected one Axes per stage."
        )
    for k, (ax, (label, x)) in enumerate(zip(axes, stages)):
        samples(x, ax=ax, extent=extent)
        ax.set_title(label)
        if k:
            ax.set_ylabel("")
    return axes
