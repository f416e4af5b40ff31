"""Which way "forward" maps, in TFP, zuko, nflows, normflows and flowjax: checked numerically.

For each library importable in this interpreter it builds an untrained affine MAF on two
dimensions and checks that its density is ``log p_base(g(x)) + log|det dg/dx|`` for ``g``
the library's inverse (TFP, normflows, flowjax) or forward (zuko, nflows) map, and that
sampling is the other map applied to base draws. It prints one line per library. TFP runs in
the project's venv, the others in the venv of ``benchmarks/requirements-others.txt``::

    .venv/bin/python benchmarks/directions.py
    .others/bin/python benchmarks/directions.py
"""

from __future__ import annotations

import importlib.metadata
import importlib.util

import numpy as np


def tfp_row() -> str:
    """TFP: ``bijector.forward`` maps base to data; ``log_prob`` calls ``inverse``."""
    import tensorflow as tf
    import tensorflow_probability as tfp

    tfb, tfd = tfp.bijectors, tfp.distributions
    made = tfb.AutoregressiveNetwork(params=2, hidden_units=[8],
                                     kernel_initializer="glorot_normal")
    flow = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(2)),
                                       tfb.MaskedAutoregressiveFlow(made))
    x = tf.random.stateless_normal([5, 2], seed=[1, 2])
    density = (flow.distribution.log_prob(flow.bijector.inverse(x))
               + flow.bijector.inverse_log_det_jacobian(x, event_ndims=1))
    samples = flow.sample(5, seed=[3, 4])
    base = flow.distribution.sample(5, seed=[3, 4])
    return (f"TFP {tfp.__version__}: log_prob = base(inverse(x)) + ildj: "
            f"{np.allclose(flow.log_prob(x), density, atol=1e-5)}; "
            f"sample = forward(base draw): "
            f"{np.allclose(samples, flow.bijector.forward(base), atol=1e-5)}")


def torch_rows() -> list[str]:
    """zuko and nflows: the flow's transform maps data to base; normflows: ``forward`` maps
    base to data and ``log_prob`` runs every layer's ``inverse``."""
    import nflows.distributions
    import nflows.flows
    import nflows.transforms
    import normflows as nf
    import torch
    import zuko

    torch.set_grad_enabled(False)
    torch.manual_seed(0)
    x = torch.randn(5, 2)
    rows = []
    dist = zuko.flows.MAF(2, transforms=1, hidden_features=(8,))()
    z, ladj = dist.transform.call_and_ladj(x)
    torch.manual_seed(1)
    samples = dist.sample((5,))
    torch.manual_seed(1)
    draws = dist.base.sample((5,))
    rows.append(f"zuko {zuko.__version__}: log_prob = base(transform(x)) + ladj: "
                f"{torch.allclose(dist.log_prob(x), dist.base.log_prob(z) + ladj, atol=1e-5)}; "
                f"sample = transform.inv(base draw): "
                f"{torch.allclose(samples, dist.transform.inv(draws), atol=1e-5)}; "
                f"max |z - x| = {float((z - x).abs().max()):.2f}")
    transform = nflows.transforms.MaskedAffineAutoregressiveTransform(2, 8)
    base = nflows.distributions.StandardNormal([2])
    flow = nflows.flows.Flow(transform, base)
    noise, logabsdet = transform(x)
    rows.append(f"nflows {importlib.metadata.version('nflows')}: "
                f"log_prob = base(transform.forward(x)) + logabsdet: "
                f"{torch.allclose(flow.log_prob(x), base.log_prob(noise) + logabsdet, atol=1e-5)}"
                f"; max |noise - x| = {float((noise - x).abs().max()):.2f}")
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(2),
                               [nf.flows.MaskedAffineAutoregressive(2, 8)])
    z, log_det = model.inverse_and_log_det(x)
    rows.append(f"normflows {nf.__version__}: log_prob = base(inverse(x)) + log_det: "
                f"{torch.allclose(model.log_prob(x), model.q0.log_prob(z) + log_det, atol=1e-5)}"
                f"; forward(inverse(x)) = x: {torch.allclose(model.forward(z), x, atol=1e-4)}"
                f"; max |z - x| = {float((z - x).abs().max()):.2f}")
    return rows


def flowjax_row() -> str:
    """flowjax: ``bijection.transform`` maps base to data; ``log_prob`` calls
    ``inverse_and_log_det``."""
    from importlib.metadata import version

    import jax
    import jax.numpy as jnp
    from flowjax.distributions import Normal
    from flowjax.flows import masked_autoregressive_flow

    dist = masked_autoregressive_flow(jax.random.key(0), base_dist=Normal(jnp.zeros(2)),
                                      flow_layers=1, nn_width=8)
    x = jax.random.normal(jax.random.key(1), (5, 2))
    z, log_det = jax.vmap(dist.bijection.inverse_and_log_det)(x)
    draws = dist.base_dist.sample(jax.random.key(2), (5,))
    samples = dist.sample(jax.random.key(2), (5,))
    return (f"flowjax {version('flowjax')}: log_prob = base(inverse(x)) + log_det: "
            f"{np.allclose(dist.log_prob(x), dist.base_dist.log_prob(z) + log_det, atol=1e-5)}"
            f"; sample = transform(base draw): "
            f"{np.allclose(samples, jax.vmap(dist.bijection.transform)(draws), atol=1e-5)}")


def main() -> None:
    if importlib.util.find_spec("tensorflow_probability"):
        print(tfp_row())
    if importlib.util.find_spec("zuko"):
        print("\n".join(torch_rows()))
    if importlib.util.find_spec("flowjax"):
        print(flowjax_row())


if __name__ == "__main__":
    main()
