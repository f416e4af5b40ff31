r"""Fitting a flow to an unnormalised density by reverse KL, and importance weights.

With a flow :math:`q_\theta` and a target known up to a constant,
:math:`p^*(x) = \tilde p(x) / Z`, the reverse Kullback-Leibler divergence is

.. math::
    \mathrm{KL}(q_\theta \,\|\, p^*) = \mathbb{E}_{x \sim q_\theta}
    \left[\log q_\theta(x) - \log \tilde p(x)\right] + \log Z,

so :math:`\mathcal{L}(\theta) = \mathbb{E}_{q_\theta}[\log q_\theta - \log \tilde p]` needs
only samples of the flow, their log-densities and :math:`\log \tilde p`; it equals
:math:`\mathrm{KL}(q_\theta \| p^*) - \log Z \geq -\log Z`. Samples are reparameterised,
:math:`x = f_\theta(z)` with :math:`z \sim p_z`, so the gradient passes through them.
:meth:`nfbook.FlowModel.fit_reverse_kl` trains with it; :func:`importance_weights`,
:func:`effective_sample_size` and :func:`expectation` correct the fitted flow's remaining
error by self-normalised importance sampling.
"""

from __future__ import annotations

__all__ = [
    "ImportanceSample",
    "ReverseKLTrainer",
    "check_target",
    "effective_sample_size",
    "expectation",
    "fit_reverse_kl",
    "importance_weights",
]

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

from nfbook.checks import check_data, check_positive_int, check_real
from nfbook.training import add_guard, apply_if_finite, build_optimizer

if TYPE_CHECKING:
    from nfbook.model import FlowModel

tfb = tfp.bijectors
tfd = tfp.distributions

TargetLogProb = Callable[[tf.Tensor], Any]


def _has_batch_norm(bijector: tfb.Bijector) -> bool:
    return any(isinstance(m, tfb.BatchNormalization) for m in (bijector, *bijector.submodules))


def _check_target_values(values: Any, n: int, ndim: int, allow_minus_inf: bool) -> np.ndarray:
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


def check_target(target_log_prob: Any, ndim: int, probe: tf.Tensor) -> None:
    """Check a target log-density once, on a probe batch, before any training.

    Parameters
    ----------
    target_log_prob : callable
        Maps a float32 tensor of shape ``(n, ndim)`` to ``n`` unnormalised log-densities,
        written with TensorFlow operations so that gradients reach the points.
    ndim : int
        Event size of the flow.
    probe : tf.Tensor
        Points of shape ``(n, ndim)``, e.g. samples of the flow.

    Raises
    ------
    TypeError
        If ``target_log_prob`` is not callable, returns something that is not a real number
        array, or is not differentiable with TensorFlow (no gradient reaches the points).
    ValueError
        If it returns the wrong shape, NaN, +inf, or -inf at a probe point.

    Examples
    --------
    A log-density per point passes silently; one per coordinate (a forgotten
    ``reduce_sum``) is refused:

    >>> check_target(lambda x: -0.5 * tf.reduce_sum(x**2, axis=-1), 2, tf.zeros([4, 2]))
    >>> try:
    ...     check_target(lambda x: -0.5 * x**2, 2, tf.zeros([4, 2]))
    ... except ValueError as error:
    ...     print(str(error).split(":")[0])
    `target_log_prob` returned shape (4, 2) for input of shape (4, 2); expected (4,)
    """
    if not callable(target_log_prob):
        raise TypeError(f"`target_log_prob` must be a callable mapping points of shape "
                        f"(n, {ndim}) to n log-densities, got {type(target_log_prob).__name__}.")
    probe = tf.convert_to_tensor(probe)
    n = int(probe.shape[0])
    with tf.GradientTape() as tape:
        tape.watch(probe)
        values = target_log_prob(probe)
        # a Python list or NumPy array passes through here; the gradient check says why not
        total = tf.reduce_sum(tf.cast(values, probe.dtype)) if isinstance(
            values, (tf.Tensor, tf.Variable)) else None
    _check_target_values(values, n, ndim, allow_minus_inf=False)
    gradient = None if total is None else tape.gradient(total, probe)
    if gradient is None:
        raise TypeError(
            "No gradient of `target_log_prob` reaches its input: it must be written with "
            "TensorFlow operations (tf.math, tfp.distributions...), not NumPy, so that the "
            "reverse KL can be differentiated through the flow's samples."
        )


