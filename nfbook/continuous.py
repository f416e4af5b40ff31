"""Continuous normalizing flows: a time-dependent vector field, FFJORD, and flow matching."""

from __future__ import annotations

__all__ = ["FlowMatching", "VectorField", "ffjord", "flow_matching_loss", "trace_exact"]

from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

from nfbook.bijectors import attach_spec
from nfbook.checks import check_data, check_hidden_units, check_positive_int, check_real
from nfbook.training import add_guard, apply_if_finite, resolve_optimizer

tfb = tfp.bijectors
tfd = tfp.distributions


class VectorField(keras.layers.Layer):
    r"""MLP vector field :math:`v_\theta(t, x)` of a continuous flow, :math:`dx/dt = v_\theta`.

    Called as ``field(t, x)`` (the ``state_time_derivative_fn`` signature of
    :class:`tfp.bijectors.FFJORD`) with states ``x`` of shape ``(..., D)`` and a time ``t``
    that is a scalar or holds one time per state (shape ``(...,)`` or ``(..., 1)``). The
    time is appended to the state as one more input of a dense network,
    :math:`v_\theta(t, x) = \mathrm{MLP}([x, t])`, every output sees every input: a
    continuous flow needs no triangular structure. Smooth activations keep the ODE easy for
    adaptive solvers.

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

    Raises
    ------
    TypeError, ValueError
        On a bad ``ndim`` or ``hidden_units`` when built; ``ValueError`` when called on
        states whose last axis is not ``ndim``.

    Examples
    --------
    >>> field = VectorField(2, hidden_units=(16,))
    >>> field(0.5, tf.zeros([3, 2])).shape
    TensorShape([3, 2])
    >>> field(tf.fill([3], 0.5), tf.zeros([3, 2])).shape  # one time per state
    TensorShape([3, 2])
    >>> field(0.5, tf.zeros([2])).shape  # a single state, no batch axis
    TensorShape([2])
    """

    def __init__(self, ndim: int, hidden_units: Sequence[int] = (64, 64),
                 activation: str = "tanh", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ndim = check_positive_int("ndim", ndim)
        self.hidden_units = check_hidden_units(hidden_units)
        self.activation = activation
        self.hidden = [keras.layers.Dense(h, activation=activation) for h in self.hidden_units]
        self.out = keras.layers.Dense(self.ndim)

    def call(self, t: Any, x: tf.Tensor) -> tf.Tensor:
        x = tf.convert_to_tensor(x)
        if x.shape.rank is not None and x.shape[-1] is not None and x.shape[-1] != self.ndim:
            raise ValueError(f"`x` has shape {x.shape.as_list()}; expected (..., {self.ndim}) "
                             "for this vector field.")
        t = tf.cast(t, x.dtype)
        if t.shape.rank is not None and t.shape.rank == x.shape.rank - 1:
            t = t[..., None]  # one time per state, without its own axis
        t = tf.broadcast_to(t, tf.shape(x[..., :1]))
        # Dense layers want (rows, features): flatten any leading axes, restore them after
        h = tf.reshape(tf.concat([x, t], axis=-1), [-1, self.ndim + 1])
        for layer in self.hidden:
            h = layer(h)
        return tf.reshape(self.out(h), tf.shape(x))


def trace_exact(
    ode_fn: Callable[..., tf.Tensor], state_shape: Any, dtype: tf.DType
) -> Callable[..., tuple[tf.Tensor, tf.Tensor]]:
    r"""Trace augmentation for :class:`tfp.bijectors.FFJORD`: the exact Jacobian diagonal.

    Returns ``augmented(t, (x, _))`` giving ``(v, d)`` with :math:`v = f(t, x)` and
    :math:`d_i = \partial v_i / \partial x_i`, so that :math:`\sum_i d_i =
    \operatorname{tr}(\partial f / \partial x)` (FFJORD sums over the event axes itself).
    Each :math:`d_i` is the :math:`i`-th entry of the vector-Jacobian product
    :math:`e_i^\top (\partial f / \partial x)`: :math:`D` products in all, so the cost grows
    linearly with the dimension. The same numbers as TFP's
    ``tfb.ffjord.trace_jacobian_exact``, but built from :math:`D` plain gradient calls
    instead of a ``tf.while_loop``, which makes a training step much cheaper to trace into
    a graph.

    Parameters
    ----------
    ode_fn : callable
        ``ode_fn(t, x)``, the vector field; ``x`` has a static last axis :math:`D`.
    state_shape : shape
        Shape of the state (unused; part of TFP's interface).
    dtype : tf.DType
        Its dtype (unused).

    Returns
    -------
    callable
        ``augmented(t, (x, log_det))`` returning ``(f(t, x), diag)``, both shaped like ``x``.

    Examples
    --------
    >>> A = tf.constant([[0.5, 2.0], [-1.0, 0.25]])
    >>> augmented = trace_exact(lambda t, x: tf.linalg.matvec(A, x), [4, 2], tf.float32)
    >>> v, diag = augmented(0.0, (tf.ones([4, 2]), tf.zeros([4, 2])))
    >>> diag.numpy().tolist()[0]  # the diagonal of A at every point
    [0.5, 0.25]
    """
    del state_shape, dtype

    def augmented(time: Any, state_and_log_det: Any, **kwargs: Any) -> tuple:
        state, _ = state_and_log_det
        ndim = state.shape[-1]
        if ndim is None:
            raise ValueError("trace_exact needs a state with a static last axis.")
        with tf.GradientTape(persistent=True, watch_accessed_variables=False) as tape:
            tape.watch(state)
            velocity = ode_fn(time, state, **kwargs)
            components = tf.unstack(velocity, num=ndim, axis=-1)
        diagonal = [tape.gradient(c, state)[..., i] for i, c in enumerate(components)]
        return velocity, tf.stack(diagonal, axis=-1)

    return augmented


def ffjord(
    ndim: int,
    hidden_units: Sequence[int] = (64, 64),
    activation: str = "tanh",
    *,
    exact_trace: bool = True,
    atol: float = 1e-3,
    rtol: float = 1e-3,
    first_step_size: float = 0.1,
    field: VectorField | None = None,
) -> tfb.FFJORD:
    r"""A continuous flow :math:`dx/dt = v_\theta(t, x)` from :math:`t=0` (base) to :math:`t=1`.

    Forward (sampling) integrates the ODE from :math:`x(0) = z` to :math:`x = x(1)`, inverse
    (scoring) integrates it backwards, with TFP's adaptive Dormand-Prince solver. The
    log-density follows the instantaneous change of variables
    :math:`d \log p(x(t))/dt = -\operatorname{tr}(\partial v_\theta / \partial x)`, so

    .. math:: \log p(x) = \log p_z(z) - \int_0^1 \operatorname{tr}
        \frac{\partial v_\theta}{\partial x}(t, x(t))\, dt ,

    with the trace computed exactly (:func:`trace_exact`, :math:`D` vector-Jacobian
    products) or by Hutchinson's estimator
    :math:`\operatorname{tr} J = \mathbb{E}_\epsilon[\epsilon^\top J \epsilon]` with one
    Gaussian probe per point, fixed along the path (one product, unbiased, noisy). Put it in
    a :class:`nfbook.FlowModel` to train it by maximum likelihood (FFJORD); gradients go
    through the solver by TFP's adjoint method.

    Parameters
    ----------
    ndim : int
        Event size.
    hidden_units, activation
        Of the :class:`VectorField` built when ``field`` is not given.
    exact_trace : bool
        Exact trace (``True``) or Hutchinson's estimator.
    atol, rtol : float
        Absolute and relative tolerances of the adaptive solver (per step and element).
        Much looser than ``1e-3`` makes maximum-likelihood training unstable.
    first_step_size : float
        Size of the solver's first step (it adapts from there).
    field : VectorField, optional
        An existing vector field to integrate (e.g. one trained by :class:`FlowMatching`).

    Returns
    -------
    tfb.FFJORD
        With the vector field as its attribute ``field``.

    Raises
    ------
    TypeError, ValueError
        On a bad ``ndim``, ``hidden_units``, tolerance or step size, or a ``field`` of
        another dimension.

    References
    ----------
    Chen et al. (2018), Neural Ordinary Differential Equations, https://arxiv.org/abs/1806.07366;
    Grathwohl et al. (2019), FFJORD, https://arxiv.org/abs/1810.01367.

    Examples
    --------
    >>> flow = ffjord(2, hidden_units=(8,))
    >>> z = tf.random.normal([4, 2])
    >>> z_back = flow.inverse(tf.identity(flow.forward(z)))
    >>> float(tf.reduce_max(tf.abs(z_back - z))) < 1e-3
    True
    """
    ndim = check_positive_int("ndim", ndim)
    atol = check_real("atol", atol, positive=True)
    rtol = check_real("rtol", rtol, positive=True)
    first_step_size = check_real("first_step_size", first_step_size, positive=True)
    if not isinstance(exact_trace, bool):
        raise TypeError(f"`exact_trace` must be True or False, got {exact_trace!r}.")
    recordable = field is None
    if field is None:
        field = VectorField(ndim, hidden_units, activation)
    elif not isinstance(field, VectorField):
        raise TypeError(f"`field` must be an nfbook.continuous.VectorField, got "
                        f"{type(field).__name__}.")
    if field.ndim != ndim:
        raise ValueError(f"`field` is a vector field in {field.ndim} dimensions, expected {ndim}.")
    solver = tfp.math.ode.DormandPrince(atol=atol, rtol=rtol, first_step_size=first_step_size)
    trace = trace_exact if exact_trace else tfb.ffjord.trace_jacobian_hutchinson
    flow = tfb.FFJORD(state_time_derivative_fn=field, ode_solve_fn=solver.solve,
                      trace_augmentation_fn=trace, name="ffjord")
    flow.field = field
    if recordable:
        attach_spec(flow, "ffjord", ndim=ndim, hidden_units=list(field.hidden_units),
                    activation=activation, exact_trace=exact_trace, atol=atol, rtol=rtol,
                    first_step_size=first_step_size)
    return flow


def flow_matching_loss(
    field: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
    x1: tf.Tensor,
    x0: tf.Tensor,
    t: tf.Tensor,
) -> tf.Tensor:
    r"""Per-example conditional flow-matching loss with straight-line paths.

    The path from a base sample :math:`x_0` to a data point :math:`x_1` is
    :math:`x_t = (1 - t) x_0 + t x_1`, travelled at the constant velocity
    :math:`x_1 - x_0`, and the loss is the squared error of the field there,

    .. math:: \ell = \left\| v_\theta(t, x_t) - (x_1 - x_0) \right\|^2 .

    Its mean over :math:`x_0 \sim p_z`, :math:`x_1 \sim p_{\mathrm{data}}`,
    :math:`t \sim U(0, 1)` is minimised by :math:`v^*(t, x) = \mathbb{E}[x_1 - x_0 \mid
    x_t = x]`, the field whose flow carries :math:`p_z` to the data.

    Parameters
    ----------
    field : callable
        ``field(t, x)`` with ``t`` of shape ``(n, 1)`` and ``x`` of shape ``(n, D)``.
    x1, x0 : tf.Tensor
        Data and base samples, shape ``(n, D)``.
    t : tf.Tensor
        Times in :math:`[0, 1]`, shape ``(n, 1)``.

    Returns
    -------
    tf.Tensor
        Shape ``(n,)``.

    Examples
    --------
    >>> x0, x1 = tf.zeros([3, 2]), tf.ones([3, 2])
    >>> exact = lambda t, x: tf.ones_like(x)  # the velocity x1 - x0 everywhere
    >>> flow_matching_loss(exact, x1, x0, tf.fill([3, 1], 0.5)).numpy().tolist()
    [0.0, 0.0, 0.0]
    """
    xt = (1.0 - t) * x0 + t * x1
    return tf.reduce_sum((field(t, xt) - (x1 - x0)) ** 2, axis=-1)


class FlowMatching(keras.Model):
    r"""A continuous flow trained by conditional flow matching with straight-line paths.

    For data :math:`x_1`, base samples :math:`x_0 \sim \mathcal{N}(0, I)` and
    :math:`t \sim U(0, 1)`, the point :math:`x_t = (1 - t) x_0 + t x_1` moves with velocity
    :math:`x_1 - x_0`; the vector field is fitted by plain regression,

    .. math:: \mathcal{L}(\theta) = \mathbb{E}_{t, x_0, x_1}
        \left\| v_\theta(t, x_t) - (x_1 - x_0) \right\|^2

    (:func:`flow_matching_loss`), whose minimiser is the marginal field that carries the
    base to the data. No ODE is solved while training. :meth:`sample` integrates
    :math:`dx/dt = v_\theta` from 0 to 1, and :meth:`log_prob` integrates it back from the
    data with the instantaneous change of variables (the exact trace, through :func:`ffjord`).
    It has ``distribution`` and ``bijector`` like a :class:`nfbook.FlowModel`, so the
    plotting helpers work on it unchanged.

    Parameters
    ----------
    ndim : int
        Event size.
    hidden_units, activation
        Of the :class:`VectorField`.
    atol, rtol, first_step_size : float
        ODE solver settings for :meth:`log_prob` and :meth:`sample` (see :func:`ffjord`).
        Training solves no ODE, so the tolerances can be tight: at ``1e-3`` the
        log-density can be off by a few hundredths of a nat.
    name : str
        Name of the Keras model.

    Raises
    ------
    TypeError, ValueError
        On bad arguments.

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
    >>> model.log_prob([[0.0, 0.5]]).shape
    TensorShape([1])
    """

    def __init__(self, ndim: int, hidden_units: Sequence[int] = (64, 64),
                 activation: str = "tanh", *, atol: float = 1e-5, rtol: float = 1e-5,
                 first_step_size: float = 0.1, name: str = "flow_matching") -> None:
        super().__init__(name=name)
        self.ndim = check_positive_int("ndim", ndim)
        self.field = VectorField(self.ndim, hidden_units, activation)
        self._bijector = ffjord(self.ndim, field=self.field, atol=atol, rtol=rtol,
                                first_step_size=first_step_size)
        self._distribution = tfd.TransformedDistribution(
            tfd.MultivariateNormalDiag(loc=tf.zeros([self.ndim])), self._bijector)
        self._solver = tfp.math.ode.DormandPrince(atol=atol, rtol=rtol,
                                                  first_step_size=first_step_size)
        self.regression_loss = keras.metrics.Mean(name="loss")
        self.skipped_steps = keras.metrics.Sum(name="skipped_steps")
        self.field(0.0, tf.zeros([1, self.ndim]))
        spec = tf.TensorSpec([None, self.ndim], tf.float32)
        # graph versions: an eager adaptive ODE solve runs its step loop in Python (slow)
        self._graph_log_prob = tf.function(self._distribution.log_prob, input_signature=[spec])
        self._graph_integrate = tf.function(self._integrate, input_signature=[spec])

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
        return [self.regression_loss, self.skipped_steps]

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """:math:`\\log p(x)` through the ODE (the model's output, as for ``FlowModel``)."""
        return self._distribution.log_prob(x)

    def compile(self, optimizer: Any = "adam", loss: Any = None, **kwargs: Any) -> None:
        """Configure training; the loss is always the flow-matching regression loss. The
        default ``"adam"`` is ``keras.optimizers.legacy.Adam(1e-3)``, as for
        :meth:`nfbook.FlowModel.compile`.

        Raises
        ------
        TypeError
            If a ``loss`` is given.
        """
        if loss is not None:
            raise TypeError("FlowMatching trains on the flow-matching loss; compile() takes "
                            "no `loss`.")
        super().compile(optimizer=resolve_optimizer(optimizer), **kwargs)

    def flow_matching_loss(self, x1: tf.Tensor) -> tf.Tensor:
        """Per-example :func:`flow_matching_loss` with fresh ``x0 ~ N(0, I)``, ``t ~ U(0, 1)``."""
        x0 = tf.random.normal(tf.shape(x1), dtype=x1.dtype)
        t = tf.random.uniform(tf.shape(x1[:, :1]), dtype=x1.dtype)
        return flow_matching_loss(self.field, x1, x0, t)

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        x1 = data[0] if isinstance(data, tuple) else data
        variables = self.field.trainable_variables
        with tf.GradientTape() as tape:
            per_example = self.flow_matching_loss(x1)
            loss = tf.reduce_mean(per_example)
        gradients = tape.gradient(loss, variables)
        skipped = apply_if_finite(self.optimizer, loss, gradients, variables,
                                  halted=self.skipped_steps.result() > 0)
        self.skipped_steps.update_state(skipped)
        finite = tf.equal(skipped, 0.0)
        self.regression_loss.update_state(
            tf.where(finite, per_example, tf.zeros_like(per_example)),
            sample_weight=tf.cast(finite, per_example.dtype))
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        x1 = data[0] if isinstance(data, tuple) else data
        self.regression_loss.update_state(self.flow_matching_loss(x1))
        return {"loss": self.regression_loss.result()}

    def fit(self, x: Any = None, y: Any = None, **kwargs: Any) -> keras.callbacks.History:
        """Fit the vector field to data ``x`` (no labels); options as ``keras.Model.fit``.

        ``history.history["loss"]`` is the mean flow-matching loss per epoch (it does not go
        to zero: the regression target :math:`x_1 - x_0` is random given :math:`x_t`).

        Raises
        ------
        TypeError
            If labels are passed.
        ValueError
            On data of the wrong shape, empty, or with NaN/inf rows.
        nfbook.training.NonFiniteLossError
            If the loss became NaN or infinite (that update is not applied).
        """
        if y is not None:
            raise TypeError("FlowMatching.fit(x) takes no labels.")
        if self.optimizer is None:
            raise RuntimeError("Call compile() before fit().")
        if not isinstance(x, tf.data.Dataset) and x is not None:
            x = check_data(x, self.ndim, "x")
        guard = add_guard(kwargs)
        history = super().fit(x, **kwargs)
        guard.raise_if_stopped("the flow-matching loss of a batch",
                               "Standardise the data or lower the learning rate.")
        return history

    def _integrate(self, z: tf.Tensor) -> tf.Tensor:
        results = self._solver.solve(self.field, 0.0, z, solution_times=[1.0])
        return results.states[-1]

    def log_prob(self, x: Any) -> tf.Tensor:
        """:math:`\\log p(x)` by integrating the ODE from data to base (exact trace).

        Raises
        ------
        TypeError, ValueError
            On data of the wrong shape or dtype, empty, or with NaN/inf rows.
        """
        return self._graph_log_prob(tf.constant(check_data(x, self.ndim, "x")))

    def prob(self, x: Any) -> tf.Tensor:
        """Density :math:`p(x)`."""
        return tf.exp(self.log_prob(x))

    def sample(self, n: int, seed: Any = None) -> tf.Tensor:
        """``n`` samples, by integrating base samples from :math:`t=0` to :math:`t=1`.

        Only the state is integrated (no trace), so sampling costs one field evaluation per
        solver stage. ``seed`` as in TFP: an int, or an ``(a, b)`` pair for stateless,
        repeatable sampling.
        """
        z = self._distribution.distribution.sample(check_positive_int("n", n), seed=seed)
        return self._graph_integrate(z)

    def save(self, filepath: Any, *args: Any, **kwargs: Any) -> None:
        """Not supported: use ``save_weights`` and ``load_weights`` into a model built with
        the same arguments (Keras's whole-model formats do not round-trip this model)."""
        raise NotImplementedError(
            "FlowMatching.save is not supported: call model.save_weights(path) and, later, "
            "load_weights(path) on a FlowMatching built with the same arguments.")
