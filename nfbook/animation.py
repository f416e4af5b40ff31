"""The flow as taffy: an animation of samples moving through each bijector of a 2-D flow."""

from __future__ import annotations

__all__ = ["flow_animation", "offline_html", "stage_frames"]

import re
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.animation import FuncAnimation
from matplotlib.axes import Axes

from nfbook.checks import check_positive_int
from nfbook.plot import _check_extent, stage_samples


def stage_frames(
    model: Any, n: int = 1000, frames_per_stage: int = 8, seed: int = 0
) -> tuple[np.ndarray, list[str]]:
    r"""Positions of ``n`` samples in every frame of the flow's animation, with a title each.

    With the stages :math:`x^{(0)}, \dots, x^{(S-1)}` of :func:`nfbook.plot.stage_samples`
    (:math:`x^{(0)}` the base samples, :math:`x^{(S-1)}` the model's samples) and
    :math:`m` = ``frames_per_stage``, frame :math:`km + j` for :math:`0 \le k < S - 1` and
    :math:`0 \le j < m` is the straight-line interpolation

    .. math:: x^{(k)} + \frac{j}{m}\left(x^{(k+1)} - x^{(k)}\right),

    and one last frame is :math:`x^{(S-1)}` itself: :math:`(S - 1)m + 1` frames in all. Each
    point moves in a straight line from where one bijector leaves it to where the next one
    puts it, and every stage is shown exactly once.

    Parameters
    ----------
    model : object
        Has ``.distribution`` (a ``tfd.TransformedDistribution``) and ``.bijector``, e.g. a
        ``FlowModel`` with 2-D events.
    n : int
        Number of samples, ``>= 1``.
    frames_per_stage : int
        Frames :math:`m \geq 1` from one stage to the next.
    seed : int
        Seed ``>= 0``; the base is sampled with the stateless seed ``(0, seed)``.

    Returns
    -------
    frames : numpy.ndarray
        float32, shape ``((S - 1) * frames_per_stage + 1, n, 2)``.
    titles : list of str
        One per frame: the stage's label (``"base"``, ``"realnvp_0 [10]"``...) on a stage,
        ``"<from> -> <to>"`` in between.

    Raises
    ------
    TypeError
        If ``model`` lacks ``.distribution.distribution`` or ``.bijector``, or ``n``,
        ``frames_per_stage`` or ``seed`` is not an integer.
    ValueError
        If ``n < 1``, ``frames_per_stage < 1``, ``seed < 0``, or the events are not 2-D.

    Examples
    --------
    >>> import tensorflow_probability as tfp
    >>> from types import SimpleNamespace
    >>> tfb, tfd = tfp.bijectors, tfp.distributions
    >>> chain = tfb.Chain([tfb.Shift([1.0, 2.0]), tfb.Scale([2.0, 3.0])])
    >>> base = tfd.MultivariateNormalDiag(loc=[0.0, 0.0])
    >>> model = SimpleNamespace(distribution=tfd.TransformedDistribution(base, chain),
    ...                         bijector=chain)
    >>> frames, titles = stage_frames(model, n=5, frames_per_stage=4)
    >>> frames.shape, titles[0], titles[2], titles[-1]
    ((9, 5, 2), 'base', 'base -> scale [1]', 'shift [0]')
    >>> bool(np.allclose(frames[-1], model.distribution.sample(5, seed=(0, 0))))
    True
    >>> bool(np.allclose(frames[2], (frames[0] + frames[4]) / 2))  # halfway, linearly
    True
    """
    frames_per_stage = check_positive_int("frames_per_stage", frames_per_stage, 1)
    stages = stage_samples(model, n, seed)
    dims = stages[0][1].shape[-1]
    if dims != 2:
        raise ValueError(f"The animation draws 2-D samples; this model's events have {dims} "
                         f"dimensions.")
    weights = np.arange(frames_per_stage, dtype=np.float32) / frames_per_stage
    frames, titles = [], []
    for (label, start), (next_label, end) in zip(stages[:-1], stages[1:]):
        start, end = start.astype(np.float32), end.astype(np.float32)
        frames.append(start[None] + weights[:, None, None] * (end - start)[None])
        titles += [label] + [f"{label} -> {next_label}"] * (frames_per_stage - 1)
    frames.append(stages[-1][1].astype(np.float32)[None])
    titles.append(stages[-1][0])
    return np.concatenate(frames), titles


def _auto_extent(frames: np.ndarray) -> tuple[float, float, float, float]:
    """Limits holding the central 99% of the points of every frame, plus a 10% margin."""
    low = np.percentile(frames, 0.5, axis=1).min(axis=0)
    high = np.percentile(frames, 99.5, axis=1).max(axis=0)
    pad = 0.1 * np.maximum(high - low, 1e-3)
    low, high = low - pad, high + pad
    return float(low[0]), float(high[0]), float(low[1]), float(high[1])


