r"""Exact log-densities and entropies of the toy data sets in :mod:`nfbook.data`.

A model's expected held-out NLL is :math:`H(p) + \mathrm{KL}(p \,\|\, p_\theta) \ge H(p)`, so
the entropy of the data is the floor that every model is judged against. Each function here
evaluates the density that the matching generator in :mod:`nfbook.data` draws from, with the
same keyword arguments; :func:`entropy` turns any of them into the floor.
"""

from __future__ import annotations

__all__ = [
    "checkerboard_log_prob",
    "entropy",
    "gaussian_mixture_log_prob",
    "log_prob",
    "pinwheel_log_prob",
    "rings_log_prob",
]

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.special import ive, logsumexp

from nfbook import data
from nfbook.checks import check_data, check_positive_int, check_real


def _points(x: Any) -> np.ndarray:
    return check_data(x, 2).astype(np.float64)


def gaussian_mixture_log_prob(
    x: Any, centers: int = 8, radius: float = 2.5, std: float = 0.25
) -> np.ndarray:
    r"""Log-density of :func:`nfbook.data.gaussian_mixture`.

    .. math:: \log p(x) = \log \frac{1}{K} \sum_{k} \mathcal N(x; \mu_k, \sigma^2 I),
              \qquad \mu_k = R(\cos(2\pi k/K), \sin(2\pi k/K)).

    Examples
    --------
    >>> lp = gaussian_mixture_log_prob([[2.5, 0.0], [0.0, 0.0]])
    >>> bool(lp[0] > lp[1])  # a mean beats the empty centre
    True
    """
    points = _points(x)
    centers = check_positive_int("centers", centers, 1)
    radius = check_real("radius", radius)
    std = check_real("std", std, positive=True)
    angle = 2 * np.pi * np.arange(centers) / centers
    means = radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    squared = ((points[:, None, :] - means[None]) ** 2).sum(-1)
    return (logsumexp(-squared / (2 * std**2), axis=1) - np.log(centers)
            - np.log(2 * np.pi * std**2))


def rings_log_prob(
    x: Any, noise: float = 0.05, *, radii: Sequence[float] = (1.0, 2.0, 3.0)
) -> np.ndarray:
    r"""Log-density of :func:`nfbook.data.rings`.

    A circle of radius :math:`r`, uniform in angle, blurred by :math:`\mathcal N(0, \sigma^2 I)`
    has the density :math:`\frac{1}{2\pi\sigma^2} e^{-(\rho^2 + r^2)/2\sigma^2}
    I_0(\rho r / \sigma^2)` at distance :math:`\rho` from the centre (:math:`I_0` the modified
    Bessel function); circle :math:`k` is chosen with probability :math:`r_k / \sum_j r_j`.
    The exponentially scaled :math:`I_0` keeps it finite for thin rings.

    Examples
    --------
    >>> lp = rings_log_prob([[2.0, 0.0], [1.5, 0.0]])
    >>> bool(lp[0] > lp[1])  # on a ring beats between two rings
    True
    """
    points = _points(x)
    noise = check_real("noise", noise, positive=True)
    radius = np.array([check_real("radii[i]", r, positive=True) for r in radii])
    rho = np.linalg.norm(points, axis=1)[:, None]
    # exp(-(rho^2 + r^2) / 2s^2) I0(rho r / s^2) = exp(-(rho - r)^2 / 2s^2) ive(0, rho r / s^2)
    terms = (-((rho - radius) ** 2) / (2 * noise**2) + np.log(ive(0, rho * radius / noise**2))
             + np.log(radius / radius.sum()))
    return logsumexp(terms, axis=1) - np.log(2 * np.pi * noise**2)


def checkerboard_log_prob(x: Any, cells: int = 4) -> np.ndarray:
    r"""Log-density of :func:`nfbook.data.checkerboard`: :math:`-\log(m h^2)` on the
    :math:`m` dark squares of side :math:`h = 8 / c`, :math:`-\infty` elsewhere.

    Examples
    --------
    >>> checkerboard_log_prob([[-3.0, -3.0], [-1.0, -3.0]]).round(4).tolist()
    [-3.4657, -inf]
    """
    points = _points(x)
    cells = check_positive_int("cells", cells, 2)
    h = 8.0 / cells
    dark = int(np.ceil(cells * cells / 2))
    index = np.floor((points + 4.0) / h)
    inside = np.all((index >= 0) & (index < cells), axis=1) & (index.sum(axis=1) % 2 == 0)
    return np.where(inside, -np.log(dark * h * h), -np.inf)


