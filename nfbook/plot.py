"""Plots for the book: house style, densities, samples, loss curves and the stages of a flow.

The density images (:func:`density_grid`, :func:`density`, :func:`densities`) live in
:mod:`nfbook.plot_density` and are re-exported here.
"""

from __future__ import annotations

__all__ = [
    "PALETTE",
    "densities",
    "density",
    "density_grid",
    "flow_stages",
    "loss",
    "samples",
    "stage_samples",
    "style",
]

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import tensorflow as tf
import tensorflow_probability as tfp
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator

from nfbook.checks import check_data, check_positive_int
from nfbook.plot_density import check_extent as _check_extent
from nfbook.plot_density import densities, density, density_grid, new_axes

tfb = tfp.bijectors

#: The book's colour cycle (blue, orange, green, red, purple), colour-blind friendly.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7")


def style() -> None:
    """Apply the book's house style to matplotlib's global ``rcParams``.

    A seaborn ``whitegrid`` theme in the ``notebook`` context with :data:`PALETTE` as the
    colour cycle, readable font sizes, figures at 100 dpi on screen and 150 dpi when saved,
    on an explicit white face (a page in dark mode would otherwise show a transparent
    figure's black axes on black). Call it once at the top of a notebook; importing this
    module changes nothing.

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
            "figure.facecolor": "white",
            "savefig.facecolor": "white",
            "font.size": 11,
            "axes.titlesize": 12,
            "axes.labelsize": 11,
            "xtick.labelsize": 10,
            "ytick.labelsize": 10,
            "legend.fontsize": 10,
            "image.cmap": "viridis",
        },
    )


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
    ax = new_axes(ax)
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
    ax = new_axes(ax)
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
