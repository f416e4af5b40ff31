r"""Self-normalised importance sampling with a flow as the proposal.

For samples :math:`x_k \sim q` of a flow and a target known up to a constant,
:math:`p^* = \tilde p / Z`, the weights :math:`w_k = \tilde p(x_k) / q(x_k)` correct the
flow's remaining error: :func:`importance_weights` draws them, :func:`effective_sample_size`
says how even they are, and :func:`expectation` estimates :math:`\mathbb{E}_{p^*}[f]` with
its standard error.
"""

from __future__ import annotations

__all__ = [
    "ImportanceSample",
    "check_target_values",
    "effective_sample_size",
    "expectation",
    "importance_weights",
]

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from nfbook.checks import check_positive_int

tfd = tfp.distributions

TargetLogProb = Callable[[tf.Tensor], Any]


def check_target_values(values: Any, n: int, ndim: int, allow_minus_inf: bool) -> np.ndarray:
    """``values`` (the target's output for ``n`` points) as float64 after the shape and
    finiteness checks."""
    array = np.asarray(values.numpy() if isinstance(values, tf.Tensor) else values)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"`target_log_prob` returned dtype {array.dtype}; expected real "
                        f"numbers, one log-density per point.")
    if array.shape != (n,):
        raise ValueError(
            f"`target_log_prob` returned shape {array.shape} for input of shape ({n}, {ndim}); "
            f"expected ({n},): one log-density per point (sum over the event axis, "
            f"e.g. tf.reduce_sum(..., axis=-1))."
        )
    array = array.astype(np.float64)
    nan = int(np.count_nonzero(np.isnan(array)))
    if nan:
        raise ValueError(f"`target_log_prob` returned NaN for {nan} of {n} points drawn from "
                         f"the flow; it must return a number (or -inf) for every point.")
    if np.any(array == np.inf):
        raise ValueError("`target_log_prob` returned +inf: an unnormalised log-density must be "
                         "finite or -inf, else the target cannot be normalised.")
    if not allow_minus_inf and np.any(array == -np.inf):
        count = int(np.count_nonzero(array == -np.inf))
        raise ValueError(
            f"`target_log_prob` returned -inf for {count} of {n} points drawn from the flow: "
            f"the reverse KL is then infinite. Start the flow inside the target's support or "
            f"return a large finite penalty outside it."
        )
    return array


class ImportanceSample(NamedTuple):
    """Flow samples and their importance log-weights, from :func:`importance_weights`."""

    samples: np.ndarray
    """float32, shape ``(n, ndim)``: samples of the flow."""
    log_weights: np.ndarray
    r"""float64, shape ``(n,)``: :math:`\log \tilde p(x) - \log q(x)`."""


def importance_weights(model: Any, target_log_prob: TargetLogProb, n: int,
                       seed: Any = None) -> ImportanceSample:
    r"""Draw ``n`` samples of a flow and their log importance weights against a target.

    For :math:`x_k \sim q` the weights :math:`w_k = \tilde p(x_k) / q(x_k)` make
    :math:`\sum_k w_k f(x_k) / \sum_k w_k` a consistent estimate of
    :math:`\mathbb{E}_{p^*}[f]` (see :func:`expectation`), and :math:`\frac{1}{n}\sum_k w_k`
    an unbiased estimate of :math:`Z`, provided :math:`q > 0` wherever :math:`p^* > 0`.
    Returned on the log scale, :math:`\log w_k = \log \tilde p(x_k) - \log q(x_k)`, since the
    weights themselves overflow easily.

    Parameters
    ----------
    model : FlowModel or similar
        Anything with a ``distribution`` (``tfd.Distribution``) that can sample and score its
        samples; batch norm, if any, in inference mode.
    target_log_prob : callable
        :math:`\log \tilde p`, ``(n, ndim) -> (n,)``; may return -inf (weight zero), not NaN.
    n : int
        Number of samples, ``>= 1``.
    seed : int or (int, int), optional
        As for ``model.sample``; a pair gives repeatable samples.

    Returns
    -------
    ImportanceSample
        The named pair ``(samples, log_weights)``.

    Raises
    ------
    TypeError, ValueError
        If ``n`` is not a positive integer, or ``target_log_prob`` is not callable or
        returns the wrong shape, NaN or +inf.

    Examples
    --------
    >>> import nfbook
    >>> model = nfbook.FlowModel(nfbook.realnvp(2, hidden_units=(8,), num_layers=2), ndim=2)
    >>> standard = lambda x: tfd.MultivariateNormalDiag(loc=[0.0, 0.0]).log_prob(x)
    >>> x, log_w = importance_weights(model, standard, 100, seed=(1, 2))
    >>> x.shape, bool(np.allclose(log_w, 0.0, atol=1e-5))  # the untrained flow is N(0, I)
    ((100, 2), True)
    """
    n = check_positive_int("n", n)
    if not callable(target_log_prob):
        raise TypeError(f"`target_log_prob` must be a callable mapping points to "
                        f"log-densities, got {type(target_log_prob).__name__}.")
    x, log_q = model.distribution.experimental_sample_and_log_prob(n, seed=seed)
    log_p = check_target_values(target_log_prob(x), n, int(x.shape[-1]), allow_minus_inf=True)
    return ImportanceSample(x.numpy(), log_p - log_q.numpy().astype(np.float64))


