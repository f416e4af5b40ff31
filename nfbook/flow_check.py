r"""Check that a bijector is a valid flow: the tests nfbook runs on its own flows, for yours.

A bijector :math:`f` from a base :math:`z \sim N(0, I_D)` to data :math:`x = f(z)` defines the
density :math:`\log q(x) = \log N(f^{-1}(x)) + \log|\det J_{f^{-1}}(x)|` only if it is
invertible and its log-determinants are right. :func:`check_flow` tests, in this order, on
standard normal base points and their images:

1. every output is finite (``forward``, ``inverse`` and both log-determinants);
2. :math:`f^{-1}(f(z)) = z`;
3. :math:`f(f^{-1}(x)) = x`;
4. ``forward_log_det_jacobian`` equals :math:`\log|\det \partial f / \partial z|` computed from
   the autodiff Jacobian (which must not be singular; a map that folds space, and so is not
   one-to-one, fails the round trips on the points of the fold that ``inverse`` does not
   return to);
5. :math:`\log|\det J_{f^{-1}}(f(z))| = -\log|\det J_f(z)|`;
6. in one and two dimensions, :math:`q` integrates to one: on a grid over the box that holds
   nearly all of a large sample of :math:`f(z)`, the integral of :math:`q` matches the
   fraction of the sample inside the box (grid points where TFP's density is NaN, outside the
   image of :math:`f`, such as :math:`x < 0` for ``tfb.Exp``, count as zero density).

The first property that fails raises :class:`FlowCheckError`, with the worst point and the
size of the error. Every call passes new tensors, so TFP's bijector cache (which hands back
the input of a previous ``forward`` call to ``inverse``) cannot hide a wrong inverse.
"""

from __future__ import annotations

__all__ = ["FlowCheckError", "FlowCheckReport", "check_flow"]

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from nfbook.checks import check_positive_int, check_real
from nfbook.conditional import bijector_kwargs

tfb = tfp.bijectors
tfd = tfp.distributions


class FlowCheckError(AssertionError):
    """A property of a flow that does not hold.

    Attributes
    ----------
    check : str
        Which property failed.
    point : np.ndarray
        The point where the error is largest (base side unless the message says otherwise).
    error : float
        The size of the error there.
    tolerance : float
        The largest error accepted.
    """

    def __init__(self, check: str, message: str, point: np.ndarray, error: float,
                 tolerance: float) -> None:
        self.check, self.point, self.error, self.tolerance = check, point, error, tolerance
        super().__init__(f"{check}: {message} (error {error:.3g}, tolerance {tolerance:.3g}, "
                         f"at {np.array2string(np.asarray(point), precision=4)})")


@dataclass(frozen=True)
class FlowCheckReport:
    """The largest error of each property :func:`check_flow` tested (all within tolerance)."""

    ndim: int
    num_points: int
    forward_then_inverse: float
    inverse_then_forward: float
    log_det_vs_autodiff: float
    log_det_symmetry: float
    integral: float | None
    expected_integral: float | None

    def __str__(self) -> str:
        lines = [
            f"check_flow: all properties hold on {self.num_points} points in D = {self.ndim}",
            f"  inverse(forward(z)) = z          largest error {self.forward_then_inverse:.2e}",
            f"  forward(inverse(x)) = x          largest error {self.inverse_then_forward:.2e}",
            f"  log-det = autodiff log|det J|    largest error {self.log_det_vs_autodiff:.2e}",
            f"  inverse log-det = -forward's     largest error {self.log_det_symmetry:.2e}",
        ]
        if self.integral is not None:
            lines.append(f"  density integral on the box      {self.integral:.4f} "
                         f"(expected {self.expected_integral:.4f})")
        return "\n".join(lines)


def _numpy(value: Any, rows: int) -> np.ndarray:
    """A bijector output as float64, with a per-event log-determinant broadcast to rows."""
    array = np.asarray(value, dtype=np.float64)
    return np.broadcast_to(array, (rows,)) if array.ndim == 0 else array


def _fresh(array: np.ndarray) -> tf.Tensor:
    """A new tensor, so that no call finds the result of an earlier one in TFP's cache."""
    return tf.constant(np.array(array, dtype=np.float32))


def _worst(check: str, message: str, errors: np.ndarray, points: np.ndarray,
           tolerance: float) -> float:
    """The largest error; raise :class:`FlowCheckError` where it exceeds ``tolerance``."""
    errors = np.where(np.isnan(errors), np.inf, errors)
    k = int(np.argmax(errors))
    if errors[k] > tolerance:
        raise FlowCheckError(check, message, points[k], float(errors[k]), tolerance)
    return float(errors[k])