class ReverseKLTrainer(keras.Model):
    r"""A tf_keras ``Model`` whose ``fit`` trains a :class:`~nfbook.FlowModel` by reverse KL.

    Each ``train_step`` draws ``batch_size`` samples :math:`x_k = f_\theta(z_k)` with their
    log-densities :math:`\log q_\theta(x_k)` in one pass (``experimental_sample_and_log_prob``:
    no inverse is run) and takes a step on

    .. math:: \hat{\mathcal L}(\theta) = \frac{1}{B}\sum_{k=1}^{B}
        \left[\log q_\theta(x_k) - \log \tilde p(x_k)\right]
        - \frac{\lambda}{M}\sum_{j=1}^{M} \log q_\theta(y_j),

    an unbiased estimate of :math:`\mathrm{KL}(q_\theta \| p^*) - \log Z` plus, when
    ``data`` is given, :math:`\lambda` = ``data_weight`` times the negative log-likelihood of
    a minibatch :math:`y_1, \dots, y_M` of the data (drawn with replacement,
    :math:`M = \min(B, \text{len(data)})`). The data it is fitted on is a dummy that only
    counts steps. Use :func:`fit_reverse_kl`, which checks the arguments first.

    Parameters
    ----------
    flow_model : FlowModel
        The flow to train (compiled: its optimizer is used and keeps its state).
    target_log_prob : callable
        Unnormalised target log-density, TensorFlow ops, ``(n, ndim) -> (n,)``.
    batch_size : int
        Samples per step.
    seed : int
        Seed of the stream of stateless sampling seeds (one per step).
    data : numpy.ndarray, optional
        Checked float32 samples of the target, shape ``(m, ndim)``.
    data_weight : float
        :math:`\lambda \ge 0`, the weight of the data term.
    """

    def __init__(self, flow_model: FlowModel, target_log_prob: TargetLogProb,
                 batch_size: int, seed: int, data: np.ndarray | None = None,
                 data_weight: float = 1.0) -> None:
        super().__init__(name="reverse_kl")
        self.flow_model = flow_model
        self.target_log_prob = target_log_prob
        self.batch_size = batch_size
        self.seeds = tf.random.Generator.from_seed(seed)
        self.data = None if data is None else tf.constant(data, dtype=tf.float32)
        self.data_weight = float(data_weight)
        self.kl = keras.metrics.Mean(name="reverse_kl")
        self.nll = keras.metrics.Mean(name="data_nll")
        self.skipped_steps = keras.metrics.Sum(name="skipped_steps")

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.kl, self.nll, self.skipped_steps]

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        return self.flow_model(x)

    def _data_batch(self) -> tf.Tensor:
        n = tf.shape(self.data)[0]
        size = min(self.batch_size, int(self.data.shape[0]))
        index = tf.random.stateless_uniform(
            [size], seed=self.seeds.uniform_full_int([2], dtype=tf.int32),
            minval=0, maxval=n, dtype=tf.int32)
        return tf.gather(self.data, index)

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        seed = self.seeds.uniform_full_int([2], dtype=tf.int32)
        batch = None if self.data is None else self._data_batch()
        variables = self.flow_model.trainable_variables
        with tf.GradientTape() as tape:
            x, log_q = self.flow_model.distribution.experimental_sample_and_log_prob(
                self.batch_size, seed=seed)
            log_p = tf.cast(self.target_log_prob(x), log_q.dtype)
            per_sample = log_q - log_p
            loss = tf.reduce_mean(per_sample)
            if batch is not None:
                nll = -self.flow_model.distribution.log_prob(batch)
                loss = loss + self.data_weight * tf.reduce_mean(nll)
        gradients = tape.gradient(loss, variables)
        skipped = apply_if_finite(self.optimizer, loss, gradients, variables,
                                  halted=self.skipped_steps.result() > 0)
        finite = tf.equal(skipped, 0.0)
        self.skipped_steps.update_state(skipped)
        self.kl.update_state(tf.where(finite, per_sample, tf.zeros_like(per_sample)),
                             sample_weight=tf.cast(finite, per_sample.dtype))
        if batch is None:
            return {"loss": self.kl.result(), "skipped_steps": self.skipped_steps.result()}
        self.nll.update_state(tf.where(finite, nll, tf.zeros_like(nll)),
                              sample_weight=tf.cast(finite, nll.dtype))
        return {
            "loss": self.kl.result() + self.data_weight * self.nll.result(),
            "reverse_kl": self.kl.result(),
            "data_nll": self.nll.result(),
            "skipped_steps": self.skipped_steps.result(),
        }