def _check_log_weights(log_weights: Any) -> np.ndarray:
    array = np.asarray(log_weights, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"`log_weights` must be a non-empty 1-D array, got shape "
                         f"{array.shape}.")
    if np.any(np.isnan(array)) or np.any(array == np.inf):
        raise ValueError("`log_weights` holds NaN or +inf; expected finite values or -inf.")
    if np.all(array == -np.inf):
        raise ValueError("Every weight is zero (all `log_weights` are -inf): no sample of the "
                         "proposal lies where the target has mass.")
    return array


def _logsumexp(a: np.ndarray) -> float:
    top = np.max(a)
    return float(top + np.log(np.sum(np.exp(a - top))))


def effective_sample_size(log_weights: Any, fraction: bool = True) -> float:
    r"""Kish's effective sample size of importance weights, from their logarithms.

    .. math:: n_{\mathrm{eff}} = \frac{\left(\sum_k w_k\right)^2}{\sum_k w_k^2}
        = \exp\left(2 \operatorname{LSE}(\log w) - \operatorname{LSE}(2 \log w)\right),

    with LSE the log-sum-exp, so no weight is ever exponentiated on its own. It is ``n``
    when all weights are equal (the proposal is the target) and near 1 when one weight
    dominates. It measures only how uneven the weights of the drawn samples are: a
    proposal that misses a mode of the target can still score high.

    Parameters
    ----------
    log_weights : array-like
        Log importance weights, shape ``(n,)``; an additive constant does not matter.
    fraction : bool
        Return :math:`n_{\mathrm{eff}} / n \in (0, 1]` (default) instead of the count
        :math:`n_{\mathrm{eff}} \in [1, n]`.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``log_weights`` is empty, not 1-D, holds NaN or +inf, or is all -inf.

    References
    ----------
    Kish (1965), Survey Sampling, Wiley.

    Examples
    --------
    >>> effective_sample_size(np.zeros(10))
    1.0
    >>> effective_sample_size([0.0, 0.0, -np.inf, -np.inf], fraction=False)
    2.0
    """
    lw = _check_log_weights(log_weights)
    finite = lw[np.isfinite(lw)]
    count = float(np.exp(2 * _logsumexp(finite) - _logsumexp(2 * finite)))
    count = min(max(count, 1.0), float(lw.size))  # rounding can stray past the bounds
    return count / lw.size if fraction else count


def expectation(f: Any, samples: Any, log_weights: Any,
                return_std_error: bool = False) -> Any:
    r"""Self-normalised importance-sampling estimate of :math:`\mathbb{E}_{p^*}[f(x)]`.

    .. math:: \hat\mu = \sum_k \bar w_k f(x_k), \qquad
        \bar w_k = \frac{w_k}{\sum_j w_j}, \qquad
        \widehat{\mathrm{se}}^2 = \sum_k \bar w_k^2 \left(f(x_k) - \hat\mu\right)^2,

    for samples :math:`x_k \sim q` with :math:`w_k = \tilde p(x_k)/q(x_k)`. The unknown
    normaliser cancels. :math:`\hat\mu` is consistent, with a bias of order :math:`1/n`;
    :math:`\widehat{\mathrm{se}}` is the delta-method standard error (Owen 2013, ch. 9),
    about :math:`\mathrm{sd}_{p^*}(f) / \sqrt{n_{\mathrm{eff}}}`.

    Parameters
    ----------
    f : callable or array-like
        A function of the samples returning one value (or one row of values) per sample,
        or those values already computed, shape ``(n,)`` or ``(n, k)``.
    samples : array-like
        Samples :math:`x_k` of the proposal, shape ``(n, ndim)``.
    log_weights : array-like
        :math:`\log w_k`, shape ``(n,)``.
    return_std_error : bool
        Also return :math:`\widehat{\mathrm{se}}`.

    Returns
    -------
    float or numpy.ndarray
        :math:`\hat\mu` (an array of shape ``(k,)`` for vector values), or the pair
        ``(estimate, std_error)``.

    Raises
    ------
    ValueError
        If the values do not have one entry (or row) per sample, are not finite where the
        weight is positive, or ``log_weights`` is invalid.

    Examples
    --------
    >>> x = np.array([[0.0], [1.0], [2.0]])
    >>> float(expectation(lambda x: x[:, 0], x, np.log([1.0, 1.0, 2.0])))
    1.25
    """
    lw = _check_log_weights(log_weights)
    values = np.asarray(f(samples) if callable(f) else f, dtype=np.float64)
    if values.ndim == 0 or values.shape[0] != lw.size or values.ndim > 2:
        raise ValueError(f"`f` gave values of shape {values.shape} for {lw.size} weights; "
                         f"expected ({lw.size},) or ({lw.size}, k): one value per sample.")
    weights = np.exp(lw - np.max(lw))
    weights /= weights.sum()
    positive = weights > 0
    if not np.all(np.isfinite(values[positive])):
        raise ValueError("`f` is NaN or infinite at a sample with positive weight.")
    values = np.where(positive.reshape((-1,) + (1,) * (values.ndim - 1)), values, 0.0)
    w = weights.reshape((-1,) + (1,) * (values.ndim - 1))
    estimate = np.sum(w * values, axis=0)
    if not return_std_error:
        return float(estimate) if estimate.ndim == 0 else estimate
    std_error = np.sqrt(np.sum(w**2 * (values - estimate) ** 2, axis=0))
    if estimate.ndim == 0:
        return float(estimate), float(std_error)
    return estimate, std_error
