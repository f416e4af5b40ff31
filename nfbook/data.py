"""Toy 2-D data sets for the book: moons, text, rings, checkerboard, pinwheel, Gaussian mixture."""

from __future__ import annotations

__all__ = [
    "checkerboard",
    "gaussian_mixture",
    "moons",
    "moons_entropy",
    "moons_log_prob",
    "pinwheel",
    "rings",
    "text",
]

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.datasets import make_moons

from nfbook.checks import check_data, check_positive_int, check_real
from nfbook.glyphs import text


def _rng(seed: Any) -> np.random.Generator:
    return np.random.default_rng(check_positive_int("seed", seed, 0))


def moons(n: int, noise: float = 0.05, seed: int = 0, *, labels: bool = False
          ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    r"""Two interleaving half circles: scikit-learn's ``make_moons`` as float32.

    The upper moon is :math:`(\cos t, \sin t)` and the lower one
    :math:`(1 - \cos t, 1/2 - \sin t)` for :math:`t \in [0, \pi]` (``n // 2`` and
    ``n - n // 2`` evenly spaced points), plus isotropic Gaussian noise of standard deviation
    ``noise``; the points are shuffled. The book trains on ``moons(10000, seed=0)`` and holds
    out ``moons(10000, seed=1)``.

    Parameters
    ----------
    n : int
        Number of points, ``>= 1``.
    noise : float
        Standard deviation of the Gaussian noise, ``>= 0``.
    seed : int
        Random seed, ``>= 0``.
    labels : bool
        Also return which moon each point comes from (the context of a conditional flow).

    Returns
    -------
    numpy.ndarray
        Shape ``(n, 2)``, float32, within about ``[-1, 2] x [-0.5, 1]`` for small noise.
    numpy.ndarray
        With ``labels=True``: shape ``(n,)``, int32, 0 for the upper moon and 1 for the lower.

    Raises
    ------
    TypeError
        If ``n`` or ``seed`` is not an integer, or ``noise`` not a number.
    ValueError
        If ``n < 1``, ``seed < 0`` or ``noise`` is negative or not finite.

    Examples
    --------
    >>> x = moons(1000)
    >>> x.shape, x.dtype
    ((1000, 2), dtype('float32'))
    >>> bool((moons(1000) == x).all())
    True
    """
    n = check_positive_int("n", n, 1)
    noise = check_real("noise", noise)
    seed = check_positive_int("seed", seed, 0)
    x, moon = make_moons(n, noise=noise, random_state=seed)
    return (x.astype(np.float32), moon.astype(np.int32)) if labels else x.astype(np.float32)


def moons_log_prob(x: Any, noise: float = 0.05, num_angles: int = 2000, *,
                   moon: int | None = None) -> np.ndarray:
    r"""Exact log-density of the data :func:`moons` draws from, as the number of points grows.

    Each moon is a half circle of radius one traversed at uniform angle, chosen with
    probability 1/2, plus noise :math:`\mathcal{N}(0, \sigma^2 I)`:

    .. math::
        p(x) = \frac{1}{2\pi} \int_0^\pi \left[\mathcal{N}(x; a(t), \sigma^2 I)
        + \mathcal{N}(x; b(t), \sigma^2 I)\right] dt,

    with :math:`a(t) = (\cos t, \sin t)` and :math:`b(t) = (1 - \cos t, 1/2 - \sin t)`. The
    integral is the midpoint rule over ``num_angles`` angles, in log space. With ``moon`` it is
    the density of one moon, :math:`p(x \mid 0) = \frac1\pi \int_0^\pi
    \mathcal{N}(x; a(t), \sigma^2 I)\,dt` (and :math:`b` for moon 1), the conditional density
    given :func:`moons`'s label.

    Parameters
    ----------
    x : array-like
        Points, shape ``(n, 2)``.
    noise : float
        The noise :math:`\sigma > 0`.
    num_angles : int
        Quadrature points per moon.
    moon : {0, 1}, optional
        Give the density of that moon alone.

    Returns
    -------
    numpy.ndarray
        ``log p(x)`` (or ``log p(x | moon)``), shape ``(n,)``, float64.

    Examples
    --------
    >>> lp = moons_log_prob([[1.0, 0.0], [0.0, 1.0]])
    >>> bool(lp[1] > lp[0])  # (0, 1) lies on the upper moon, (1, 0) between the moons
    True
    """
    points = check_data(x, 2).astype(np.float64)
    noise = check_real("noise", noise, positive=True)
    num_angles = check_positive_int("num_angles", num_angles, 1)
    t = (np.arange(num_angles) + 0.5) * np.pi / num_angles
    arcs = [np.stack([np.cos(t), np.sin(t)], axis=1),
            np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], axis=1)]
    if moon not in (None, 0, 1):
        raise ValueError(f"`moon` must be None, 0 (upper) or 1 (lower), got {moon!r}.")
    centres = np.concatenate(arcs if moon is None else arcs[moon:moon + 1])
    log_norm = -np.log(2.0 * np.pi * noise**2) - np.log(len(centres))
    out = np.empty(len(points))
    for start in range(0, len(points), 1000):
        chunk = points[start:start + 1000]
        squared = ((chunk[:, None, :] - centres[None, :, :]) ** 2).sum(axis=-1)
        exponent = -squared / (2.0 * noise**2)
        peak = exponent.max(axis=1)
        out[start:start + 1000] = peak + np.log(np.exp(exponent - peak[:, None]).sum(axis=1))
    return out + log_norm