def pinwheel_log_prob(
    x: Any,
    *,
    arms: int = 5,
    radial_std: float = 0.3,
    tangential_std: float = 0.1,
    rate: float = 0.25,
    grid: int = 500,
) -> np.ndarray:
    r"""Log-density of :func:`nfbook.data.pinwheel`, by the change of variables.

    Arm :math:`k` maps :math:`(u, v) \sim \mathcal N((1, 0), \mathrm{diag}(\sigma_r^2,
    \sigma_t^2))` to :math:`y = 2 R(\beta_k + a e^u)(u, v)`. Writing :math:`z = y / 2 =
    \rho(\cos\alpha, \sin\alpha)`, a preimage satisfies :math:`(u, v) = \rho(\cos\gamma,
    \sin\gamma)` with :math:`\gamma = \alpha - \beta_k - a e^u`, so :math:`u` is a root of
    :math:`u - \rho\cos(\alpha - \beta_k - a e^u)` on :math:`[-\rho, \rho]`. With
    :math:`\partial z / \partial(u, v)` of determinant :math:`1 - a e^u v`,

    .. math:: p(y) = \frac{1}{4K} \sum_k \sum_{(u, v)}
              \frac{\mathcal N(u; 1, \sigma_r^2)\, \mathcal N(v; 0, \sigma_t^2)}
                   {|1 - a e^u v|}.

    The roots are bracketed on ``grid`` points of :math:`[-\rho, \rho]` and refined by
    bisection to float64 precision.

    Examples
    --------
    >>> y = data.pinwheel(3, seed=1)
    >>> bool(np.isfinite(pinwheel_log_prob(y)).all())
    True
    """
    points = _points(x)
    arms = check_positive_int("arms", arms, 1)
    radial_std = check_real("radial_std", radial_std, positive=True)
    tangential_std = check_real("tangential_std", tangential_std, positive=True)
    rate = check_real("rate", rate)
    grid = check_positive_int("grid", grid, 16)
    density = np.concatenate([
        _pinwheel_density(chunk / 2.0, arms, radial_std, tangential_std, rate, grid)
        for chunk in np.array_split(points, max(1, len(points) // 1000))])
    with np.errstate(divide="ignore"):
        return np.log(density / (4.0 * arms))


def _pinwheel_density(z: np.ndarray, arms: int, radial_std: float, tangential_std: float,
                      rate: float, grid: int) -> np.ndarray:
    """Sum over arms and preimages of the base density over |1 - a e^u v|, at ``z = y / 2``."""
    rho = np.linalg.norm(z, axis=1)
    alpha = np.arctan2(z[:, 1], z[:, 0])
    t = np.linspace(-1.0, 1.0, grid)
    density = np.zeros(len(z))
    for k in range(arms):
        beta = 2 * np.pi * k / arms
        u_grid = rho[:, None] * t[None, :]
        r_grid = u_grid - rho[:, None] * np.cos(alpha[:, None] - beta - rate * np.exp(u_grid))
        rows, cols = np.nonzero(np.signbit(r_grid[:, :-1]) != np.signbit(r_grid[:, 1:]))
        lo, hi, r_lo = u_grid[rows, cols], u_grid[rows, cols + 1], r_grid[rows, cols]
        for _ in range(60):  # bisection: the bracket halves each step
            mid = 0.5 * (lo + hi)
            r_mid = mid - rho[rows] * np.cos(alpha[rows] - beta - rate * np.exp(mid))
            left = np.signbit(r_mid) == np.signbit(r_lo)
            lo, r_lo = np.where(left, mid, lo), np.where(left, r_mid, r_lo)
            hi = np.where(left, hi, mid)
        u = 0.5 * (lo + hi)
        v = rho[rows] * np.sin(alpha[rows] - beta - rate * np.exp(u))
        log_base = (-0.5 * ((u - 1.0) / radial_std) ** 2 - 0.5 * (v / tangential_std) ** 2
                    - np.log(2 * np.pi * radial_std * tangential_std))
        np.add.at(density, rows, np.exp(log_base) / np.abs(1.0 - rate * np.exp(u) * v))
    return density


_LOG_PROBS: dict[str, tuple[Callable[..., np.ndarray], Callable[..., np.ndarray]]] = {
    "moons": (data.moons, data.moons_log_prob),
    "gaussian_mixture": (data.gaussian_mixture, gaussian_mixture_log_prob),
    "rings": (data.rings, rings_log_prob),
    "checkerboard": (data.checkerboard, checkerboard_log_prob),
    "pinwheel": (data.pinwheel, pinwheel_log_prob),
}


def log_prob(name: str, x: Any, **kwargs: Any) -> np.ndarray:
    """Exact log-density of the toy set ``name`` (one of :data:`_LOG_PROBS`' keys) at ``x``.

    ``kwargs`` are the generator's keyword arguments (other than ``n`` and ``seed``).

    Examples
    --------
    >>> log_prob("checkerboard", [[-3.0, -3.0]]).round(4).tolist()
    [-3.4657]
    """
    if name not in _LOG_PROBS:
        raise ValueError(f"`name` must be one of {sorted(_LOG_PROBS)}, got {name!r}.")
    return _LOG_PROBS[name][1](x, **kwargs)


def entropy(name: str, n: int = 20000, seed: int = 12345, **kwargs: Any) -> tuple[float, float]:
    r"""Monte Carlo entropy :math:`H = -\mathbb E_p[\log p(x)]` of the toy set ``name``, in nats.

    Scores ``n`` fresh points of the generator by :func:`log_prob`.

    Returns
    -------
    tuple of float
        The estimate and its standard error :math:`\mathrm{sd}(\log p) / \sqrt n`.

    Examples
    --------
    >>> h, se = entropy("checkerboard", n=1000)  # uniform on 8 squares of area 4: log 32
    >>> round(h, 4), round(se, 6)
    (3.4657, 0.0)
    """
    if name not in _LOG_PROBS:
        raise ValueError(f"`name` must be one of {sorted(_LOG_PROBS)}, got {name!r}.")
    n = check_positive_int("n", n, 2)
    sample, score = _LOG_PROBS[name]
    x = sample(n, seed=seed, **kwargs)
    lp = score(x, **kwargs)
    return float(-lp.mean()), float(lp.std(ddof=1) / np.sqrt(n))