def fit_reverse_kl(
    model: FlowModel,
    target_log_prob: TargetLogProb,
    *,
    epochs: int = 1,
    steps_per_epoch: int = 100,
    batch_size: int = 256,
    data: Any = None,
    data_weight: float = 1.0,
    callbacks: list[keras.callbacks.Callback] | None = None,
    verbose: str | int = "auto",
    seed: int | None = None,
) -> keras.callbacks.History:
    r"""Train ``model`` to minimise :math:`\mathrm{KL}(q_\theta \| p^*)` given
    :math:`\log \tilde p = \log p^* + \log Z`.

    The loss, per epoch the mean over its ``steps_per_epoch * batch_size`` samples, is

    .. math:: \mathcal L(\theta) = \mathbb E_{x \sim q_\theta}
        \left[\log q_\theta(x) - \log \tilde p(x)\right]
        = \mathrm{KL}(q_\theta \,\|\, p^*) - \log Z,

    the reverse KL shifted by the unknown :math:`-\log Z` (so it may be negative; its
    minimum :math:`-\log Z` is reached at :math:`q_\theta = p^*`). It is mode-seeking: where
    :math:`q_\theta` puts no mass, :math:`p^*` is never looked at.

    With ``data`` (a few samples of :math:`p^*`, e.g. known configurations of a molecule),
    the loss becomes :math:`\mathcal L(\theta) + \lambda\, \mathrm{NLL}_\theta(\text{data})`
    with :math:`\lambda` = ``data_weight``: the mass-covering maximum-likelihood term of
    :meth:`nfbook.FlowModel.fit` pulls the flow onto every region the data visit, and the
    energy term shapes it where there is no data (the combined loss of Boltzmann
    generators, Noé et al. 2019). Each step then also scores a minibatch of the data
    (:math:`\min(B, m)` rows drawn with replacement), which runs the flow's inverse.

    Same progress bar and callbacks (``History``, ``EarlyStopping``, ``TerminateOnNaN``...) as
    ``keras.Model.fit``, whose ``model`` attribute is a :class:`ReverseKLTrainer` holding
    ``model``. A step whose loss or gradient is not finite is not applied, and training
    stops with :class:`nfbook.training.NonFiniteLossError` (the weights stay those of the
    last finite step). The target is checked once, on a probe batch of the flow's samples, first.

    Parameters
    ----------
    model : FlowModel
        A compiled flow without batch normalisation.
    target_log_prob : callable
        :math:`\log \tilde p`: maps a float32 tensor of shape ``(n, ndim)`` to ``n`` values,
        written with TensorFlow ops (it is differentiated and traced into a graph).
    epochs : int
        Number of epochs, ``>= 1``.
    steps_per_epoch : int
        Optimiser steps per epoch, ``>= 1``.
    batch_size : int
        Flow samples per step, ``>= 1``.
    data : array-like, optional
        Samples of the target, shape ``(m, ndim)``, finite, ``m >= 1``.
    data_weight : float
        Weight :math:`\lambda \ge 0` of the data's NLL; used only with ``data``.
    callbacks : list of keras.callbacks.Callback, optional
        As in ``keras.Model.fit``.
    verbose : "auto", 0, 1 or 2
        As in ``keras.Model.fit``.
    seed : int, optional
        Seed of the samples, ``0 <= seed < 2**31`` (each step gets its own stateless seed
        from it); by default drawn from NumPy's global generator, so
        :func:`nfbook.set_seed` makes a run repeatable.

    Returns
    -------
    keras.callbacks.History
        ``history.history["loss"]`` is the loss per epoch (nats), the mean over the
        epoch's steps; ``"skipped_steps"`` counts non-finite steps. With ``data`` it also
        holds its two terms, ``"reverse_kl"`` (:math:`\mathcal L`) and ``"data_nll"``, with
        ``loss = reverse_kl + data_weight * data_nll``. Also stored as ``model.history``.

    Raises
    ------
    TypeError
        If ``target_log_prob`` is not callable, not differentiable with TensorFlow, an
        integer argument is not an integer, ``data`` is not numeric or ``data_weight`` is
        not a number.
    ValueError
        If ``target_log_prob`` returns the wrong shape, NaN, +inf or -inf on the probe batch,
        an integer argument is out of range, ``data`` has the wrong shape or non-finite
        rows, ``data_weight`` is negative or not finite, the flow has batch normalisation,
        or it has no trainable variables.
    RuntimeError
        If ``model`` is not compiled.
    nfbook.training.NonFiniteLossError
        If the loss became NaN or infinite during training.

    Notes
    -----
    Batch normalisation is refused. TFP's ``BatchNormalization`` bijector uses batch
    statistics only in the density direction (data to base); sampling, which reverse KL
    runs in every step, always uses the running averages, and no data batch ever passes to
    update them. So the layer would silently be a fixed affine map with stale statistics;
    and batch statistics in the sampling direction would make each sample depend on the
    others in its batch, so :math:`\log q_\theta(x_k)` would no longer be the density of the
    samples. Build the flow with ``batch_norm=False``.

    Examples
    --------
    >>> import nfbook, tf_keras as keras
    >>> model = nfbook.FlowModel(nfbook.realnvp(2, hidden_units=(8,), num_layers=2), ndim=2)
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-2))
    >>> target = lambda x: -0.5 * tf.reduce_sum((x - 1.0) ** 2, axis=-1)
    >>> history = model.fit_reverse_kl(target, epochs=2, steps_per_epoch=5, verbose=0)
    >>> len(history.history["loss"])
    2

    With a few samples of the target as well:

    >>> data = np.random.default_rng(0).normal(1.0, 1.0, size=(32, 2))
    >>> history = fit_reverse_kl(model, target, data=data, steps_per_epoch=5, verbose=0)
    >>> logs = {key: value[-1] for key, value in history.history.items()}
    >>> bool(np.isclose(logs["loss"], logs["reverse_kl"] + logs["data_nll"], rtol=1e-5))
    True
    """
    epochs = check_positive_int("epochs", epochs)
    steps_per_epoch = check_positive_int("steps_per_epoch", steps_per_epoch)
    batch_size = check_positive_int("batch_size", batch_size)
    if _has_batch_norm(model.bijector):
        raise ValueError(
            "Reverse-KL training does not support batch normalisation: sampling always uses "
            "the running statistics, which no data batch would ever update, and batch "
            "statistics in the sampling direction would make each sample depend on the rest "
            "of its batch. Build the flow with batch_norm=False."
        )
    if not model.trainable_variables:
        raise ValueError("This FlowModel has no trainable variables, so fit_reverse_kl() "
                         "would train nothing.")
    if model.optimizer is None:
        raise RuntimeError("Call compile() before fit_reverse_kl().")
    if data is not None:
        data = check_data(data, model.ndim, "data")
    data_weight = check_real("data_weight", data_weight)
    if seed is None:
        seed = int(np.random.randint(0, 2**31 - 1))
    seed = check_positive_int("seed", seed, minimum=0)
    if seed >= 2**31:
        raise ValueError(f"`seed` must be below 2**31, got {seed}.")
    probe = model.distribution.sample(min(batch_size, 256), seed=(seed, 2**31 - 1))
    check_target(target_log_prob, model.ndim, probe)

    trainer = ReverseKLTrainer(model, target_log_prob, batch_size, seed, data, data_weight)
    trainer.compile(optimizer=model.optimizer)
    build_optimizer(model.optimizer, model.trainable_variables)
    kwargs: dict[str, Any] = {"callbacks": callbacks}
    guard = add_guard(kwargs)
    steps = tf.data.Dataset.from_tensors(0.0).repeat()
    history = trainer.fit(steps, epochs=epochs, steps_per_epoch=steps_per_epoch,
                          verbose=verbose, callbacks=kwargs["callbacks"])
    model.history = history
    guard.raise_if_stopped(
        "the reverse-KL loss of a batch",
        "Check that `target_log_prob` is finite wherever the flow puts samples, or lower "
        "the learning rate.",
    )
    return history


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
    log_p = _check_target_values(target_log_prob(x), n, int(x.shape[-1]), allow_minus_inf=True)
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