def flow_animation(
    model: Any,
    n: int = 1000,
    frames_per_stage: int = 8,
    seed: int = 0,
    extent: Sequence[float] | None = None,
    ax: Axes | None = None,
    interval: int = 80,
    s: float = 3.0,
    cmap: str = "viridis",
) -> FuncAnimation:
    r"""Animate samples of a 2-D flow moving through its bijectors, base to data.

    The frames are those of :func:`stage_frames`: the base samples, then each point moving in
    a straight line through the stages of :func:`nfbook.plot.stage_samples`, ending on the
    model's samples. Each point keeps its colour, the value of its first base coordinate
    :math:`z_1`, so the stretching and folding of the Gaussian can be followed.

    Show it in a notebook with ``IPython.display.HTML(offline_html(anim))``
    (:func:`offline_html`): HTML and JavaScript with the frames embedded as PNG images (its
    size grows with the number of frames, the figure size and its dpi; matplotlib refuses more than
    ``rcParams["animation.embed_limit"]`` MB, 20 by default). When ``ax`` is not given, the
    new figure is closed at once (removed from pyplot, still drawable), so that the notebook
    does not show a static copy of the first frame as well.

    Parameters
    ----------
    model : object
        Has ``.distribution`` (a ``tfd.TransformedDistribution``) and ``.bijector``, e.g. a
        ``FlowModel`` with 2-D events.
    n : int
        Number of samples, ``>= 1``.
    frames_per_stage : int
        Frames from one stage to the next, ``>= 1``; there are
        ``(stages - 1) * frames_per_stage + 1`` frames.
    seed : int
        Seed ``>= 0`` of the base samples.
    extent : sequence of 4 floats, optional
        ``(xmin, xmax, ymin, ymax)`` axis limits; by default they hold the central 99% of the
        points of every frame, with a margin.
    ax : matplotlib.axes.Axes, optional
        Where to draw; by default a new, closed figure of 4.8 x 3.2 inches.
    interval : int
        Milliseconds between frames, ``>= 1``.
    s : float
        Marker area in points squared.
    cmap : str
        Colour map of the points.

    Returns
    -------
    matplotlib.animation.FuncAnimation
        Keep a reference to it until it is rendered.

    Raises
    ------
    TypeError
        As :func:`stage_frames`; also if ``ax`` is not a matplotlib Axes or ``interval`` not
        an integer.
    ValueError
        As :func:`stage_frames`; also on a bad ``extent`` or ``interval < 1``.

    Examples
    --------
    >>> import tensorflow_probability as tfp
    >>> from types import SimpleNamespace
    >>> tfb, tfd = tfp.bijectors, tfp.distributions
    >>> chain = tfb.Chain([tfb.Shift([1.0, 2.0]), tfb.Scale([2.0, 3.0])])
    >>> base = tfd.MultivariateNormalDiag(loc=[0.0, 0.0])
    >>> model = SimpleNamespace(distribution=tfd.TransformedDistribution(base, chain),
    ...                         bijector=chain)
    >>> anim = flow_animation(model, n=50, frames_per_stage=3)
    >>> len(list(anim.new_frame_seq()))
    7
    >>> "<script" in offline_html(anim)
    True
    """
    frames, titles = stage_frames(model, n, frames_per_stage, seed)
    limits = _auto_extent(frames) if extent is None else _check_extent(extent)
    interval = check_positive_int("interval", interval, 1)
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.8, 3.2), layout="constrained")
        plt.close(fig)
    elif not isinstance(ax, Axes):
        raise TypeError(f"`ax` must be a matplotlib Axes or None, got {type(ax).__name__}.")
    colour = frames[0, :, 0]
    scatter = ax.scatter(frames[0, :, 0], frames[0, :, 1], c=colour, s=s, cmap=cmap,
                         linewidths=0, vmin=np.percentile(colour, 1),
                         vmax=np.percentile(colour, 99))
    ax.set_xlim(limits[0], limits[1])
    ax.set_ylim(limits[2], limits[3])
    ax.set_aspect("equal")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    title = ax.set_title(titles[0])

    def update(i: int) -> tuple[Any, Any]:
        scatter.set_offsets(frames[i])
        title.set_text(titles[i])
        return scatter, title

    return FuncAnimation(ax.figure, update, frames=len(frames), interval=interval, blit=False)


# Font Awesome icons of matplotlib's player controls, as Unicode characters.
_PLAYER_ICONS = {
    "fa-minus": "\u2212", "fa-plus": "+", "fa-fast-backward": "\u23ee",
    "fa-step-backward": "\u23ea", "fa-play fa-flip-horizontal": "\u25c0", "fa-pause": "\u23f8",
    "fa-play": "\u25b6", "fa-step-forward": "\u23e9", "fa-fast-forward": "\u23ed",
}


def offline_html(anim: FuncAnimation, fps: float | None = None) -> str:
    """``anim.to_jshtml(fps)`` that needs no network: the same player and frames, with its
    controls drawn as Unicode characters instead of Font Awesome icons from a CDN.

    Parameters
    ----------
    anim : matplotlib.animation.FuncAnimation
        The animation, e.g. from :func:`flow_animation`.
    fps : float, optional
        Frames per second; matplotlib's default from the animation's interval when omitted.

    Returns
    -------
    str
        HTML and JavaScript with the frames embedded as PNG images.

    Raises
    ------
    ValueError
        If matplotlib's player refers to an icon this function does not know.

    Examples
    --------
    >>> fig, ax = plt.subplots()
    >>> html = offline_html(FuncAnimation(fig, lambda i: None, frames=2))
    >>> "http" in html, "\u25b6" in html
    (False, True)
    >>> plt.close(fig)
    """
    html = re.sub(r"<link[^>]*font-awesome[^>]*>", "", anim.to_jshtml(fps=fps))

    def icon(match: re.Match) -> str:
        name = match.group(1)
        if name not in _PLAYER_ICONS:
            raise ValueError(f"matplotlib's player uses an unknown icon {name!r}.")
        return _PLAYER_ICONS[name]

    html = re.sub(r'<i class="fa (fa-[^"]*)"></i>', icon, html)
    if "font-awesome" in html or "https://" in html:
        raise ValueError("matplotlib's player still loads something from the network.")
    return html
