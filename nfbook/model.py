"""FlowModel: a tf_keras Model around a TFP flow, trained by negative log-likelihood."""

from __future__ import annotations

__all__ = ["FlowModel"]

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

from nfbook import density
from nfbook.bijectors import batch_norm_mode
from nfbook.checks import check_data, check_positive_int
from nfbook.flow_weights import FlowWeights, keras_layers
from nfbook.inputs import check_input, check_validation, data_errors, size_known
from nfbook.keras_checks import (
    check_callbacks,
    check_model_path,
    check_tf_keras,
    keras3_layers,
)
from nfbook.reverse_kl import fit_reverse_kl
from nfbook.training import (
    AverageWeightsEachEpoch,
    WeightAverage,
    add_guard,
    build_optimizer,
    optimizer_variables,
    resolve_optimizer,
    step_is_finite,
    step_loop,
)

tfb = tfp.bijectors
tfd = tfp.distributions


class FlowModel(FlowWeights, keras.Model):
    r"""A normalizing flow as a tf_keras ``Model`` whose output is :math:`\log p(x)`.

    The density is the change-of-variables formula for the flow :math:`x = f(z)`,
    :math:`z \sim p_z`:

    .. math:: \log p(x) = \log p_z(f^{-1}(x)) + \log\left|\det J_{f^{-1}}(x)\right|,

    and training minimises the mean negative log-likelihood (NLL) of the data in nats,
    :math:`-\frac{1}{n}\sum_k \log p(x_k)`. ``compile()`` needs no loss and ``fit(x)`` no
    labels. Under the wrapper stay the plain TFP objects: :attr:`bijector` and
    :attr:`distribution` (a ``tfd.TransformedDistribution``).

    Batch-norm bijectors inside the flow use batch statistics while training and running
    statistics everywhere else (``model(x)``, :meth:`log_prob`, ``evaluate``, ``predict``,
    :meth:`sample`).

    A layer of the flow set ``trainable = False`` (or a layer inside it) is not trained and is
    listed in ``non_trainable_weights``; call :meth:`compile` again after changing it, as with
    any Keras model.

    With ``average_weights=True`` (the default), :meth:`fit` keeps an exponential moving
    average of the weights over the training steps (Polyak averaging, spanning about the last
    third of an epoch) and hands it over at the end of every epoch: the validation loss, the
    callbacks and the trained model all use the averaged weights, while the optimiser goes on
    from the raw ones; see :class:`nfbook.training.AverageWeightsEachEpoch`.

    Two things make an epoch cheaper without changing any number: ``model(x)`` runs each
    network once per layer (:func:`nfbook.density.log_prob`; TFP's ``log_prob`` runs it twice),
    and :meth:`fit` runs 100 steps per compiled call by default (see :meth:`compile`).

    The usual Keras tools work: ``summary()``, callbacks such as ``ModelCheckpoint`` (whole
    model in nfbook's format, or weights only), ``TensorBoard``, ``CSVLogger``,
    ``EarlyStopping`` and ``ReduceLROnPlateau`` (the monitored quantities are ``loss`` and
    ``val_loss``). They must come from tf_keras (``import tf_keras as keras``): Keras 3
    objects (``tf.keras.*``) are refused with a ``TypeError``.

    Parameters
    ----------
    bijector : tfb.Bijector
        The flow, mapping base samples to data (e.g. from :func:`nfbook.maf`).
    ndim : int
        Event size of the data.
    base : tfd.Distribution, optional
        Base distribution with event shape ``[ndim]``; a standard normal by default.
    name : str
        Name of the Keras model.
    average_weights : bool
        Hand the moving average of the weights over to the model after every epoch of
        :meth:`fit` (see above); ``False`` keeps the last iterate, as plain Keras does.

    Raises
    ------
    TypeError
        If ``bijector`` is not a ``tfb.Bijector``.
    ValueError
        If ``ndim < 1`` or ``base`` has another event shape.

    Examples
    --------
    >>> import nfbook
    >>> model = FlowModel(nfbook.maf(2, hidden_units=(16,), num_layers=2), ndim=2)
    >>> model.log_prob([[0.0, 0.0]]).shape
    TensorShape([1])
    >>> model.compile()
    >>> history = model.fit(nfbook.data.moons(256), epochs=2, batch_size=64, verbose=0)
    >>> len(history.history["loss"])
    2
    """

    def __init__(
        self,
        bijector: tfb.Bijector,
        ndim: int,
        base: tfd.Distribution | None = None,
        name: str = "flow_model",
        average_weights: bool = True,
    ) -> None:
        super().__init__(name=name)
        if not isinstance(bijector, tfb.Bijector):
            raise TypeError(f"`bijector` must be a tfp.bijectors.Bijector, got "
                            f"{type(bijector).__name__}.")
        self.ndim = check_positive_int("ndim", ndim)
        self.default_base = base is None
        if base is None:
            base = tfd.MultivariateNormalDiag(loc=tf.zeros([self.ndim]))
        if base.event_shape != [self.ndim]:
            raise ValueError(f"`base` has event shape {base.event_shape.as_list()}; expected "
                             f"[{self.ndim}] to match `ndim`.")
        keras3 = keras3_layers(bijector)
        if keras3:
            raise TypeError(f"The bijector holds Keras 3 layer(s) ({', '.join(keras3)}), whose "
                            "weights a tf_keras model cannot train. Build them with "
                            "`import tf_keras as keras` instead of `tf.keras`.")
        self._bijector = bijector
        self._distribution = tfd.TransformedDistribution(base, bijector)
        self._training_distribution = tfd.TransformedDistribution(
            base, batch_norm_mode(bijector, training=True))
        # Keras tracks layers and variables held in attributes; TFP bijectors are not layers.
        self.flow_layers = keras_layers(bijector)
        layer_variables = {id(v) for layer in self.flow_layers for v in layer.variables}
        self.flow_variables = [v for v in bijector.variables if id(v) not in layer_variables]
        self.skipped_steps = keras.metrics.Sum(name="skipped_steps")
        self.nll = keras.metrics.Mean(name="loss")
        self.optimize_graph = False  # compile() sets it
        try:  # create every variable now, and check that the flow fits `ndim`
            self(tf.zeros([1, self.ndim]))
        except (ValueError, tf.errors.InvalidArgumentError) as error:
            raise ValueError(f"The bijector does not fit ndim={self.ndim}: {error}") from error
        self.weight_average = WeightAverage(self.trainable_variables) if average_weights else None

    @property
    def bijector(self) -> tfb.Bijector:
        """The flow's ``tfb.Bijector`` (batch norm, if any, in inference mode)."""
        return self._bijector

    @property
    def distribution(self) -> tfd.TransformedDistribution:
        """The model's ``tfd.TransformedDistribution`` (base pushed through the bijector)."""
        return self._distribution

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        """The mean NLL (``loss``) and the count of non-finite steps, which the NaN guard
        reads from the model; both are reset at each epoch, only ``loss`` is logged."""
        return [self.nll, self.skipped_steps]

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """Return :math:`\\log p(x)`, shape ``(n,)``, with every network run once per layer
        (:func:`nfbook.density.log_prob`; the same value as :attr:`distribution`'s
        ``log_prob``)."""
        # In training, not self._training_distribution.log_prob(x): TransformedDistribution
        # takes the log-determinant at the base point in the forward direction, where TFP's
        # BatchNormalization uses its running variance even in training mode. The inverse
        # direction uses the batch variance that the normalisation itself used.
        distribution = self._training_distribution if training else self._distribution
        x = tf.convert_to_tensor(x, dtype=tf.float32)
        if x.shape.rank is not None and x.shape[-1] not in (None, self.ndim):
            raise ValueError(f"Data of shape {x.shape} has {x.shape[-1]} columns; this model "
                             f"has ndim={self.ndim}.")
        base = None if self.default_base else distribution.distribution  # None: N(0, I)
        return density.log_prob(base, distribution.bijector, x)

    def compile(self, optimizer: Any = "adam", loss: Any = None,
                steps_per_execution: int | str = 100, optimize_graph: bool = False,
                **kwargs: Any) -> None:
        """Configure training; the loss is always the NLL.

        Parameters
        ----------
        optimizer : str or keras.optimizers.Optimizer
            Any tf_keras optimizer (a Keras 3 one, from ``tf.keras``, is refused). The
            default ``"adam"`` is ``keras.optimizers.legacy.Adam(1e-3)``, the same algorithm
            as ``keras.optimizers.Adam`` with one fused kernel per variable
            (:func:`nfbook.training.resolve_optimizer`).
        loss : None
            Must stay ``None``: the loss is the negative log-likelihood of the data.
        steps_per_execution : int or "auto"
            Batches per call of the compiled training (and evaluation) function, as in Keras,
            but 100 by default here (Keras: 1). The steps of one call run in one
            ``tf.while_loop`` with no Python in between (:func:`nfbook.training.step_loop`),
            so small batches do not pay a Python round trip each. Batch-level callbacks and
            the progress bar then see every 100th batch (and the last of each epoch);
            epoch-level callbacks are unchanged. Pass 1 for a callback after every batch. A
            non-finite step ends training after the call that ran it (see :meth:`fit`).
        optimize_graph : bool
            Let TensorFlow's graph optimizer (Grappler) rewrite the compiled training and
            evaluation functions when they are first called. Off by default: rewriting
            delays the first step, and pays off only over many steps. Turn it on for long
            runs at large batch sizes, or large flows on a GPU.
        **kwargs
            Passed to ``keras.Model.compile`` (``jit_compile``, ``run_eagerly``...).

        Raises
        ------
        TypeError
            If a ``loss`` is given, or the optimizer or a metric is a Keras 3 object.
        """
        if loss is not None:
            raise TypeError("FlowModel trains on the negative log-likelihood; compile() takes "
                            "no `loss` (and fit() takes no labels).")
        check_tf_keras(optimizer, "optimizer")
        for name in ("metrics", "weighted_metrics"):
            for metric in kwargs.get(name) or []:
                check_tf_keras(metric, name)
        self.optimize_graph = bool(optimize_graph)
        super().compile(optimizer=resolve_optimizer(optimizer),
                        steps_per_execution=steps_per_execution,
                        **kwargs)

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        x = data[0] if isinstance(data, tuple) else data
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            log_prob = self(x, training=True)
            loss = -tf.reduce_mean(log_prob)
        gradients = tape.gradient(loss, variables)
        # Every update is applied: fit's RollBackOnNonFinite undoes a non-finite one.
        finite = step_is_finite(loss, gradients, halted=self.skipped_steps.result() > 0)
        self.optimizer.apply_gradients(
            [(g, v) for g, v in zip(gradients, variables) if g is not None])
        if self.weight_average is not None:
            self.weight_average.update()
        self.skipped_steps.update_state(1.0 - tf.cast(finite, tf.float32))
        self.nll.update_state(tf.where(finite, -log_prob, tf.zeros_like(log_prob)),
                              sample_weight=tf.cast(finite, log_prob.dtype))
        return self._train_logs()

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        x = data[0] if isinstance(data, tuple) else data
        self.nll.update_state(-self(x, training=False))
        return self._test_logs()

    def _train_logs(self) -> dict[str, tf.Tensor]:
        return {"loss": self.nll.result()}

    def _test_logs(self) -> dict[str, tf.Tensor]:
        return {"loss": self.nll.result()}

    def _can_loop(self) -> bool:
        """Whether :func:`nfbook.training.step_loop` may replace Keras's execution function:
        not for eager runs, parameter servers or distribution strategies."""
        return (not self.run_eagerly and self._distribution_strategy is None
                and self._cluster_coordinator is None)

    def make_train_function(self, force: bool = False) -> Callable:
        """The function ``fit`` calls once per execution: ``steps_per_execution`` training
        steps in one ``tf.while_loop`` (:func:`nfbook.training.step_loop`)."""
        if self.train_function is not None and not force:
            return self.train_function
        if not self._can_loop():
            return super().make_train_function(force)
        self.train_function = step_loop(self.train_step, self._train_logs,
                                        self._steps_per_execution, self._train_counter,
                                        jit_compile=bool(self.jit_compile),
                                        optimize_graph=self.optimize_graph)
        return self.train_function

    def make_test_function(self, force: bool = False) -> Callable:
        """The function ``evaluate`` calls once per execution, as :meth:`make_train_function`."""
        if self.test_function is not None and not force:
            return self.test_function
        if not self._can_loop():
            return super().make_test_function(force)
        self.test_function = step_loop(self.test_step, self._test_logs,
                                       self._steps_per_execution, self._test_counter,
                                       jit_compile=bool(self.jit_compile),
                                       optimize_graph=self.optimize_graph)
        return self.test_function

    def fit(self, x: Any = None, y: Any = None, **kwargs: Any) -> keras.callbacks.History:
        """Train on data ``x`` by maximum likelihood; same options as ``keras.Model.fit``.

        The data (``x`` and ``validation_data``) is checked: arrays, lists, tensors and
        DataFrames first, for shape ``(n, ndim)``, real numbers, at least one row, no NaN or
        infinity; a ``tf.data.Dataset`` when passed (element dtype and shape) and then batch
        by batch (width, NaN or infinity: a ``ValueError`` names the batch and the epoch).
        A data set of single points is batched by ``batch_size`` (Keras's 32 by default).
        Callbacks are checked before any step (:func:`nfbook.keras_checks.check_callbacks`).

        If the loss or a gradient of a batch is not finite, training stops after the compiled
        call that ran it and the model goes back to its state from before that call (with
        fewer than 100 steps per call, from at most 99 finite steps before the bad one):
        weights, batch-norm statistics, optimizer state and moving average
        (:class:`~nfbook.training.RollBackOnNonFinite`), so no callback sees a NaN weight.
        :class:`~nfbook.training.NonFiniteLossError` says how many updates were undone.

        Parameters
        ----------
        x : array-like, pandas.DataFrame, tf.data.Dataset or keras.utils.Sequence
            Training data, shape ``(n, ndim)`` (a data set yields batches of points, or
            single points).
        y : None
            Must stay ``None``: the loss is the NLL of ``x``.
        **kwargs
            Any option of ``keras.Model.fit`` (``epochs``, ``batch_size``,
            ``validation_data``, ``callbacks``...).

        Returns
        -------
        keras.callbacks.History
            Per-epoch ``loss`` (mean training NLL, nats) and, with validation data,
            ``val_loss``.

        Raises
        ------
        TypeError
            If labels ``y`` are passed, the data is not numeric, or a callback or the data
            is a Keras 3 object.
        ValueError
            On bad data, a whole-model ``ModelCheckpoint`` to a ``.keras`` or ``.h5`` file,
            or if the model has no trainable variables.
        nfbook.training.NonFiniteLossError
            If the NLL became NaN or infinite.
        """
        if y is not None:
            raise TypeError("FlowModel.fit(x) takes no labels: the loss is the NLL of x. "
                            "Drop the `y` argument.")
        if not self.trainable_variables:
            raise ValueError("This FlowModel has no trainable variables, so fit() would train "
                             "nothing. Build the flow from tf_keras layers (nfbook builders do).")
        if self.optimizer is None:
            raise RuntimeError("Call compile() before fit().")
        x = check_input(x, self.ndim, "x", kwargs.get("batch_size"))
        validation = kwargs.get("validation_data")
        if validation is not None:
            validation = kwargs["validation_data"] = check_validation(
                validation, self.ndim,
                kwargs.get("validation_batch_size") or kwargs.get("batch_size"))
        kwargs["callbacks"] = check_callbacks(kwargs.get("callbacks"))
        if self.weight_average is not None:  # before the user's, who see the averaged weights
            kwargs["callbacks"].insert(0, AverageWeightsEachEpoch(self.weight_average))
        guard = add_guard(kwargs, self._rollback_state)
        build_optimizer(self.optimizer, self.trainable_variables)
        unknown = not size_known(x, kwargs.get("steps_per_epoch")) or (
            validation is not None
            and not size_known(validation, kwargs.get("validation_steps")))
        first_epoch = kwargs.get("initial_epoch", 0) + 1

        def epoch() -> int:  # the epoch being run, counted from 1
            done = self.history.epoch if getattr(self, "history", None) else []
            return done[-1] + 2 if done else first_epoch

        try:
            with self._one_step_per_call_if(unknown), data_errors(epoch):
                history = super().fit(x, **kwargs)
        finally:  # Keras drops its cached validation data only if fit ends normally
            self._eval_data_handler = None
        guard.raise_if_stopped(
            "the NLL of a batch", "Standardise the data or lower the learning rate.",
            "the weights" if self.weight_average is None
            else "the moving average of the weights")
        return history

    def _rollback_state(self) -> list[tf.Variable]:
        """Every variable that a training step changes, for
        :class:`~nfbook.training.RollBackOnNonFinite`: the flow's and the base's (batch-norm
        statistics included), the optimizer's and the moving average's."""
        state = [*self.distribution.variables, *optimizer_variables(self.optimizer)]
        if self.weight_average is not None:
            state += self.weight_average.averages
        return state

    def evaluate(self, x: Any = None, y: Any = None, **kwargs: Any) -> Any:
        """Mean NLL of ``x`` in nats, :math:`-\\frac{1}{n}\\sum_k \\log p(x_k)`.

        Parameters
        ----------
        x : array-like, pandas.DataFrame, tf.data.Dataset or keras.utils.Sequence
            Data, shape ``(n, ndim)``, checked as in :meth:`fit`.
        y : None
            Ignored (no labels); kept for Keras's signature.
        **kwargs
            Any option of ``keras.Model.evaluate`` (``batch_size``, ``verbose``...).

        Returns
        -------
        float
            The mean NLL (a list with it, or a dict with ``return_dict=True``, as in Keras).

        Raises
        ------
        ValueError, TypeError
            On bad data, as in :meth:`fit`.
        """
        x = check_input(x, self.ndim, "x", kwargs.get("batch_size"))
        # inside fit (validation), fit reports a bad batch with its epoch
        errors = (contextlib.nullcontext() if kwargs.get("_use_cached_eval_dataset")
                  else data_errors())
        with self._one_step_per_call_if(not size_known(x, kwargs.get("steps"))), errors:
            return super().evaluate(x, y, **kwargs)

    def predict(self, x: Any, **kwargs: Any) -> Any:
        """:math:`\\log p(x)` of every row, computed in batches.

        Parameters
        ----------
        x : array-like, pandas.DataFrame, tf.data.Dataset or keras.utils.Sequence
            Data, shape ``(n, ndim)``, checked as in :meth:`fit`.
        **kwargs
            Any option of ``keras.Model.predict`` (``batch_size``, ``verbose``...).

        Returns
        -------
        numpy.ndarray
            The log-densities, shape ``(n,)``.

        Raises
        ------
        ValueError, TypeError
            On bad data, as in :meth:`fit`.
        """
        x = check_input(x, self.ndim, "x", kwargs.get("batch_size"))
        with self._one_step_per_call_if(not size_known(x, kwargs.get("steps"))), data_errors():
            return super().predict(x, **kwargs)

    @contextlib.contextmanager
    def _one_step_per_call_if(self, condition: bool) -> Iterator[None]:
        """Run one step per call while inside, if ``condition``: Keras refuses
        ``steps_per_execution > 1`` on data whose number of batches it cannot tell."""
        variable = self._steps_per_execution
        if not condition or variable is None or int(variable.numpy()) == 1:
            yield
            return
        saved = int(variable.numpy())
        variable.assign(1)
        try:
            yield
        finally:
            variable.assign(saved)

    def fit_reverse_kl(
        self,
        target_log_prob: Callable[[tf.Tensor], Any],
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
        r"""Train on an unnormalised log-density by reverse KL, using only the flow's samples.

        Minimises :math:`\mathbb{E}_{x \sim q}[\log q(x) - \log \tilde p(x)]
        = \mathrm{KL}(q \,\|\, p^*) - \log Z` for a target
        :math:`p^* = \tilde p / Z` given as ``target_log_prob`` (:math:`\log \tilde p`, written
        with TensorFlow ops). Needs ``compile()`` first; same progress bar, callbacks and NaN
        guard as :meth:`fit`. With ``data`` (a few samples of the target), ``data_weight``
        times their NLL is added to the loss. See :func:`nfbook.reverse_kl.fit_reverse_kl` for
        the details and the errors raised (batch-norm flows are refused).

        Returns
        -------
        keras.callbacks.History
            ``history.history["loss"]``: the reverse KL minus :math:`\log Z` (plus
            ``data_weight`` times the data's NLL), per epoch.
        """
        return fit_reverse_kl(self, target_log_prob, epochs=epochs,
                              steps_per_epoch=steps_per_epoch, batch_size=batch_size,
                              data=data, data_weight=data_weight, callbacks=callbacks,
                              verbose=verbose, seed=seed)

    def save(self, filepath: Any, overwrite: bool = True, options: Any = None,
             **kwargs: Any) -> None:
        """Write the model to one file in nfbook's format, which :func:`nfbook.load` reads;
        see :func:`nfbook.saving.save`.

        Keras's own formats are not used: Keras does not rebuild a model holding TFP objects.
        Any file name is taken (``.nfbook`` suggested) but ``.keras``, ``.h5`` and ``.hdf5``,
        which promise a file ``keras.models.load_model`` reads. So ``ModelCheckpoint``
        saving the whole model writes nfbook files that ``nfbook.load`` reads back.

        Parameters
        ----------
        filepath, overwrite
            The ``path`` and ``overwrite`` of :func:`nfbook.saving.save`, which also lists
            what it raises.
        options : tf.saved_model.SaveOptions, optional
            Taken for Keras's signature (``ModelCheckpoint`` passes it) and unused: nothing
            is written in the SavedModel format.

        Raises
        ------
        TypeError
            If Keras's other ``save`` options (``save_format``...) are passed.
        ValueError
            If ``filepath`` ends in ``.keras``, ``.h5`` or ``.hdf5``.
        """
        if kwargs:
            raise TypeError(f"FlowModel.save takes only `filepath`, `overwrite` and "
                            f"`options`, got {sorted(kwargs)}.")
        if options is not None and not isinstance(options, tf.saved_model.SaveOptions):
            raise TypeError(f"`options` must be None or a tf.saved_model.SaveOptions, got "
                            f"{type(options).__name__}.")
        check_model_path(filepath)
        from nfbook.saving import save  # saving imports this module

        save(self, filepath, overwrite=overwrite)

    def _checked(self, x: Any) -> tf.Tensor:
        return tf.convert_to_tensor(check_data(x, self.ndim, "x"))

    def log_prob(self, x: Any) -> tf.Tensor:
        """Log-density :math:`\\log p(x)` of each row of ``x`` (running batch-norm statistics).

        Raises
        ------
        ValueError, TypeError
            On data of the wrong shape or dtype, empty, or with NaN/inf rows.
        """
        return self.call(self._checked(x))

    def prob(self, x: Any) -> tf.Tensor:
        """Density :math:`p(x)` of each row of ``x``."""
        return tf.exp(self.log_prob(x))

    def sample(self, n: int, seed: Any = None) -> tf.Tensor:
        """Draw ``n`` samples :math:`x = f(z)`, :math:`z \\sim p_z` (running batch-norm
        statistics).

        Parameters
        ----------
        n : int
            Number of samples, at least 1.
        seed : int, pair of int or tensor of shape ``[2]``, optional
            A seed gives the same samples at every call, as NumPy's, JAX's and PyTorch's
            seeded generators do: a pair is a TFP stateless seed, and an int ``s`` is made
            into the stateless seed ``(s // 2**31 mod 2**31, s mod 2**31)``. ``None`` draws
            fresh samples at every call.

        Returns
        -------
        tf.Tensor
            The samples, shape ``(n, ndim)``.

        Raises
        ------
        TypeError, ValueError
            If ``n`` is not a positive integer.
        """
        n = check_positive_int("n", n)
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            high, low = divmod(int(seed) % 2**62, 2**31)
            seed = tf.constant([high, low], tf.int32)
        return self._distribution.sample(n, seed=seed)
