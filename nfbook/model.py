"""FlowModel: a tf_keras Model around a TFP flow, trained by negative log-likelihood."""

from __future__ import annotations

__all__ = ["FlowModel"]

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

from nfbook import density
from nfbook.checks import check_data, check_positive_int
from nfbook.conditional import bijector_kwargs, context_dim_of
from nfbook.flow_weights import FlowWeights, keras_layers
from nfbook.inputs import check_context
from nfbook.keras_checks import check_model_path, keras3_layers
from nfbook.model_file import write_model
from nfbook.networks import check_context_dim
from nfbook.reverse_kl import fit_reverse_kl
from nfbook.stacking import batch_norm_mode
from nfbook.training import Trainer

tfb = tfp.bijectors
tfd = tfp.distributions


class FlowModel(FlowWeights, Trainer):
    r"""A normalizing flow as a tf_keras ``Model`` whose output is :math:`\log p(x)`, trained by
    maximum likelihood.

    The density is the change-of-variables formula for the flow :math:`x = f(z)`,
    :math:`z \sim p_z`:

    .. math:: \log p(x) = \log p_z(f^{-1}(x)) + \log\left|\det J_{f^{-1}}(x)\right|,

    and training minimises the mean negative log-likelihood (NLL) of the data in nats,
    :math:`-\frac{1}{n}\sum_k \log p(x_k)`. ``compile()`` needs no loss and ``fit(x)`` no
    labels. Training is that of every nfbook trainer (:class:`nfbook.training.Trainer`: 100
    steps per compiled call, the NaN guard, the data checks). Under the wrapper stay the plain
    TFP objects: :attr:`bijector` and :attr:`distribution` (a ``tfd.TransformedDistribution``).

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
    from the raw ones; see :class:`nfbook.weight_average.AverageWeightsEachEpoch`.

    A conditional flow (a bijector built with ``context_dim=k``, e.g.
    ``nfbook.maf(2, context_dim=1)``) makes the model a conditional density
    :math:`p(x \mid c)`: every call takes the context, one row per point, as
    ``fit(x, context=c, validation_data=(x_val, c_val))``, ``evaluate(x, context=c)``,
    :meth:`log_prob`, :meth:`sample` and ``model((x, c))``; a ``tf.data`` set yields
    ``(x, c)`` pairs. Under the hood the context reaches each layer as TFP's
    ``conditional_input`` (:func:`nfbook.conditional.bijector_kwargs`).

    ``model(x)`` runs each network once per layer (:func:`nfbook.density.log_prob`; TFP's
    ``log_prob`` runs it twice), which makes an epoch cheaper without changing any number.

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
    context_dim : int, optional
        Width of the context. Read from the bijector's networks when nfbook built them; give
        it for a conditional flow built from TFP's own networks (every MAF and RealNVP layer
        then gets the context as ``conditional_input``).

    Raises
    ------
    TypeError
        If ``bijector`` is not a ``tfb.Bijector``.
    ValueError
        If ``ndim < 1``, ``base`` has another event shape, or ``context_dim`` differs from
        the bijector's.

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

    failure = "the NLL of a batch"

    def __init__(
        self,
        bijector: tfb.Bijector,
        ndim: int,
        base: tfd.Distribution | None = None,
        name: str = "flow_model",
        average_weights: bool = True,
        context_dim: int | None = None,
    ) -> None:
        built_with = context_dim_of(bijector) if isinstance(bijector, tfb.Bijector) else None
        context_dim = check_context_dim(context_dim)
        if context_dim is None:
            context_dim = built_with
        elif built_with not in (None, context_dim):
            raise ValueError(f"`context_dim={context_dim}` differs from the bijector's, whose "
                             f"networks take a context of {built_with} column(s).")
        super().__init__(name=name, ndim=check_positive_int("ndim", ndim),
                         context_dim=context_dim, average_weights=average_weights)
        if not isinstance(bijector, tfb.Bijector):
            raise TypeError(f"`bijector` must be a tfp.bijectors.Bijector, got "
                            f"{type(bijector).__name__}.")
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
        x = tf.zeros([1, self.ndim])
        try:  # create every variable now, and check that the flow fits `ndim`
            self(x if context_dim is None else (x, tf.zeros([1, context_dim])))
        except (ValueError, tf.errors.InvalidArgumentError) as error:
            if context_dim is None and "conditional_input" in str(error):
                raise ValueError("The bijector needs a context (`conditional_input`): pass "
                                 "`context_dim=k` to FlowModel.") from error
            raise ValueError(f"The bijector does not fit ndim={self.ndim}"
                             + ("" if context_dim is None else f", context_dim={context_dim}")
                             + f": {error}") from error
        self.start_weight_average()

    @property
    def bijector(self) -> tfb.Bijector:
        """The flow's ``tfb.Bijector`` (batch norm, if any, in inference mode)."""
        return self._bijector

    @property
    def graph_optimizer(self) -> bool:
        """Whether the step loop keeps Grappler: for a flow with an ODE (``tfb.FFJORD``), whose
        solver evaluates the network many times a step (:func:`nfbook.step_loop.step_loop`)."""
        return any(isinstance(module, tfb.FFJORD)
                   for module in (self._bijector, *self._bijector.submodules))

    @property
    def distribution(self) -> tfd.TransformedDistribution:
        """The model's ``tfd.TransformedDistribution`` (base pushed through the bijector)."""
        return self._distribution

    def call(self, inputs: Any, training: bool | None = None) -> tf.Tensor:
        """Return :math:`\\log p(x)` (or :math:`\\log p(x \\mid c)` for ``inputs = (x, c)``
        of a conditional flow), shape ``(n,)``, with every network run once per layer
        (:func:`nfbook.density.log_prob`; the same value as :attr:`distribution`'s
        ``log_prob``)."""
        x, context = self._split(inputs)
        # In training, not self._training_distribution.log_prob(x): TransformedDistribution
        # takes the log-determinant at the base point in the forward direction, where TFP's
        # BatchNormalization uses its running variance even in training mode. The inverse
        # direction uses the batch variance that the normalisation itself used.
        distribution = self._training_distribution if training else self._distribution
        if x.shape.rank is not None and x.shape[-1] not in (None, self.ndim):
            raise ValueError(f"Data of shape {x.shape} has {x.shape[-1]} columns; this model "
                             f"has ndim={self.ndim}.")
        base = None if self.default_base else distribution.distribution  # None: N(0, I)
        return density.log_prob(base, distribution.bijector, x, context)

    def _split(self, inputs: Any) -> tuple[tf.Tensor, tf.Tensor | None]:
        """``inputs`` as points and context (``None`` for an unconditional flow)."""
        paired = isinstance(inputs, (tuple, list)) and len(inputs) == 2
        if self.context_dim is None:
            if paired:
                raise ValueError("This flow is unconditional (built without context_dim): "
                                 "call it on points x, not on a pair (x, context).")
            return tf.convert_to_tensor(inputs, dtype=tf.float32), None
        if not paired:
            raise ValueError(f"This flow is conditional (context_dim={self.context_dim}): "
                             "call it on the pair (x, context).")
        x, context = (tf.convert_to_tensor(v, dtype=tf.float32) for v in inputs)
        if context.shape.rank is not None and context.shape[-1] not in (None,
                                                                       self.context_dim):
            raise ValueError(f"The context has shape {context.shape}; this model has "
                             f"context_dim={self.context_dim}.")
        return x, context

    def loss_terms(self, inputs: Any, training: bool) -> dict[str, tf.Tensor]:
        """The per-example loss, the negative log-likelihood :math:`-\\log p(x_i)` (or
        :math:`-\\log p(x_i \\mid c_i)`)."""
        return {"loss": -self(inputs, training=training)}

    def state_variables(self) -> list[tf.Variable]:
        """The flow's and the base's variables, batch-norm statistics included."""
        return list(self.distribution.variables)

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
        if self.context_dim is not None:
            raise ValueError("Reverse-KL training of a conditional flow is not supported: it "
                             "would need a target density for every context.")
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
        write_model(self, filepath, overwrite=overwrite)

    def _checked(self, x: Any, context: Any) -> Any:
        x = check_data(x, self.ndim, "x")
        context = check_context(context, self.context_dim, len(x))
        return x if context is None else (x, context)

    def log_prob(self, x: Any, context: Any = None) -> tf.Tensor:
        """Log-density :math:`\\log p(x)` of each row of ``x``, or :math:`\\log p(x \\mid c)`
        given a conditional flow's ``context`` (one row per row of ``x``), with running
        batch-norm statistics.

        Raises
        ------
        ValueError, TypeError
            On data of the wrong shape or dtype, empty, or with NaN/inf rows; on a missing,
            unexpected or mis-shaped context.
        """
        return self.call(self._checked(x, context))

    def prob(self, x: Any, context: Any = None) -> tf.Tensor:
        """Density :math:`p(x)` (or :math:`p(x \\mid c)`) of each row of ``x``."""
        return tf.exp(self.log_prob(x, context))

    def sample(self, n: int, seed: Any = None, context: Any = None) -> tf.Tensor:
        """Draw ``n`` samples :math:`x = f(z)`, :math:`z \\sim p_z` (running batch-norm
        statistics); for a conditional flow, :math:`x = f_c(z)`.

        Parameters
        ----------
        n : int
            Number of samples, at least 1.
        seed : int, pair of int or tensor of shape ``[2]``, optional
            A seed gives the same samples at every call, as NumPy's, JAX's and PyTorch's
            seeded generators do: a pair is a TFP stateless seed, and an int ``s`` is made
            into the stateless seed ``(s // 2**31 mod 2**31, s mod 2**31)``. ``None`` draws
            fresh samples at every call.
        context : array-like, optional
            A conditional flow's context: shape ``(n, context_dim)``, one row per sample, or
            ``(1, context_dim)``, the same context for all ``n``.

        Returns
        -------
        tf.Tensor
            The samples, shape ``(n, ndim)``.

        Raises
        ------
        TypeError, ValueError
            If ``n`` is not a positive integer, or on a missing, unexpected or mis-shaped
            context (its rows must be 1 or ``n``).
        """
        n = check_positive_int("n", n)
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            high, low = divmod(int(seed) % 2**62, 2**31)
            seed = tf.constant([high, low], tf.int32)
        context = check_context(context, self.context_dim, None)
        if context is None:
            return self._distribution.sample(n, seed=seed)
        if len(context) not in (1, n):
            raise ValueError(f"`context` has {len(context)} rows; expected 1 (the same context "
                             f"for every sample) or n={n} (one per sample).")
        context = tf.constant(np.broadcast_to(context, (n, self.context_dim)))
        return self._distribution.sample(
            n, seed=seed, bijector_kwargs=bijector_kwargs(self._bijector, context))