def _relative(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise largest :math:`|a - b| / \\max(1, |b|)`."""
    return np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b)), axis=-1)


def _integral(bijector: tfb.Bijector, ndim: int, rng: np.random.Generator,
              resolution: int, kwargs: Callable[[int], dict[str, Any]]
              ) -> tuple[float, float, np.ndarray]:
    """The integral of the flow's density over a box around a sample of it, the fraction of
    the sample in the box (what the integral should be), and the box's corners."""
    sample = _numpy(bijector.forward(_fresh(rng.standard_normal((20_000, ndim))),
                                     **kwargs(20_000)), 20_000)
    low, high = np.quantile(sample, [0.0005, 0.9995], axis=0)
    low, high = low - 0.5 * (high - low), high + 0.5 * (high - low)
    inside = float(np.mean(np.all((sample >= low) & (sample <= high), axis=1)))
    axes = [np.linspace(lo, hi, resolution + 1) for lo, hi in zip(low, high)]
    mids = [0.5 * (a[1:] + a[:-1]) for a in axes]
    grid = np.stack([m.ravel() for m in np.meshgrid(*mids, indexing="ij")], axis=-1)
    distribution = tfd.TransformedDistribution(
        tfd.MultivariateNormalDiag(tf.zeros(ndim)), bijector)
    log_q = np.concatenate([_numpy(distribution.log_prob(
        _fresh(chunk), bijector_kwargs=kwargs(len(chunk))), len(chunk))
                            for chunk in np.array_split(grid, max(1, len(grid) // 20_000))])
    cell = float(np.prod([a[1] - a[0] for a in axes]))
    density = np.where(np.isnan(log_q), 0.0, np.exp(log_q))  # NaN: outside the image of f
    return float(np.sum(density) * cell), inside, np.stack([low, high])


def check_flow(bijector: tfb.Bijector, ndim: int, *, num_points: int = 256, seed: int = 0,
               atol: float = 1e-4, log_det_atol: float = 1e-3, integral_atol: float = 0.02,
               resolution: int | None = None, context: Any = None) -> FlowCheckReport:
    r"""Check that ``bijector`` is a valid flow on :math:`\mathbb{R}^D` (see the module).

    Parameters
    ----------
    bijector : tfb.Bijector
        The flow, base to data, acting on vectors of size ``ndim``.
    ndim : int
        Event size :math:`D`.
    num_points : int
        Standard normal base points :math:`z` to test on.
    seed : int
        Seed of the base points.
    atol : float
        Largest accepted round-trip error, relative to :math:`\max(1, |z|)` per coordinate.
    log_det_atol : float
        Largest accepted log-determinant error, relative to :math:`\max(1, |\log|\det J||)`
        (float32 autodiff through a deep flow is not exact).
    integral_atol : float
        Largest accepted difference between the density's integral over the box and the
        fraction of samples in it (checks 6, for ``ndim`` 1 and 2).
    resolution : int, optional
        Grid cells per axis for the integral: 4,000 in one dimension, 300 in two by default.
    context : array-like, optional
        For a conditional flow (:mod:`nfbook.conditional`), one context, shape ``(k,)`` or
        ``(1, k)``: every check is made on the flow :math:`f_c` of that context. Call once per
        context of interest.

    Returns
    -------
    FlowCheckReport
        The largest error of each check; ``print`` it for a summary.

    Raises
    ------
    FlowCheckError
        Naming the first property that fails, the worst point and the size of the error.
    TypeError, ValueError
        On arguments of the wrong kind.

    Examples
    --------
    >>> import nfbook
    >>> report = nfbook.check_flow(tfb.Chain([tfb.Shift([1.0, 2.0]), tfb.Scale(3.0)]), 2)
    >>> report.integral is not None and abs(report.integral - report.expected_integral) < 0.02
    True
    >>> class Wrong(tfb.Scale):  # a forward log-determinant off by 0.1
    ...     def _forward_log_det_jacobian(self, x):
    ...         return super()._forward_log_det_jacobian(x) + 0.1
    >>> try:
    ...     nfbook.check_flow(Wrong(2.0), 1)
    ... except nfbook.FlowCheckError as error:
    ...     print(error.check, round(error.error, 3))
    log-det vs autodiff 0.1
    """
    if not isinstance(bijector, tfb.Bijector):
        raise TypeError(f"`bijector` must be a tfp.bijectors.Bijector, got "
                        f"{type(bijector).__name__}.")
    ndim = check_positive_int("ndim", ndim)
    num_points = check_positive_int("num_points", num_points, minimum=2)
    seed = check_positive_int("seed", seed, minimum=0)
    atol, log_det_atol, integral_atol = (check_real(name, value, positive=True) for name, value
                                         in [("atol", atol), ("log_det_atol", log_det_atol),
                                             ("integral_atol", integral_atol)])
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((num_points, ndim)).astype(np.float32)
    if context is not None:
        context = np.asarray(context, dtype=np.float32)
        if context.ndim not in (1, 2) or (context.ndim == 2 and len(context) != 1):
            raise ValueError(f"`context` must be one context, shape (k,) or (1, k), got shape "
                             f"{context.shape}; call check_flow once per context.")
        context = context.reshape(1, -1)

    def kwargs(rows: int) -> dict[str, Any]:  # the context of `rows` points, TFP's way
        if context is None:
            return {}
        return bijector_kwargs(bijector, tf.constant(np.repeat(context, rows, axis=0)))

    def forward(points: np.ndarray) -> np.ndarray:
        return _numpy(bijector.forward(_fresh(points), **kwargs(len(points))), len(points))

    def inverse(points: np.ndarray) -> np.ndarray:
        return _numpy(bijector.inverse(_fresh(points), **kwargs(len(points))), len(points))

    x = forward(z)
    if x.shape != z.shape:
        raise ValueError(f"forward maps base points of shape {z.shape} to shape {x.shape}: "
                         f"a flow for ndim={ndim} must keep the shape (n, {ndim}).")
    forward_log_det = _numpy(bijector.forward_log_det_jacobian(
        _fresh(z), event_ndims=1, **kwargs(num_points)), num_points)
    z_back = inverse(x)
    inverse_log_det = _numpy(bijector.inverse_log_det_jacobian(
        _fresh(x), event_ndims=1, **kwargs(num_points)), num_points)
    for name, value in [("forward(z)", x), ("forward_log_det_jacobian(z)", forward_log_det),
                        ("inverse(forward(z))", z_back),
                        ("inverse_log_det_jacobian(forward(z))", inverse_log_det)]:
        bad = ~np.isfinite(value.reshape(num_points, -1)).all(axis=1)
        if bad.any():
            raise FlowCheckError("finite outputs", f"{name} is not finite",
                                 z[int(np.argmax(bad))], float("inf"), 0.0)

    forward_then_inverse = _worst("forward then inverse", "inverse(forward(z)) differs from z",
                                  _relative(z_back, z), z, atol)
    x_other = forward(rng.standard_normal((num_points, ndim)))
    x_back = forward(inverse(x_other))
    inverse_then_forward = _worst(
        "inverse then forward", "forward(inverse(x)) differs from x (point on the data side)",
        _relative(x_back, x_other), x_other, atol)

    checked = min(num_points, 64)  # a Jacobian per point: D backward passes each
    z_tape = _fresh(z[:checked])
    with tf.GradientTape() as tape:
        tape.watch(z_tape)
        x_tape = bijector.forward(z_tape, **kwargs(checked))
    sign, log_abs_det = (np.asarray(v, np.float64) for v in tf.linalg.slogdet(
        tf.cast(tape.batch_jacobian(x_tape, z_tape), tf.float64)))
    _worst("invertible Jacobian", "the autodiff Jacobian of forward is singular",
           (sign == 0).astype(float), z[:checked], 0.5)
    scale = np.maximum(1.0, np.abs(forward_log_det))
    log_det_vs_autodiff = _worst(
        "log-det vs autodiff",
        "forward_log_det_jacobian differs from log|det| of the autodiff Jacobian",
        np.abs(forward_log_det[:checked] - log_abs_det) / scale[:checked], z[:checked],
        log_det_atol)
    log_det_symmetry = _worst(
        "log-det symmetry", "inverse_log_det_jacobian(forward(z)) is not "
        "-forward_log_det_jacobian(z)", np.abs(forward_log_det + inverse_log_det) / scale, z,
        log_det_atol)

    integral = expected = None
    if ndim <= 2:
        cells = resolution or (4000 if ndim == 1 else 300)
        integral, expected, box = _integral(bijector, ndim, rng, check_positive_int(
            "resolution", cells, minimum=10), kwargs)
        if not abs(integral - expected) <= integral_atol:  # also an infinite integral
            raise FlowCheckError(
                "density integrates to one",
                f"the density integrates to {integral:.4f} over the box from its lower to its "
                f"upper corner (data side), which holds {expected:.4f} of its samples", box,
                abs(integral - expected), integral_atol)
    return FlowCheckReport(ndim, num_points, forward_then_inverse, inverse_then_forward,
                           log_det_vs_autodiff, log_det_symmetry, integral, expected)
