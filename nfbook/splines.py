r"""Neural spline flows: rational-quadratic spline coupling and autoregressive layers.

Each layer is TFP's :class:`tfb.RationalQuadraticSpline`, one monotone spline per transformed
coordinate, whose bin widths, bin heights and interior knot slopes come from a tf_keras
network: an MLP of the kept half inside :class:`tfb.RealNVP` (coupling form), or a MADE inside
:class:`tfb.MaskedAutoregressiveFlow` (autoregressive form).
"""

from __future__ import annotations

__all__ = ["SplineFunction", "nsf"]

from collections.abc import Sequence

import tensorflow as tf
import tensorflow_probability as tfp

from nfbook.checks import check_hidden_units, check_positive_int, check_real
from nfbook.networks import check_context_dim
from nfbook.specs import attach_flow_spec
from nfbook.spline_networks import AutoregressiveSpline, CouplingSpline, SplineNetwork
from nfbook.stacking import stack

tfb = tfp.bijectors


def _coupling_layer(ndim: int, hidden_units: tuple[int, ...], activation: str, num_bins: int,
                    bound: float, context_dim: int | None, name: str) -> tfb.RealNVP:
    num_masked = ndim // 2
    network = CouplingSpline(ndim - num_masked, hidden_units, activation, num_bins, bound,
                             context_dim=context_dim, name=f"{name}_net")
    return tfb.RealNVP(num_masked=num_masked, bijector_fn=SplineFunction(network), name=name)


def _autoregressive_layer(ndim: int, hidden_units: tuple[int, ...], activation: str,
                          num_bins: int, bound: float, context_dim: int | None, name: str
                          ) -> tfb.MaskedAutoregressiveFlow:
    network = AutoregressiveSpline(ndim, hidden_units, activation, num_bins, bound,
                                   context_dim=context_dim, name=f"{name}_made")
    return tfb.MaskedAutoregressiveFlow(bijector_fn=SplineFunction(network), name=name)


class SplineFunction(tf.Module):
    """The ``bijector_fn`` of a flow layer: a module (so that the bijector tracks the
    network's variables) whose call returns the network's spline."""

    def __init__(self, network: SplineNetwork) -> None:
        super().__init__(name=f"{network.name}_fn")
        self.network = network

    def __call__(self, x: tf.Tensor, *args: object, **kwargs: object
                 ) -> tfb.RationalQuadraticSpline:
        return self.network.spline(x, *args, **kwargs)


