"""Continuous normalizing flows: a time-dependent vector field and FFJORD.

Flow matching, which trains the same vector field by regression, is in
:mod:`nfbook.flow_matching`.
"""

from __future__ import annotations

__all__ = ["VectorField", "ffjord", "trace_exact"]

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

from nfbook.checks import check_hidden_units, check_positive_int, check_real
from nfbook.specs import attach_spec

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
    adaptive solvers. With ``time_features=K`` the time also enters through the Fourier
    features :math:`\sin(2^k \pi t), \cos(2^k \pi t)`, :math:`k = 0, \dots, K - 1`, which let
    a small network change quickly with :math:`t` (as a flow onto thin data must near
    :math:`t = 1`).

    Parameters
    ----------
    ndim : int
        Dimension :math:`D` of the state.
    hidden_units : sequence of int
        Hidden widths.
    activation : str
        Hidden activation (smooth: ``"tanh"``, ``"softplus"``, ``"swish"``...).
    time_features : int
        Number :math:`K \ge 0` of Fourier frequencies of the time.
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
                 activation: str = "tanh", time_features: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ndim = check_positive_int("ndim", ndim)
        self.hidden_units = check_hidden_units(hidden_units)
        self.activation = activation
        self.time_features = check_positive_int("time_features", time_features, 0)
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
        inputs = [x, t]
        if self.time_features:
            angles = t * (np.pi * 2.0 ** np.arange(self.time_features)).astype(
                x.dtype.as_numpy_dtype)
            inputs += [tf.sin(angles), tf.cos(angles)]
        h = tf.reshape(tf.concat(inputs, axis=-1), [-1, self.ndim + 1 + 2 * self.time_features])
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
    time_features: int = 0,
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
    hidden_units, activation, time_features
        Of the :class:`VectorField` built when ``field`` is not given.
    exact_trace : bool
        Exact trace (``True``) or Hutchinson's estimator.
    atol, rtol : float
        Absolute and relative tolerances of the adaptive solver (per step and element).
        Much looser than ``1e-3`` makes maximum-likelihood training unstable.
    first_step_size : float
        Size of the solver's first step (it adapts from there).
    field : VectorField, optional
        An existing vector field to integrate (e.g. one trained by :class:`nfbook.FlowMatching`).

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
    >>> flow = ffjord(2, hidden_units=(8,), atol=1e-6, rtol=1e-6)
    >>> z = tf.random.stateless_normal([4, 2], seed=(1, 2))
    >>> z_back = flow.inverse(tf.identity(flow.forward(z)))
    >>> float(tf.reduce_max(tf.abs(z_back - z))) < 1e-4
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
        field = VectorField(ndim, hidden_units, activation, time_features)
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
                    activation=activation, time_features=field.time_features,
                    exact_trace=exact_trace, atol=atol, rtol=rtol,
                    first_step_size=first_step_size)
    return flow
