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
:meth:`nfbook.FlowModel.fit_reverse_kl` trains with it; :mod:`nfbook.importance` corrects the
fitted flow's remaining error by self-normalised importance sampling.
"""

from __future__ import annotations

__all__ = [
    "ReverseKL",
    "check_target",
    "effective_sample_size",
    "expectation",
    "fit_reverse_kl",
    "importance_weights",
]

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

from nfbook.checks import check_data, check_positive_int, check_real
from nfbook.importance import (  # also importable from here, as in nfbook 0.1
    check_target_values,
    effective_sample_size,
    expectation,
    importance_weights,
)
from nfbook.step_loop import steps_per_call
from nfbook.training import Trainer

tfb = tfp.bijectors
tfd = tfp.distributions

TargetLogProb = Callable[[tf.Tensor], Any]


def _has_batch_norm(bijector: tfb.Bijector) -> bool:
    return any(isinstance(m, tfb.BatchNormalization) for m in (bijector, *bijector.submodules))


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
    check_target_values(values, n, ndim, allow_minus_inf=False)
    gradient = None if total is None else tape.gradient(total, probe)
    if gradient is None:
        raise TypeError(
            "No gradient of `target_log_prob` reaches its input: it must be written with "
            "TensorFlow operations (tf.math, tfp.distributions...), not NumPy, so that the "
            "reverse KL can be differentiated through the flow's samples."
        )


class ReverseKL(Trainer):
    r"""The trainer behind :meth:`nfbook.FlowModel.fit_reverse_kl`: a flow trained by reverse KL.

    Its per-example loss is :math:`\log q_\theta(x_k) - \log \tilde p(x_k)` for
    :math:`B` samples :math:`x_k = f_\theta(z_k)` of the flow drawn at every step with their
    log-densities in one pass (``experimental_sample_and_log_prob``: no inverse is run), so
    each step descends

    .. math:: \hat{\mathcal L}(\theta) = \frac{1}{B}\sum_{k=1}^{B}
        \left[\log q_\theta(x_k) - \log \tilde p(x_k)\right]
        - \frac{\lambda}{M}\sum_{j=1}^{M} \log q_\theta(y_j),

    an unbiased estimate of :math:`\mathrm{KL}(q_\theta \| p^*) - \log Z` plus, when
    ``data`` is given, :math:`\lambda` = ``data_weight`` times the negative log-likelihood of
    a minibatch :math:`y_1, \dots, y_M` of the data (drawn with replacement,
    :math:`M = \min(B, \text{len(data)})`). It reads no data set: ``fit`` runs
    ``steps_per_epoch`` steps per epoch. Everything else (steps per compiled call, the NaN
    guard, callbacks) is the engine's, :class:`nfbook.training.Trainer`. Use
    :func:`fit_reverse_kl`, which checks the arguments first.

    Parameters
    ----------
    flow_model : FlowModel
        The flow to train (compiled: its optimizer is used and keeps its state).
    target_log_prob : callable
        Unnormalised target log-density, TensorFlow ops, ``(n, ndim) -> (n,)``.
    batch_size : int
        Samples per step (split between the replicas under a distribution strategy).
    seed : int
        Seed of the stream of stateless sampling seeds (one per step).
    data : numpy.ndarray, optional
        Checked float32 samples of the target, shape ``(m, ndim)``.
    data_weight : float
        :math:`\lambda \ge 0`, the weight of the data term.
    """

    failure = "the reverse-KL loss of a batch"
    advice = ("Check that `target_log_prob` is finite wherever the flow puts samples, or lower "
              "the learning rate.")

    def __init__(self, flow_model: Any, target_log_prob: TargetLogProb,
                 batch_size: int, seed: int, data: np.ndarray | None = None,
                 data_weight: float = 1.0) -> None:
        terms = {"reverse_kl": 1.0} if data is None else {
            "reverse_kl": 1.0, "data_nll": float(data_weight)}
        super().__init__(name="reverse_kl", terms=terms)
        self.flow_model = flow_model
        self.target_log_prob = target_log_prob
        replicas = self.distribute_strategy.num_replicas_in_sync
        self.batch_size = -(-batch_size // replicas)  # per replica
        self.seeds = tf.random.Generator.from_seed(seed)
        self.data = None if data is None else tf.constant(data, dtype=tf.float32)

    @property
    def graph_optimizer(self) -> bool:
        return self.flow_model.graph_optimizer

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        return self.flow_model(x)

    def loss_terms(self, x: tf.Tensor, training: bool) -> dict[str, tf.Tensor]:
        r"""``reverse_kl``: :math:`\log q(x_k) - \log \tilde p(x_k)` for fresh samples; with
        data, ``data_nll``: :math:`-\log q(y_j)` for a minibatch of it (``x`` is ignored)."""
        seed = self.seeds.uniform_full_int([2], dtype=tf.int32)
        batch = None if self.data is None else self._data_batch()
        samples, log_q = self.flow_model.distribution.experimental_sample_and_log_prob(
            self.batch_size, seed=seed)
        log_p = tf.cast(self.target_log_prob(samples), log_q.dtype)
        terms = {"reverse_kl": log_q - log_p}
        if batch is not None:
            terms["data_nll"] = -self.flow_model.distribution.log_prob(batch)
        return terms

    def state_variables(self) -> list[tf.Variable]:
        return list(self.flow_model.distribution.variables)

    def _data_batch(self) -> tf.Tensor:
        n = tf.shape(self.data)[0]
        size = min(self.batch_size, int(self.data.shape[0]))
        index = tf.random.stateless_uniform(
            [size], seed=self.seeds.uniform_full_int([2], dtype=tf.int32),
            minval=0, maxval=n, dtype=tf.int32)
        return tf.gather(self.data, index)

    def _check_input(self, x: Any, context: Any, name: str, batch_size: int | None
                     ) -> tuple[Any, Any]:
        return x, None  # the step counter that fit_reverse_kl passes

    def fit(self, x: Any = None, y: Any = None, **kwargs: Any) -> keras.callbacks.History:
        """Train for ``epochs`` of ``steps_per_epoch`` steps (``x`` is ignored)."""
        # a batch of one dummy number per replica: it only counts steps
        replicas = self.distribute_strategy.num_replicas_in_sync
        steps = tf.data.Dataset.from_tensors(tf.zeros([replicas])).repeat()
        return super().fit(steps, **kwargs)


def fit_reverse_kl(
    model: Any,
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

    Same progress bar and callbacks (``History``, ``EarlyStopping``...) as ``keras.Model.fit``,
    whose ``model`` attribute is a :class:`ReverseKL` trainer holding ``model``; the same steps
    per compiled call as ``model`` was compiled with, and the same NaN guard as
    :meth:`nfbook.FlowModel.fit` (:class:`nfbook.training.Trainer`). The target is checked
    once, on a probe batch of the flow's samples, first.

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
        epoch's steps. With ``data`` it also
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
    nfbook.NonFiniteLossError
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

    with model.distribute_strategy.scope():  # the trainer's variables beside the model's
        trainer = ReverseKL(model, target_log_prob, batch_size, seed, data, data_weight)
        trainer.compile(optimizer=model.optimizer,
                        steps_per_execution=steps_per_call(model))
    try:
        history = trainer.fit(epochs=epochs, steps_per_epoch=steps_per_epoch,
                              verbose=verbose, callbacks=callbacks)
    finally:
        model.history = trainer.history
    return history
