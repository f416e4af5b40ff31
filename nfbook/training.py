r"""The training engine: one tf_keras ``Model`` base for every way nfbook trains a flow.

:class:`nfbook.FlowModel` (maximum likelihood), :class:`nfbook.reverse_kl.ReverseKL` (reverse
KL from an unnormalised density) and :class:`nfbook.FlowMatching` (regression on a vector
field) are each a :class:`Trainer` that says only what its per-example loss is. The engine
owns the rest: ``compile`` (no loss argument), ``fit`` with its data checks, the steps run per
compiled call, the NaN guard, weight averaging, and the one ``train_step``.
"""

from __future__ import annotations

__all__ = ["Trainer"]

import contextlib
from collections.abc import Callable
from typing import Any

import tensorflow as tf
import tf_keras as keras

from nfbook import private_api
from nfbook.inputs import check_input, check_validation, data_errors, size_known
from nfbook.keras_checks import check_callbacks, check_compile_args
from nfbook.nan_guard import RollBackOnNonFinite, step_is_finite
from nfbook.optimizer_state import build_optimizer, optimizer_variables
from nfbook.step_loop import one_step_per_call_if, step_loop, steps_per_call
from nfbook.weight_average import AverageWeightsEachEpoch, WeightAverage


class Trainer(keras.Model):
    r"""A tf_keras ``Model`` trained on a weighted sum of per-example losses.

    A subclass defines :meth:`loss_terms`, which maps a batch to one or more per-example
    losses :math:`\ell_k(x_i)`, and :meth:`state_variables`; every training step then takes one
    optimiser step on

    .. math:: \mathcal{L} = \sum_k w_k \, \frac{1}{n_k} \sum_{i=1}^{n_k} \ell_k(x_i)

    with the weights :math:`w_k` given to the constructor. ``history.history["loss"]`` is that
    sum, averaged over the epoch's examples; with more than one term each term's mean is
    logged under its own name too.

    What every trainer shares:

    - ``compile(optimizer="adam", steps_per_execution=100)``: no loss argument; the steps of a
      compiled call run in one ``tf.while_loop`` (:func:`nfbook.step_loop.step_loop`), so a
      small batch does not pay a return to Python each.
    - ``fit``: the data (arrays, DataFrames, ``tf.data`` sets) is checked before any step and
      batch by batch; data of unknown length runs one step per call; callbacks must be
      tf_keras ones.
    - The NaN guard: every step applies its update and counts it if its loss or a gradient is
      not finite; after the compiled call that ran such a step, training stops, the trainer
      goes back to its state from before that call (weights, batch-norm statistics, optimizer
      state, weight average: with fewer than 100 steps per call, from at most 99 finite steps
      before the bad one), and ``fit`` raises :class:`nfbook.NonFiniteLossError` saying how many
      updates were undone (:class:`nfbook.nan_guard.RollBackOnNonFinite`).
    - Weight averaging, if ``average_weights``: a moving average of the weights over about
      the last third of an epoch is handed to the model at the end of every epoch
      (:class:`nfbook.weight_average.AverageWeightsEachEpoch`).
    - Several devices: built and compiled under a ``tf.distribute.MirroredStrategy`` scope,
      ``fit`` trains on every replica, each batch split between them.

    Parameters
    ----------
    name : str
        Name of the Keras model.
    terms : dict of str to float
        The names of the per-example losses that :meth:`loss_terms` returns and their weights
        :math:`w_k`.
    ndim : int or None
        Width of the data ``fit`` takes, or ``None`` for a trainer that reads no data.
    context_dim : int or None
        Width of the context that comes with each point (a conditional flow: ``fit(x,
        context=c)``), or ``None``.
    average_weights : bool
        Hand the moving average of the weights to the model after every epoch (created by
        :meth:`start_weight_average`).
    """

    failure = "the loss of a batch"
    """What becomes non-finite, for the NaN guard's message."""
    advice = "Standardise the data or lower the learning rate."
    """What the user may do about a non-finite loss."""
    graph_optimizer = False  # keep Grappler in the step loop (nfbook.step_loop.step_loop)

    def __init__(self, *, name: str, terms: dict[str, float] | None = None,
                 ndim: int | None = None, context_dim: int | None = None,
                 average_weights: bool = False) -> None:
        super().__init__(name=name)
        self.term_weights = dict(terms or {"loss": 1.0})
        self.term_means = [keras.metrics.Mean(name=key) for key in self.term_weights]
        self.skipped_steps = keras.metrics.Sum(name="skipped_steps")
        self.ndim = ndim
        self.context_dim = context_dim
        self.average_weights = bool(average_weights)
        self.weight_average: WeightAverage | None = None
        # Under a strategy every replica returns the same logs (metric results are reduced
        # across replicas); Keras would otherwise add them up.
        self.distribute_reduction_method = "first"

    def start_weight_average(self) -> None:
        """Create the moving average of the trainable variables if ``average_weights``: the
        last line of a subclass's ``__init__``, once its variables exist (so that the model's
        weights are the same before and after ``fit``)."""
        if self.average_weights:
            self.weight_average = WeightAverage(self.trainable_variables)

    def loss_terms(self, x: Any, training: bool) -> dict[str, tf.Tensor]:
        """The per-example losses of batch ``x`` (:meth:`model_inputs`), each of shape
        ``(n_k,)``, keyed as ``terms``."""
        raise NotImplementedError

    def model_inputs(self, data: Any) -> Any:
        """What a batch from Keras's data pipeline is for the model: the points, or for a
        conditional trainer the pair ``(points, context)`` (Keras carries the context where
        it would carry labels)."""
        if isinstance(data, tuple) and len(data) == 1:
            data = data[0]
        if self.context_dim is None:
            return data[0] if isinstance(data, tuple) else data
        return data[0], data[1]

    def state_variables(self) -> list[tf.Variable]:
        """Every variable a training step changes, besides the optimizer's and the weight
        average's (e.g. batch-norm statistics): what the NaN guard restores."""
        raise NotImplementedError

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        """The mean of each loss term and the count of non-finite steps (read by the NaN
        guard, not logged); all reset at each epoch."""
        return [*self.term_means, self.skipped_steps]

    def _logs(self) -> dict[str, tf.Tensor]:
        # an epoch without one finite step logs NaN, not Keras's 0 (every replica counts the
        # same steps: the NaN guard's flag is all-reduced)
        means = [tf.where(metric.count > 0, metric.result(), float("nan"))
                 for metric in self.term_means]
        total = tf.add_n([w * m for w, m in zip(self.term_weights.values(), means)])
        if len(means) == 1:
            return {"loss": total}
        return {"loss": total, **{m.name: r for m, r in zip(self.term_means, means)}}

    def compile(self, optimizer: Any = "adam", loss: Any = None,
                steps_per_execution: int | str = 100, **kwargs: Any) -> None:
        """Configure training; the loss is the trainer's own.

        Parameters
        ----------
        optimizer : str or keras.optimizers.Optimizer
            Any tf_keras optimizer (a Keras 3 one, from ``tf.keras``, is refused); the
            default ``"adam"`` is ``keras.optimizers.Adam(1e-3)``.
        loss : None
            Must stay ``None``.
        steps_per_execution : int or "auto"
            Batches per call of the compiled training (and evaluation) function, as in Keras,
            but 100 by default here (Keras: 1). Batch-level callbacks and the progress bar
            then see every 100th batch (and the last of each epoch); epoch-level callbacks are
            unchanged. Pass 1 for a callback after every batch.
        **kwargs
            Passed to ``keras.Model.compile`` (``jit_compile``, ``run_eagerly``...).

        Raises
        ------
        TypeError
            If a ``loss`` is given, or the optimizer or a metric is a Keras 3 object.
        ValueError
            If ``jit_compile=True`` under a strategy whose replicas are CPU devices.
        """
        if loss is not None:
            raise TypeError(f"{type(self).__name__} trains on its own loss; compile() takes "
                            "no `loss` (and fit() takes no labels).")
        check_compile_args(optimizer, self.distribute_strategy, kwargs)
        super().compile(optimizer=optimizer, steps_per_execution=steps_per_execution,
                        **kwargs)

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        """One optimiser step on the weighted loss of one batch; counts it in
        ``skipped_steps`` if it is not finite (the NaN guard undoes it)."""
        x = self.model_inputs(data)
        variables = self.trainable_variables
        # Under a strategy the optimizer sums the replicas' gradients: scale each by 1/R.
        replica = tf.distribute.get_replica_context()
        replicas = replica.num_replicas_in_sync
        with tf.GradientTape() as tape:
            terms = self.loss_terms(x, training=True)
            values = [terms[key] for key in self.term_weights]
            loss = tf.add_n([w * tf.reduce_mean(v)
                             for w, v in zip(self.term_weights.values(), values)])
            scaled = loss / replicas if replicas > 1 else loss
        gradients = tape.gradient(scaled, variables)
        finite = step_is_finite(loss, gradients, halted=self.skipped_steps.result() > 0)
        self.optimizer.apply_gradients(
            [(g, v) for g, v in zip(gradients, variables) if g is not None])
        if self.weight_average is not None:
            self.weight_average.update()
        bad = 1.0 - tf.cast(finite, tf.float32)
        if replicas > 1:  # one replica's NaN reaches every replica's weights: count the step
            bad = tf.minimum(replica.all_reduce(tf.distribute.ReduceOp.SUM, bad), 1.0)
            finite = tf.equal(bad, 0.0)
            bad = bad / replicas  # the metric adds up the replicas' counts
        self.skipped_steps.update_state(bad)
        for metric, value in zip(self.term_means, values):
            metric.update_state(tf.where(finite, value, tf.zeros_like(value)),
                                sample_weight=tf.cast(finite, value.dtype))
        return self._logs()

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        terms = self.loss_terms(self.model_inputs(data), training=False)
        for metric, key in zip(self.term_means, self.term_weights):
            metric.update_state(terms[key])
        return self._logs()

    def predict_step(self, data: Any) -> tf.Tensor:
        return self(self.model_inputs(data), training=False)

    def make_train_function(self, force: bool = False) -> Callable:
        """The function ``fit`` calls once per execution: ``steps_per_execution`` training
        steps in one ``tf.while_loop`` (:func:`nfbook.step_loop.step_loop`), or Keras's own
        function where that loop does not apply (eager runs, distribution strategies)."""
        if self.train_function is not None and not force:
            return self.train_function
        if not private_api.plain_graph_model(self):
            return super().make_train_function(force)
        self.train_function = self._step_loop(self.train_step, "train")
        return self.train_function

    def make_test_function(self, force: bool = False) -> Callable:
        """The function ``evaluate`` calls once per execution, as :meth:`make_train_function`."""
        if self.test_function is not None and not force:
            return self.test_function
        if not private_api.plain_graph_model(self):
            return super().make_test_function(force)
        self.test_function = self._step_loop(self.test_step, "test")
        return self.test_function

    def _step_loop(self, step: Callable, kind: str) -> Callable:
        return step_loop(step, self._logs, private_api.steps_per_execution(self),
                         private_api.step_counter(self, kind), jit_compile=bool(self.jit_compile),
                         graph_optimizer=self.graph_optimizer)

    def _check_input(self, x: Any, context: Any, name: str, batch_size: int | None
                     ) -> tuple[Any, Any]:
        if context is not None and self.context_dim is None and not hasattr(self, "bijector"):
            raise ValueError(f"A {type(self).__name__} takes no context.")
        return check_input(x, self.ndim, name, batch_size, context, self.context_dim)

    def _rollback_state(self) -> list[tf.Variable]:
        state = [*self.state_variables(), *optimizer_variables(self.optimizer)]
        if self.weight_average is not None:
            state += self.weight_average.averages
        return state

    def fit(self, x: Any = None, y: Any = None, *, context: Any = None, **kwargs: Any
            ) -> keras.callbacks.History:
        """Train on data ``x`` (and its ``context``, for a conditional flow); same options as
        ``keras.Model.fit``.

        The data (``x``, ``context`` and ``validation_data``) is checked: arrays, lists,
        tensors and DataFrames first (shape, real numbers, at least one row, no NaN or
        infinity); a ``tf.data.Dataset`` when passed (element dtype and shape) and then batch
        by batch (a ``ValueError`` names the batch and the epoch). A data set of single points
        is batched by ``batch_size`` (Keras's 32). Callbacks are checked before any step
        (:func:`nfbook.keras_checks.check_callbacks`).

        Parameters
        ----------
        x : array-like, pandas.DataFrame, tf.data.Dataset or keras.utils.Sequence
            Training data, shape ``(n, ndim)`` (a data set yields batches of points, or
            single points; for a conditional flow, ``(x, context)`` pairs of them).
        y : None
            Must stay ``None``: there are no labels.
        context : array-like, optional
            A conditional flow's context, shape ``(n, context_dim)``; its
            ``validation_data`` is then ``(x_val, context_val)``.
        **kwargs
            Any option of ``keras.Model.fit`` (``epochs``, ``batch_size``,
            ``validation_data``, ``callbacks``...).

        Returns
        -------
        keras.callbacks.History
            Per-epoch ``loss`` and, with validation data, ``val_loss``.

        Raises
        ------
        TypeError
            If labels ``y`` are passed, the data is not numeric, or a callback or the data
            is a Keras 3 object.
        ValueError
            On bad data, a whole-model ``ModelCheckpoint`` to a ``.keras`` or ``.h5`` file,
            or if the model has no trainable variables.
        RuntimeError
            If the model is not compiled.
        nfbook.NonFiniteLossError
            If the loss or a gradient of a batch became NaN or infinite (see the class).
        """
        if y is not None:
            raise TypeError(f"{type(self).__name__}.fit(x) takes no labels. Drop the `y` "
                            "argument (a conditional flow takes `context=`).")
        if not self.trainable_variables:
            raise ValueError(f"This {type(self).__name__} has no trainable variables, so fit() "
                             "would train nothing. Build the flow from tf_keras layers "
                             "(nfbook builders do).")
        if self.optimizer is None:
            raise RuntimeError("Call compile() before fit().")
        x, context = self._check_input(x, context, "x", kwargs.get("batch_size"))
        validation = kwargs.get("validation_data")
        if validation is not None:
            validation = kwargs["validation_data"] = check_validation(
                validation, self.ndim,
                kwargs.get("validation_batch_size") or kwargs.get("batch_size"),
                self.context_dim)
        callbacks = check_callbacks(kwargs.get("callbacks"))
        with self.distribute_strategy.scope():
            build_optimizer(self.optimizer, self.trainable_variables)
        if self.weight_average is not None:  # before the user's, who see the averaged weights
            callbacks.insert(0, AverageWeightsEachEpoch(self.weight_average))
        guard = RollBackOnNonFinite(self._rollback_state, lambda: steps_per_call(self))
        kwargs["callbacks"] = [guard, *callbacks]
        unknown = not size_known(x, kwargs.get("steps_per_epoch")) or (
            validation is not None
            and not size_known(validation, kwargs.get("validation_steps")))
        first_epoch = kwargs.get("initial_epoch", 0) + 1

        def epoch() -> int:  # the epoch being run, counted from 1
            done = self.history.epoch if getattr(self, "history", None) else []
            return done[-1] + 2 if done else first_epoch

        try:
            with one_step_per_call_if(self, unknown), data_errors(epoch):
                history = super().fit(x, context, **kwargs)  # the context as Keras's y
        finally:  # Keras drops its cached validation data only if fit ends normally
            private_api.drop_cached_validation(self)
        guard.raise_if_stopped(
            self.failure, self.advice,
            "the weights" if self.weight_average is None
            else "the moving average of the weights")
        return history

    def evaluate(self, x: Any = None, y: Any = None, *, context: Any = None, **kwargs: Any
                 ) -> Any:
        """The mean loss on ``x`` (the mean NLL in nats, for a :class:`nfbook.FlowModel`).

        Parameters
        ----------
        x : array-like, pandas.DataFrame, tf.data.Dataset or keras.utils.Sequence
            Data, shape ``(n, ndim)``, checked as in :meth:`fit`.
        y : None
            Must stay ``None`` (no labels); kept for Keras's signature.
        context : array-like, optional
            A conditional flow's context, shape ``(n, context_dim)``.
        **kwargs
            Any option of ``keras.Model.evaluate`` (``batch_size``, ``verbose``...).

        Returns
        -------
        float
            The mean loss (a list with it, or a dict with ``return_dict=True``, as in Keras).

        Raises
        ------
        ValueError, TypeError
            On bad data, as in :meth:`fit`.
        """
        cached = kwargs.get("_use_cached_eval_dataset")  # fit's validation, checked by fit
        if y is not None and not cached:
            raise TypeError(f"{type(self).__name__}.evaluate(x) takes no labels. Drop the `y` "
                            "argument (a conditional flow takes `context=`).")
        if not cached:  # the context travels as Keras's y
            x, y = self._check_input(x, context, "x", kwargs.get("batch_size"))
        errors = contextlib.nullcontext() if cached else data_errors()  # fit's has the epoch
        with one_step_per_call_if(self, not size_known(x, kwargs.get("steps"))), errors:
            return super().evaluate(x, y, **kwargs)

    def predict(self, x: Any, *, context: Any = None, **kwargs: Any) -> Any:
        """The model's output (:math:`\\log p(x)` for a flow) for every row, in batches.

        Parameters
        ----------
        x : array-like, pandas.DataFrame, tf.data.Dataset or keras.utils.Sequence
            Data, shape ``(n, ndim)``, checked as in :meth:`fit`.
        context : array-like, optional
            A conditional flow's context, shape ``(n, context_dim)``.
        **kwargs
            Any option of ``keras.Model.predict`` (``batch_size``, ``verbose``...).

        Returns
        -------
        numpy.ndarray
            Shape ``(n,)``.

        Raises
        ------
        ValueError, TypeError
            On bad data, as in :meth:`fit`.
        """
        x, context = self._check_input(x, context, "x", kwargs.get("batch_size"))
        with one_step_per_call_if(self, not size_known(x, kwargs.get("steps"))), data_errors():
            return super().predict(x if context is None else (x, context), **kwargs)
