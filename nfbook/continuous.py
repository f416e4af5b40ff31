"""Continuous normalizing flows: a time-dependent vector field, FFJORD, and flow matching."""

from __future__ import annotations

__all__ = ["FlowMatching", "VectorField", "ffjord"]

from collections.abc import Sequence
from typing import Any

import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

from nfbook.bijectors import attach_spec
from nfbook.checks import check_data, check_hidden_units, check_positive_int

tfb = tfp.bijectors
tfd = tfp.distributions


class VectorField(keras.layers.Layer):
    r"""MLP vector field :math:`v_\theta(t, x)` of a continuous flow, :math:`dx/dt = v_\theta`.

    Called as ``field(t, x)`` (the ``state_time_derivative_fn`` signature of
    :class:`tfp.bijectors.FFJORD`) with a scalar or per-row time ``t`` and states ``x`` of shape
    ``(n, D)``; the time is appended to the state as one more input. Smooth activations keep
    the ODE easy for adaptive solvers.

    Parameters
    ----------
    ndim : int
        Dimension :math:`D` of the state.
    hidden_units : sequence of int
        Hidden widths.
    activation : str
        Hidden activation (smooth: ``"tanh"``, ``"softplus"``, ``"swish"``...).
    **kwargs
        Passed to :class:`tf_keras.layers.Layer`.

    Examples
    --------
    >>> field = VectorField(2, hidden_units=(16,))
    >>> field(0.5, tf.zeros([3, 2])).shape
    TensorShape([3, 2])
    """

    def __init__(self, ndim: int, hidden_units: Sequence[int] = (64, 64),
                 activation: str = "tanh", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ndim = check_positive_int("ndim", ndim)
        self.hidden_units = check_hidden_units(hidden_units)
        self.hidden = [keras.layers.Dense(h, activation=activation) for h in self.hidden_units]
        self.out = keras.layers.Dense(self.ndim)

    def call(self, t: Any, x: tf.Tensor) -> tf.Tensor:
        t = tf.cast(t, x.dtype)
        t = tf.broadcast_to(tf.reshape(t, [-1, 1]) if t.shape.rank else t, tf.shape(x[..., :1]))
        h = tf.concat([x, t], axis=-1)
        for layer in self.hidden:
            h = layer(h)
        return self.out(h)


def ffjord(
    ndim: int,
    hidden_units: Sequence[int] = (64, 64),
    activation: str = "tanh",
    *,
    exact_trace: bool = True,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    field: VectorField | None = None,
) -> tfb.FFJORD:
    r"""A continuous flow :math:`dx/dt = v_\theta(t, x)` from :math:`t=0` (base) to :math:`t=1`.

    The bijector integrates the ODE with TFP's Dormand-Prince solver; the log-density follows
    the instantaneous change of variables :math:`d \log p(x_t)/dt = -\operatorname{tr}
    (\partial v / \partial x)`, with the trace computed exactly (:math:`D` vector-Jacobian
    products) or by Hutchinson's estimator :math:`\mathbb{E}_\epsilon[\epsilon^\top
    (\partial v / \partial x)\epsilon]` (one product, unbiased, noisy). Put it in a
    :class:`nfbook.FlowModel` to train it by maximum likelihood (FFJORD).

    Parameters
    ----------
    ndim : int
        Event size.
    hidden_units, activation
        Of the :class:`VectorField` built when ``field`` is not given.
    exact_trace : bool
        Exact trace (``True``) or Hutchinson's estimator.
    atol, rtol : float
        Tolerances of the adaptive ODE solver.
    field : VectorField, optional
        An existing vector field to integrate (e.g. one trained by :class:`FlowMatching`).

    Returns
    -------
    tfb.FFJORD

    References
    ----------
    Chen et al. (2018), Neural Ordinary Differential Equations, https://arxiv.org/abs/1806.07366;
    Grathwohl et al. (2019), FFJORD, https://arxiv.org/abs/1810.01367.

    Examples
    --------
    >>> flow = ffjord(2, hidden_units=(8,))
    >>> flow.forward(tf.zeros([4, 2])).shape
    TensorShape([4, 2])
    """
    ndim = check_positive_int("ndim", ndim)
    recordable = field is None
    field = field if field is not None else VectorField(ndim, hidden_units, activation)
    if field.ndim != ndim:
        raise ValueError(f"`field` is a vector field in {field.ndim} dimensions, expected {ndim}.")
    solver = tfp.math.ode.DormandPrince(atol=atol, rtol=rtol)
    trace = (tfb.ffjord.trace_jacobian_exact if exact_trace
             else tfb.ffjord.trace_jacobian_hutchinson)
    flow = tfb.FFJORD(state_time_derivative_fn=field, ode_solve_fn=solver.solve,
                      trace_augmentation_fn=trace, name="ffjord")
    flow.field = field
    if recordable:
        attach_spec(flow, "ffjord", ndim=ndim, hidden_units=list(field.hidden_units),
                    activation=activation, exact_trace=exact_trace, atol=atol, rtol=rtol)
    return flow


class FlowMatching(keras.Model):
    r"""A continuous flow trained by conditional flow matching with straight-line paths.

    For data :math:`x_1`, base samples :math:`x_0 \sim \mathcal{N}(0, I)` and
    :math:`t \sim U(0, 1)`, the point :math:`x_t = (1 - t) x_0 + t x_1` moves with velocity
    :math:`x_1 - x_0`; the vector field is fitted by plain regression,

    .. math:: \mathcal{L}(\theta) = \mathbb{E}_{t, x_0, x_1}
        \left\| v_\theta(t, x_t) - (x_1 - x_0) \right\|^2 ,

    whose minimiser is the marginal field that carries the base to the data. Sampling
    integrates :math:`dx/dt = v_\theta` from 0 to 1, and :meth:`log_prob` uses the same ODE
    with the instantaneous change of variables (through :func:`ffjord`), so the plotting
    helpers work on it as on a :class:`nfbook.FlowModel`.

    Parameters
    ----------
    ndim : int
        Event size.
    hidden_units, activation
        Of the :class:`VectorField`.
    atol, rtol : float
        ODE tolerances for :meth:`log_prob` and :meth:`sample`.

    References
    ----------
    Lipman et al. (2023), Flow Matching for Generative Modeling,
    https://arxiv.org/abs/2210.02747; Liu et al. (2023), Flow Straight and Fast,
    https://arxiv.org/abs/2209.03003.

    Examples
    --------
    >>> import nfbook
    >>> model = FlowMatching(2, hidden_units=(16,))
    >>> model.compile()
    >>> history = model.fit(nfbook.data.moons(256), epochs=1, batch_size=64, verbose=0)
    >>> model.sample(3, seed=(1, 2)).shape
    TensorShape([3, 2])
    """

    def __init__(self, ndim: int, hidden_units: Sequence[int] = (64, 64),
                 activation: str = "tanh", *, atol: float = 1e-5, rtol: float = 1e-5,
                 name: str = "flow_matching") -> None:
        super().__init__(name=name)
        self.ndim = check_positive_int("ndim", ndim)
        self.field = VectorField(self.ndim, hidden_units, activation)
        self._bijector = ffjord(self.ndim, field=self.field, atol=atol, rtol=rtol)
        self._distribution = tfd.TransformedDistribution(
            tfd.MultivariateNormalDiag(loc=tf.zeros([self.ndim])), self._bijector)
        self.regression_loss = keras.metrics.Mean(name="loss")
        self.field(0.0, tf.zeros([1, self.ndim]))

    @property
    def bijector(self) -> tfb.FFJORD:
        """The ``tfb.FFJORD`` bijector integrating the learned field from base to data."""
        return self._bijector

    @property
    def distribution(self) -> tfd.TransformedDistribution:
        """The base pushed through :attr:`bijector`."""
        return self._distribution

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.regression_loss]

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """:math:`\\log p(x)` through the ODE (slow: use :meth:`log_prob` on NumPy data)."""
        return self._distribution.log_prob(x)

    def compile(self, optimizer: Any = "adam", loss: Any = None, **kwargs: Any) -> None:
        """Configure training; the loss is always the flow-matching regression loss."""
        if loss is not None:
            raise TypeError("FlowMatching trains on the flow-matching loss; compile() takes "
                            "no `loss`.")
        super().compile(optimizer=optimizer, **kwargs)

    def flow_matching_loss(self, x1: tf.Tensor) -> tf.Tensor:
        """Per-example squared error :math:`\\|v_\\theta(t, x_t) - (x_1 - x_0)\\|^2`."""
        x0 = tf.random.normal(tf.shape(x1), dtype=x1.dtype)
        t = tf.random.uniform(tf.shape(x1[:, :1]), dtype=x1.dtype)
        xt = (1.0 - t) * x0 + t * x1
        return tf.reduce_sum((self.field(t, xt) - (x1 - x0)) ** 2, axis=-1)

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        x1 = data[0] if isinstance(data, tuple) else data
        with tf.GradientTape() as tape:
            per_example = self.flow_matching_loss(x1)
            loss = tf.reduce_mean(per_example)
        gradients = tape.gradient(loss, self.field.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.field.trainable_variables))
        self.regression_loss.update_state(per_example)
        return {"loss": self.regression_loss.result()}

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        x1 = data[0] if isinstance(data, tuple) else data
        self.regression_loss.update_state(self.flow_matching_loss(x1))
        return {"loss": self.regression_loss.result()}

    def fit(self, x: Any = None, y: Any = None, **kwargs: Any) -> keras.callbacks.History:
        """Fit the vector field to data ``x`` (no labels); options as ``keras.Model.fit``.

        Raises
        ------
        TypeError
            If labels are passed.
        ValueError
            On data of the wrong shape, empty, or with NaN/inf rows.
        """
        if y is not None:
            raise TypeError("FlowMatching.fit(x) takes no labels.")
        if not isinstance(x, tf.data.Dataset) and x is not None:
            x = check_data(x, self.ndim, "x")
        callbacks = [*(kwargs.pop("callbacks", None) or []), keras.callbacks.TerminateOnNaN()]
        return super().fit(x, callbacks=callbacks, **kwargs)

    def log_prob(self, x: Any) -> tf.Tensor:
        """:math:`\\log p(x)` by integrating the ODE from data to base (exact trace)."""
        return self._distribution.log_prob(tf.constant(check_data(x, self.ndim, "x")))

    def prob(self, x: Any) -> tf.Tensor:
        """Density :math:`p(x)`."""
        return tf.exp(self.log_prob(x))

    def sample(self, n: int, seed: Any = None) -> tf.Tensor:
        """``n`` samples, by integrating base samples from :math:`t=0` to :math:`t=1`."""
        return self._distribution.sample(check_positive_int("n", n), seed=seed)
