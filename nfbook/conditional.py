r"""Conditional flows: which layers of a bijector take a context, and TFP's way to pass it.

A conditional flow is a bijector :math:`f_c` whose layers' networks also read a context
:math:`c`, so that

.. math:: \log p(x \mid c) = \log p_z(f_c^{-1}(x)) + \log\left|\det J_{f_c^{-1}}(x)\right|.

TFP hands the context to a layer through keyword arguments: a ``tfb.MaskedAutoregressiveFlow``
or ``tfb.RealNVP`` passes ``conditional_input=c`` on to its network, and a ``tfb.Chain`` routes
a dictionary of them to its members by name. :func:`bijector_kwargs` builds that dictionary,
which TFP's ``TransformedDistribution`` takes as ``bijector_kwargs``;
:class:`nfbook.FlowModel` uses it for every call that needs the context.
"""

from __future__ import annotations

__all__ = ["bijector_kwargs", "context_dim_of", "takes_context"]

from typing import Any

import tensorflow_probability as tfp

from nfbook import private_api
from nfbook.splines import SplineFunction

tfb = tfp.bijectors

_FLOW_LAYERS = (tfb.MaskedAutoregressiveFlow, tfb.RealNVP)


def _network(layer: tfb.Bijector) -> Any:
    """The network of a MAF or RealNVP layer (a spline layer's, inside its function)."""
    network = private_api.shift_and_log_scale_fn(layer)
    if network is None:
        network = private_api.bijector_fn(layer)
    return network.network if isinstance(network, SplineFunction) else network


def takes_context(layer: tfb.Bijector) -> bool | None:
    """Whether one layer (not a chain) reads a context: ``True`` or ``False`` for a MAF or
    RealNVP layer whose nfbook network says so (its ``context_dim``), ``None`` for such a layer
    with a network of another make (it may take ``conditional_input``), ``False`` for any
    other bijector."""
    if isinstance(layer, private_api.Invert):
        return takes_context(layer.bijector)
    if not isinstance(layer, _FLOW_LAYERS):
        return False
    network = _network(layer)
    if not hasattr(network, "context_dim"):
        return None
    return network.context_dim is not None


def _layers(bijector: tfb.Bijector) -> list[tfb.Bijector]:
    if isinstance(bijector, private_api.Chain):
        return [leaf for member in bijector.bijectors for leaf in _layers(member)]
    if isinstance(bijector, private_api.Invert):
        return _layers(bijector.bijector)
    return [bijector]


def context_dim_of(bijector: tfb.Bijector) -> int | None:
    """The context width of the nfbook networks inside ``bijector``, ``None`` if none takes a
    context.

    Raises
    ------
    ValueError
        If its networks take contexts of different widths.

    Examples
    --------
    >>> import nfbook
    >>> context_dim_of(nfbook.maf(2, num_layers=2, context_dim=3)), context_dim_of(nfbook.maf(2))
    (3, None)
    """
    widths = {_network(layer).context_dim for layer in _layers(bijector)
              if takes_context(layer)}
    if len(widths) > 1:
        raise ValueError(f"The bijector's networks take contexts of different widths "
                         f"{sorted(widths)}; a conditional flow needs one context width.")
    return widths.pop() if widths else None


def bijector_kwargs(bijector: tfb.Bijector, context: Any) -> dict[str, Any]:
    r"""The keyword arguments that hand ``context`` to every layer of ``bijector`` that reads
    one, in TFP's routing: ``{"conditional_input": context}`` for such a layer, and for a
    ``tfb.Chain`` a dictionary of its members' arguments keyed by their names (members that
    take none are left out). A MAF or RealNVP layer whose network nfbook did not build gets the
    context too (TFP's conditional ``AutoregressiveNetwork`` reads it as ``conditional_input``).

    Pass the result as ``bijector.forward(z, **kwargs)``, ``bijector.inverse(x, **kwargs)``,
    or to a ``tfd.TransformedDistribution`` as ``log_prob(x, bijector_kwargs=kwargs)`` and
    ``sample(n, bijector_kwargs=kwargs)``.

    Parameters
    ----------
    bijector : tfb.Bijector
        A flow, e.g. ``nfbook.maf(2, context_dim=1)``.
    context : array-like or tf.Tensor
        The context, shape ``(n, k)``: one row per point the bijector is applied to.

    Returns
    -------
    dict

    Examples
    --------
    >>> import nfbook
    >>> flow = nfbook.realnvp(2, hidden_units=(8,), num_layers=2, context_dim=1)
    >>> sorted(bijector_kwargs(flow, [[0.5]]))
    ['realnvp_0', 'realnvp_1']
    >>> flow.forward([[0.1, 0.2]], **bijector_kwargs(flow, [[0.5]])).shape
    TensorShape([1, 2])
    """
    if isinstance(bijector, private_api.Chain):
        routed = {member.name: bijector_kwargs(member, context) for member in bijector.bijectors}
        return {name: kwargs for name, kwargs in routed.items() if kwargs}
    if isinstance(bijector, private_api.Invert):
        return bijector_kwargs(bijector.bijector, context)  # Invert passes them on unchanged
    if takes_context(bijector) is False:
        return {}
    return {"conditional_input": context}