def moons_entropy(noise: float = 0.05) -> float:
    r"""Differential entropy of the moons data, in nats, by quadrature.

    :math:`H = -\int p \log p \, dx`, with :math:`p` from :func:`moons_log_prob`, summed on
    a grid of spacing :math:`\sigma/2` over the arcs' box padded by :math:`8\sigma` (where
    :math:`p` is negligible), the arcs resolved at angle steps of :math:`\sigma/4`: accurate
    to about :math:`10^{-4}`, in a time that grows as :math:`\sigma^{-3}`. No model's expected
    held-out NLL is below it: NLL :math:`= H + \mathrm{KL}(p \,\|\, p_\theta) \geq H`.

    Parameters
    ----------
    noise : float
        The noise :math:`\sigma \geq 0.01` of the data.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``noise < 0.01``, where the grid takes minutes (average ``-moons_log_prob`` instead).

    Examples
    --------
    >>> round(moons_entropy(), 3)
    0.289
    """
    if (noise := check_real("noise", noise)) < 0.01:
        raise ValueError(f"`noise` must be >= 0.01 (below, average -moons_log_prob), got {noise}.")
    step, pad = noise / 2, 8 * noise
    xx, yy = np.meshgrid(np.arange(-1.0 - pad, 2.0 + pad + step, step),
                         np.arange(-0.5 - pad, 1.0 + pad + step, step))
    log_p = moons_log_prob(np.stack([xx.ravel(), yy.ravel()], axis=1), noise=noise,
                           num_angles=int(np.ceil(4 * np.pi / noise)))
    return float(-np.sum(np.exp(log_p) * log_p) * step**2)


