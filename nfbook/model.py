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
from nfbook.flow_weights import FlowWeights, keras_layers
from nfbook.keras_checks import check_model_path, keras3_layers
from nfbook.model_file import write_model
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

    failure = "the NLL of a batch"

    def __init__(
        self,
        bijector: tfb.Bijector,
        ndim: int,
        base: tfd.Distribution | None = None,
        name: str = "flow_model",
        average_weights: bool = True,
    ) -> None:
        super().__init__(name=name, ndim=check_positive_int("ndim", ndim),
                         average_weights=average_weights)
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
        try:  # create every variable now, and check that the flow fits `ndim`
            self(tf.zeros([1, self.ndim]))
        except (ValueError, tf.errors.InvalidArgumentError) as error:
            raise ValueError(f"The bijector does not fit ndim={self.ndim}: {error}") from error
        self.start_weight_average()

    @property
    def bijector(self) -> tfb.Bijector:
        """The flow's ``tfb.Bijector`` (batch norm, if any, in inference mode)."""
        return self._bijector

    @property
    def distribution(self) -> tfd.TransformedDistribution:
        """The model's ``tfd.TransformedDistribution`` (base pushed through the bijector)."""
        return self._distribution

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

    def loss_terms(self, x: tf.Tensor, training: bool) -> dict[str, tf.Tensor]:
        """The per-example loss, the negative log-likelihood :math:`-\\log p(x_i)`."""
        return {"loss": -self(x, training=training)}

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