def nsf(
    ndim: int,
    hidden_units: Sequence[int] = (128, 128),
    num_layers: int = 4,
    activation: str = "relu",
    batch_norm: bool = False,
    *,
    num_bins: int = 8,
    bound: float = 6.0,
    permutation: Sequence[int] | None = None,
    seed: int = 0,
    autoregressive: bool = False,
    scale_and_shift: bool = True,
    name: str = "nsf",
    context_dim: int | None = None,
) -> tfb.Chain:
    r"""Neural spline flow: rational-quadratic spline layers, permuted in between.

    Each layer transforms a coordinate :math:`x` by a monotone rational-quadratic spline
    (Gregory and Delbourgo's form, as in Durkan et al. 2019) with :math:`K` bins on
    :math:`[-B, B]`: knots :math:`(x_k, y_k)_{k=0}^{K}` with :math:`x_0 = y_0 = -B`,
    :math:`x_K = y_K = B`, bin widths :math:`w_k`, heights :math:`h_k`, derivatives
    :math:`\delta_k > 0` at the knots (:math:`\delta_0 = \delta_K = 1`). For :math:`x` in bin
    :math:`k`, with :math:`s_k = h_k / w_k` and :math:`\xi = (x - x_k) / w_k \in [0, 1]`,

    .. math::
        y = y_k + \frac{h_k\,[s_k \xi^2 + \delta_k \xi (1 - \xi)]}
                       {s_k + (\delta_{k+1} + \delta_k - 2 s_k)\,\xi (1 - \xi)},

    .. math::
        \frac{dy}{dx} = \frac{s_k^2\,[\delta_{k+1} \xi^2 + 2 s_k \xi (1 - \xi)
                        + \delta_k (1 - \xi)^2]}
                       {[s_k + (\delta_{k+1} + \delta_k - 2 s_k)\,\xi (1 - \xi)]^2} > 0,

    and :math:`y = x` (log-derivative 0) outside :math:`[-B, B]`. The inverse solves a
    quadratic in :math:`\xi` in closed form; the log-determinant of a layer is the sum of
    :math:`\log dy/dx` over its transformed coordinates. Widths, heights and slopes come from
    :func:`~nfbook.spline_networks.spline_parameters` of a network's output.

    Coupling form (default): with :math:`d = \lfloor D/2 \rfloor`, a layer keeps
    :math:`x_{1:d}` and sets :math:`x_{j} = g_{\theta_j(x_{1:d})}(u_j)` for :math:`j > d`
    (:class:`tfb.RealNVP` with a :class:`~nfbook.spline_networks.CouplingSpline`): sampling
    and density are each one network pass. Autoregressive form (``autoregressive=True``): the
    MAF layer :math:`x_i = g_{\theta_i(x_{<i})}(u_i)` (:class:`tfb.MaskedAutoregressiveFlow`
    with an :class:`~nfbook.spline_networks.AutoregressiveSpline` MADE): the density takes one
    pass, sampling :math:`D`.

    The networks' output layers start at zero, which gives equal bins and unit slopes, so the
    untrained flow is the identity; the gradient with respect to those zero weights is the
    hidden activations times the gradient with respect to the spline parameters, which is not
    zero even for symmetric data, so training leaves the start. The defaults: :math:`B = 6`
    covers a standard normal (the base side of every layer) to six standard deviations and
    data of up to about three times unit scale; outside :math:`[-B, B]` every spline is the
    identity, and only the final elementwise scale and shift (``scale_and_shift``) can match
    the data's scale there, so data of a larger scale should be standardised first. (A
    narrower interval puts more of its bins where unit-scale data lie, but leaves the tails of
    wider coordinates to the identity: with :math:`B = 4` a 16-dimensional Gaussian with
    standard deviations up to 2 is fitted visibly worse.) :math:`K = 8`
    bins and 4 layers (each coordinate transformed by two coupling layers in two dimensions)
    fit the two moons as closely as 6 layers or 16 bins do in the same number of epochs, with
    the smaller graph to trace. Data with thin structure or sharp edges need finer bins: on
    the five toy sets of the benchmark page, ``num_bins=32`` on the default interval comes
    within 0.08 nats of the floor on every set (medians of 3 seeds), where the defaults leave
    0.52 nats on thin concentric rings and 0.12 on a checkerboard; on the smooth moons the
    default bins stay a little closer, and 32 bins take about 1.5 times the seconds.

    Parameters
    ----------
    ndim : int
        Event size :math:`D`: at least 2 for the coupling form, 1 or more for the
        autoregressive form.
    hidden_units : sequence of int
        Hidden widths of each layer's network.
    num_layers : int
        Number of spline layers.
    activation : str
        Hidden activation of the networks.
    batch_norm : bool
        Add a :class:`tfb.BatchNormalization` after each layer (data side), as in
        :func:`nfbook.maf`.
    num_bins : int
        Bins :math:`K \geq 2` per spline.
    bound : float
        Half-width :math:`B > 0` of the splines' interval.
    permutation : None, "random", sequence of int, or sequence of sequences of int
        Permutations between layers, as in :func:`nfbook.realnvp` (coupling form) or
        :func:`nfbook.maf` (autoregressive form), whose defaults they share.
    seed : int
        Seed of ``permutation="random"``.
    autoregressive : bool
        MADE-conditioned (MAF) layers instead of coupling layers.
    scale_and_shift : bool
        End the flow (data side) with a trainable elementwise map
        :math:`x = m + e^{\sigma} \odot y`, starting at the identity, which lets the flow
        match the data's location and scale beyond the splines' interval.
    name : str
        Name of the chain; layer ``i`` is named ``f"{name}_{i}"``.
    context_dim : int, optional
        Width :math:`k` of a context :math:`c` that every layer's network also takes, so
        that each spline depends on :math:`c`: a conditional flow :math:`p(x \mid c)`
        (:mod:`nfbook.conditional`). ``None``: unconditional.

    Returns
    -------
    tfb.Chain
        Flow layers from base (applied first when sampling) to data.

    Raises
    ------
    ValueError, TypeError
        On a bad ``ndim`` (below 1, or 1 for the coupling form), ``num_layers``,
        ``hidden_units``, ``num_bins`` (below 2), ``bound`` (not positive), ``permutation`` or
        ``context_dim``.

    References
    ----------
    Durkan, Bekasov, Murray and Papamakarios (2019), Neural Spline Flows,
    https://arxiv.org/abs/1906.04032. Gregory and Delbourgo (1982), Piecewise rational
    quadratic interpolation to monotonic data.

    Examples
    --------
    >>> flow = nsf(3, hidden_units=(16,), num_layers=2)
    >>> [b.name for b in flow.bijectors]
    ['shift', 'scale', 'nsf_1', 'permute_1', 'nsf_0']
    >>> z = tf.random.normal([4, 3])
    >>> x = flow.forward(z)  # untrained: identity splines, so only the permutation acts
    >>> bool(tf.reduce_max(tf.abs(tf.sort(x) - tf.sort(z))) < 1e-5)
    True
    >>> made = nsf(2, hidden_units=(16,), num_layers=2, autoregressive=True)
    >>> made.forward_log_det_jacobian(z[:, :2], event_ndims=1).shape
    TensorShape([4])
    """
    ndim = check_positive_int("ndim", ndim)
    num_layers = check_positive_int("num_layers", num_layers)
    hidden_units = check_hidden_units(hidden_units)
    seed = check_positive_int("seed", seed, minimum=0)
    num_bins = check_positive_int("num_bins", num_bins, minimum=2)
    bound = check_real("bound", bound, positive=True)
    context_dim = check_context_dim(context_dim)
    if not isinstance(name, str) or not name:
        raise TypeError(f"`name` must be a non-empty string, got {name!r}.")
    autoregressive = bool(autoregressive)
    if not autoregressive and ndim < 2:
        raise ValueError(f"`ndim` must be >= 2 for the coupling form of nsf (it splits the "
                         f"dimensions in two halves), got {ndim}; use autoregressive=True "
                         f"for a one-dimensional spline flow.")
    make = _autoregressive_layer if autoregressive else _coupling_layer
    chain = stack(
        ndim, num_layers,
        lambda i: make(ndim, hidden_units, activation, num_bins, bound, context_dim,
                       f"{name}_{i}"),
        batch_norm, permutation, seed, name=name,
    )
    if scale_and_shift:
        shift = tf.Variable(tf.zeros([ndim]), name=f"{name}_shift")
        log_scale = tf.Variable(tf.zeros([ndim]), name=f"{name}_log_scale")
        chain = tfb.Chain([tfb.Shift(shift, name="shift"),
                           tfb.Scale(log_scale=log_scale, name="scale"), *chain.bijectors],
                          name=name)
    return attach_flow_spec(
        chain, "nsf", ndim=ndim, hidden_units=list(hidden_units), num_layers=num_layers,
        activation=activation, batch_norm=bool(batch_norm), num_bins=num_bins, bound=bound,
        seed=seed, autoregressive=autoregressive, scale_and_shift=bool(scale_and_shift),
        name=name, context_dim=context_dim,
    )