def rings(
    n: int, noise: float = 0.05, seed: int = 0, *, radii: Sequence[float] = (1.0, 2.0, 3.0)
) -> np.ndarray:
    r"""Concentric circles, uniform along their total length, plus Gaussian noise.

    Each point picks circle :math:`k` with probability :math:`r_k / \sum_j r_j` (so the
    density along every circle is the same), an angle :math:`\theta \sim U[0, 2\pi)`, and
    is :math:`r_k (\cos\theta, \sin\theta) + \varepsilon`,
    :math:`\varepsilon \sim \mathcal N(0, \sigma^2 I)` with :math:`\sigma` = ``noise``.

    Parameters
    ----------
    n : int
        Number of points, ``>= 1``.
    noise : float
        Standard deviation :math:`\sigma` of the Gaussian noise, ``>= 0``.
    seed : int
        Random seed, ``>= 0``.
    radii : sequence of float
        Radii of the circles, each ``> 0``; the default keeps the data within ``[-4, 4]^2``.

    Returns
    -------
    numpy.ndarray
        Shape ``(n, 2)``, float32.

    Raises
    ------
    TypeError
        If an argument has the wrong type.
    ValueError
        If ``n < 1``, ``seed < 0``, ``noise < 0``, ``radii`` is empty or a radius is not
        positive.

    Examples
    --------
    >>> x = rings(2000, noise=0.0)
    >>> x.shape
    (2000, 2)
    >>> r = np.linalg.norm(x, axis=1)
    >>> bool(np.allclose(np.minimum.reduce([abs(r - k) for k in (1, 2, 3)]), 0, atol=1e-5))
    True
    """
    n = check_positive_int("n", n, 1)
    noise = check_real("noise", noise)
    if isinstance(radii, (str, bytes)) or np.ndim(radii) != 1 or len(radii) == 0:
        raise ValueError(
            f"`radii` must be a non-empty sequence of positive numbers, got {radii!r}."
        )
    radius = np.array([check_real("radii[i]", r, positive=True) for r in radii])
    rng = _rng(seed)
    r = rng.choice(radius, size=n, p=radius / radius.sum())
    theta = rng.uniform(0.0, 2 * np.pi, size=n)
    x = r[:, None] * np.stack([np.cos(theta), np.sin(theta)], axis=1)
    return (x + rng.normal(scale=noise, size=x.shape)).astype(np.float32)


def checkerboard(n: int, seed: int = 0, *, cells: int = 4) -> np.ndarray:
    r"""Uniform points on the dark squares of a ``cells x cells`` checkerboard over
    :math:`[-4, 4]^2`.

    Square :math:`(i, j)`, :math:`0 \le i, j < c`, covers
    :math:`[-4 + i h, -4 + (i+1) h] \times [-4 + j h, -4 + (j+1) h]` with :math:`h = 8 / c`;
    the dark squares are those with :math:`i + j` even (the bottom-left one included). The
    density is :math:`1 / (m h^2)` on the :math:`m = \lceil c^2 / 2 \rceil` dark squares and 0
    elsewhere.

    Parameters
    ----------
    n : int
        Number of points, ``>= 1``.
    seed : int
        Random seed, ``>= 0``.
    cells : int
        Squares per side, ``>= 2``.

    Returns
    -------
    numpy.ndarray
        Shape ``(n, 2)``, float32, within ``[-4, 4]^2``.

    Raises
    ------
    TypeError
        If ``n``, ``seed`` or ``cells`` is not an integer.
    ValueError
        If ``n < 1``, ``seed < 0`` or ``cells < 2``.

    Examples
    --------
    >>> x = checkerboard(1000)
    >>> x.shape
    (1000, 2)
    >>> cell = np.floor((x + 4) / 2).astype(int)
    >>> bool((cell.sum(axis=1) % 2 == 0).all())
    True
    """
    n = check_positive_int("n", n, 1)
    cells = check_positive_int("cells", cells, 2)
    rng = _rng(seed)
    i, j = np.divmod(np.arange(cells * cells), cells)
    dark = np.stack([i, j], axis=1)[(i + j) % 2 == 0]
    corner = dark[rng.integers(len(dark), size=n)]
    h = 8.0 / cells
    return (-4.0 + h * (corner + rng.uniform(size=(n, 2)))).astype(np.float32)


