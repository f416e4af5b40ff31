"""Flow matching: a continuous flow's vector field trained by regression, with independent or
minibatch optimal-transport coupling of base and data samples."""

from __future__ import annotations

__all__ = ["COUPLINGS", "FlowMatching", "flow_matching_loss"]

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from nfbook.checks import check_data, check_positive_int
from nfbook.continuous import VectorField, ffjord
from nfbook.optimal_transport import ot_couple
from nfbook.training import Trainer

tfb = tfp.bijectors
tfd = tfp.distributions

COUPLINGS = ("independent", "ot")


def _check_vector(name: str, value: Any, ndim: int, positive: bool = False) -> tf.Tensor:
    """``value`` as a float32 constant of shape ``(ndim,)`` (scalars are broadcast)."""
    array = np.broadcast_to(np.asarray(value, np.float64), (ndim,)) if np.ndim(value) == 0 \
        else np.asarray(value, np.float64)
    if array.shape != (ndim,) or not np.all(np.isfinite(array)) or (
            positive and not np.all(array > 0)):
        kind = "positive" if positive else "finite"
        raise ValueError(f"`{name}` must be a number or {ndim} {kind} numbers, got {value!r}.")
    return tf.constant(array, tf.float32)


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


class FlowMatching(Trainer):
    r"""A continuous flow trained by conditional flow matching with straight-line paths.

    For data :math:`x_1`, base samples :math:`x_0 \sim \mathcal{N}(0, I)` and
    :math:`t \sim U(0, 1)`, the point :math:`x_t = (1 - t) x_0 + t x_1` moves with velocity
    :math:`x_1 - x_0`; the vector field is fitted by plain regression,

    .. math:: \mathcal{L}(\theta) = \mathbb{E}_{t, x_0, x_1}
        \left\| v_\theta(t, x_t) - (x_1 - x_0) \right\|^2

    (:func:`flow_matching_loss`), whose minimiser is the marginal field that carries the
    base to the data. With ``coupling="ot"`` each batch's base samples are first paired
    with its data points by the exact assignment minimising the total squared distance
    (:func:`nfbook.optimal_transport.ot_pairing`, minibatch optimal transport): the pairs'
    lines cross less, and the learned paths are straighter. No ODE is solved while training.
    :meth:`sample` integrates :math:`dx/dt = v_\theta` from 0 to 1, and :meth:`log_prob`
    integrates it back from the data with the instantaneous change of variables (the exact
    trace, through :func:`nfbook.continuous.ffjord`). It has ``distribution`` and
    ``bijector`` like a :class:`nfbook.FlowModel`, so the plotting helpers work on it
    unchanged. It trains as every nfbook trainer does (:class:`nfbook.training.Trainer`):
    ``compile()`` takes no loss, ``fit(x)`` no labels, and ``history.history["loss"]`` is the
    mean flow-matching loss per epoch, which does not go to zero (the regression target
    :math:`x_1 - x_0` is random given :math:`x_t`).

    Parameters
    ----------
    ndim : int
        Event size.
    hidden_units, activation
        Of the :class:`nfbook.continuous.VectorField`. On data with thin or sharp-edged
        structure, ``activation="silu"`` can fit much closer than the default tanh; on modes
        far apart in empty space tanh does better (the benchmark page measures both on five
        toy densities).
    time_features : int
        Fourier frequencies of the time in the :class:`nfbook.continuous.VectorField`.
    coupling : {"independent", "ot"}
        How a batch's base samples are paired with its data: at random, or by minibatch
        optimal transport (an :math:`O(n^3)` assignment per batch of :math:`n`, on the CPU).
    ot_block_size : int, optional
        With ``coupling="ot"``: pair within consecutive blocks of this many rows of each
        (shuffled) batch, each block assigned exactly, which costs :math:`O(n b^2)` instead of
        :math:`O(n^3)`; ``None``: the whole batch at once.
    loc, scale : array-like, optional
        A fixed standardisation: the model is :math:`x = \mathrm{loc} + \mathrm{scale}
        \odot y` with :math:`y` from the flow, which is trained on
        :math:`(x - \mathrm{loc}) / \mathrm{scale}`. Pass the training data's mean and
        standard deviation per coordinate, so that the base :math:`\mathcal{N}(0, I)` and
        the data the flow sees have the same scale.
    average_weights : bool
        Hand a moving average of the field's weights to the model after every epoch, as
        :class:`nfbook.FlowModel` does by default (see :class:`nfbook.training.Trainer`).
    atol, rtol, first_step_size : float
        ODE solver settings for :meth:`log_prob` and :meth:`sample` (see
        :func:`nfbook.continuous.ffjord`).
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
    https://arxiv.org/abs/2209.03003; Tong et al. (2024), Improving and generalizing
    flow-based generative models with minibatch optimal transport,
    https://arxiv.org/abs/2302.00482.

    Examples
    --------
    >>> import nfbook
    >>> model = FlowMatching(2, hidden_units=(16,))
    >>> model.compile()
    >>> history = model.fit(nfbook.data.moons(256), epochs=1, batch_size=64, verbose=0)
    >>> model.sample(3, seed=(1, 2)).shape
    TensorShape([3, 2])
    >>> model.sample(3, seed=(1, 2), num_steps=5).shape  # five Euler steps
    TensorShape([3, 2])
    >>> model.log_prob([[0.0, 0.5]]).shape
    TensorShape([1])
    """

    failure = "the flow-matching loss of a batch"

    def __init__(self, ndim: int, hidden_units: Sequence[int] = (64, 64),
                 activation: str = "tanh", *, time_features: int = 0,
                 coupling: str = "independent", ot_block_size: int | None = None,
                 loc: Any = None, scale: Any = None, average_weights: bool = False,
                 atol: float = 1e-5, rtol: float = 1e-5, first_step_size: float = 0.1,
                 name: str = "flow_matching") -> None:
        super().__init__(name=name, ndim=check_positive_int("ndim", ndim),
                         average_weights=average_weights)
        if coupling not in COUPLINGS:
            raise ValueError(f"`coupling` must be one of {COUPLINGS}, got {coupling!r}.")
        self.coupling = coupling
        self.ot_block_size = (None if ot_block_size is None
                              else check_positive_int("ot_block_size", ot_block_size))
        self.field = VectorField(self.ndim, hidden_units, activation, time_features)
        self.ode = ffjord(self.ndim, field=self.field, atol=atol, rtol=rtol,
                          first_step_size=first_step_size)
        self.loc = _check_vector("loc", 0.0 if loc is None else loc, self.ndim)
        self.scale = _check_vector("scale", 1.0 if scale is None else scale, self.ndim,
                                   positive=True)
        self._bijector = self.ode
        if loc is not None or scale is not None:
            self._bijector = tfb.Chain([tfb.Shift(self.loc), tfb.Scale(self.scale), self.ode],
                                       name="standardized_ffjord")
        self._distribution = tfd.TransformedDistribution(
            tfd.MultivariateNormalDiag(loc=tf.zeros([self.ndim])), self._bijector)
        self._solver = tfp.math.ode.DormandPrince(atol=atol, rtol=rtol,
                                                  first_step_size=first_step_size)
        self.field(0.0, tf.zeros([1, self.ndim]))
        self.start_weight_average()
        spec = tf.TensorSpec([None, self.ndim], tf.float32)
        # graph versions: an eager adaptive ODE solve runs its step loop in Python (slow)
        self._graph_log_prob = tf.function(self._distribution.log_prob, input_signature=[spec])
        self._graph_integrate = tf.function(
            lambda z: self.loc + self.scale * self._integrate(z), input_signature=[spec])
        self._graph_euler = tf.function(
            lambda z, k: self.loc + self.scale * self._euler(z, k),
            input_signature=[spec, tf.TensorSpec([], tf.int32)])

    @property
    def bijector(self) -> tfb.Bijector:
        """From base to data: :attr:`ode` (a ``tfb.FFJORD`` integrating the learned field),
        followed by ``Shift(loc)(Scale(scale))`` when the model was built with them."""
        return self._bijector

    @property
    def distribution(self) -> tfd.TransformedDistribution:
        """The base pushed through :attr:`bijector`."""
        return self._distribution

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """:math:`\\log p(x)` through the ODE (the model's output, as for ``FlowModel``)."""
        return self._distribution.log_prob(x)

    def flow_matching_loss(self, x1: tf.Tensor) -> tf.Tensor:
        """Per-example :func:`flow_matching_loss` with fresh ``x0 ~ N(0, I)``, ``t ~ U(0, 1)``;
        with ``coupling="ot"`` the ``x0`` are first paired with the ``x1`` by
        :func:`nfbook.optimal_transport.ot_couple`."""
        x0 = tf.random.normal(tf.shape(x1), dtype=x1.dtype)
        if self.coupling == "ot":
            x0 = ot_couple(x0, x1, self.ot_block_size)
        t = tf.random.uniform(tf.shape(x1[:, :1]), dtype=x1.dtype)
        return flow_matching_loss(self.field, x1, x0, t)

    def loss_terms(self, x: tf.Tensor, training: bool) -> dict[str, tf.Tensor]:
        """The per-example :meth:`flow_matching_loss` of the standardised batch."""
        return {"loss": self.flow_matching_loss(self._standardize(x))}

    def state_variables(self) -> list[tf.Variable]:
        """The vector field's weights."""
        return list(self.field.variables)

    def _standardize(self, x: tf.Tensor) -> tf.Tensor:
        return (x - self.loc) / self.scale

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

    def _euler(self, z: tf.Tensor, num_steps: tf.Tensor) -> tf.Tensor:
        h = 1.0 / tf.cast(num_steps, z.dtype)
        for k in tf.range(num_steps):
            z = z + h * self.field(tf.cast(k, z.dtype) * h, z)
        return z

    def sample(self, n: int, seed: Any = None, num_steps: int | None = None) -> tf.Tensor:
        r"""``n`` samples, by integrating base samples from :math:`t=0` to :math:`t=1`.

        Only the state is integrated (no trace), so sampling costs one field evaluation per
        solver stage. ``seed`` as in TFP: an int, or an ``(a, b)`` pair for stateless,
        repeatable sampling. With ``num_steps=None`` the adaptive Dormand-Prince solver
        integrates to the model's tolerances; with ``num_steps=K``, :math:`K` Euler steps
        :math:`z \leftarrow z + v_\theta(k/K, z)/K`, one field evaluation each.

        Raises
        ------
        TypeError, ValueError
            If ``n`` or ``num_steps`` is not a positive integer.
        """
        n = check_positive_int("n", n)
        if num_steps is not None:
            num_steps = check_positive_int("num_steps", num_steps)
        z = self._distribution.distribution.sample(n, seed=seed)
        if num_steps is None:
            return self._graph_integrate(z)
        return self._graph_euler(z, tf.constant(num_steps, tf.int32))

    def save(self, filepath: Any, *args: Any, **kwargs: Any) -> None:
        """Not supported: use ``save_weights`` and ``load_weights`` into a model built with
        the same arguments (Keras's whole-model formats do not round-trip this model)."""
        raise NotImplementedError(
            "FlowMatching.save is not supported: call model.save_weights(path) and, later, "
            "load_weights(path) on a FlowMatching built with the same arguments.")