def pinwheel(
    n: int,
    seed: int = 0,
    *,
    arms: int = 5,
    radial_std: float = 0.3,
    tangential_std: float = 0.1,
    rate: float = 0.25,
) -> np.ndarray:
    r"""Gaussian blobs bent into the spiral arms of a pinwheel (Johnson et al., 2016).

    For arm :math:`k` (points are spread evenly over the arms) draw
    :math:`u \sim \mathcal N(1, \sigma_r^2)`, :math:`v \sim \mathcal N(0, \sigma_t^2)`,
    and rotate :math:`(u, v)` by the angle :math:`2\pi k / K + a\,e^{u}`, where :math:`a` is
    ``rate``; the result is scaled by 2, which keeps the default data within about
    :math:`[-4, 4]^2`.

    Parameters
    ----------
    n : int
        Number of points, ``>= 1``.
    seed : int
        Random seed, ``>= 0``.
    arms : int
        Number of arms :math:`K`, ``>= 1``.
    radial_std, tangential_std : float
        Standard deviations :math:`\sigma_r` along and :math:`\sigma_t` across an arm, ``> 0``.
    rate : float
        How fast the arms turn, :math:`a \ge 0`.

    Returns
    -------
    numpy.ndarray
        Shape ``(n, 2)``, float32.

    Raises
    ------
    TypeError
        If an argument has the wrong type.
    ValueError
        If ``n < 1``, ``seed < 0``, ``arms < 1``, a standard deviation is not positive, or
        ``rate < 0``.

    Examples
    --------
    >>> x = pinwheel(1000)
    >>> x.shape, x.dtype
    ((1000, 2), dtype('float32'))
    """
    n = check_positive_int("n", n, 1)
    arms = check_positive_int("arms", arms, 1)
    radial_std = check_real("radial_std", radial_std, positive=True)
    tangential_std = check_real("tangential_std", tangential_std, positive=True)
    rate = check_real("rate", rate)
    rng = _rng(seed)
    uv = rng.normal(size=(n, 2)) * [radial_std, tangential_std] + [1.0, 0.0]
    angle = 2 * np.pi * (np.arange(n) % arms) / arms + rate * np.exp(uv[:, 0])
    cos, sin = np.cos(angle), np.sin(angle)
    x = np.stack([cos * uv[:, 0] - sin * uv[:, 1], sin * uv[:, 0] + cos * uv[:, 1]], axis=1)
    return (2.0 * x).astype(np.float32)


def gaussian_mixture(
    n: int, centers: int = 8, radius: float = 2.5, std: float = 0.25, seed: int = 0
) -> np.ndarray:
    r"""Equal-weight isotropic Gaussians with means evenly spaced on a circle.

    The density is

    .. math:: p(x) = \frac{1}{K} \sum_{k=0}^{K-1}
              \mathcal N\big(x;\ R(\cos(2\pi k/K), \sin(2\pi k/K)),\ \sigma^2 I\big)

    with :math:`K` = ``centers``, :math:`R` = ``radius`` and :math:`\sigma` = ``std``; the
    points are spread evenly over the components (point :math:`i` comes from component
    :math:`i \bmod K`).

    Parameters
    ----------
    n : int
        Number of points, ``>= 1``.
    centers : int
        Number of components :math:`K`, ``>= 1``.
    radius : float
        Radius :math:`R` of the circle of means, ``>= 0``.
    std : float
        Standard deviation :math:`\sigma` of each component, ``> 0``.
    seed : int
        Random seed, ``>= 0``.

    Returns
    -------
    numpy.ndarray
        Shape ``(n, 2)``, float32; within about ``[-3.5, 3.5]^2`` for the defaults.

    Raises
    ------
    TypeError
        If an argument has the wrong type.
    ValueError
        If ``n < 1``, ``centers < 1``, ``radius < 0``, ``std <= 0`` or ``seed < 0``.

    Examples
    --------
    >>> x = gaussian_mixture(800, centers=8, std=1e-3)
    >>> x.shape
    (800, 2)
    >>> bool(np.allclose(np.linalg.norm(x, axis=1), 2.5, atol=0.01))
    True
    """
    n = check_positive_int("n", n, 1)
    centers = check_positive_int("centers", centers, 1)
    radius = check_real("radius", radius)
    std = check_real("std", std, positive=True)
    rng = _rng(seed)
    angle = 2 * np.pi * (np.arange(n) % centers) / centers
    means = radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return (means + rng.normal(scale=std, size=(n, 2))).astype(np.float32)
