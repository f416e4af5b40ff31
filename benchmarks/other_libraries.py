"""zuko, normflows and flowjax on a moons split, timed like nfbook: the other libraries' worker.

It needs NumPy and PyTorch with zuko and normflows, or JAX with flowjax (no TensorFlow), so it
runs in a Python environment of its own; ``moons.py --zuko-python PATH``, ``libraries.py
--others-python PATH`` and ``toy_libraries.py --others-python PATH`` call it once per system
and seed, and put its rows in their tables, measured in the same run as nfbook. Each library
builds its standard class, of the size of nfbook's default flows (``--layers`` changes the
number of layers, ``--cosine`` decays the learning rate):

- ``maf``: 3 affine MAF layers on MADE networks of two hidden layers of ``--width`` units,
  the order reversed between layers (``zuko.flows.MAF``, normflows'
  ``MaskedAffineAutoregressive`` with ``Permute(mode="swap")``, flowjax's
  ``masked_autoregressive_flow``); normflows' conditional MADE takes only residual blocks,
  so its conditional MAF has one (three hidden layers);
- ``nsf``: 4 layers of rational-quadratic splines with 8 bins (``zuko.flows.NSF``,
  normflows' ``AutoregressiveRationalQuadraticSpline``, whose network is a residual MADE with
  one residual block, and flowjax's ``masked_autoregressive_flow`` with a
  ``RationalQuadraticSpline`` transformer on [-5, 5], zuko's default interval).

With ``context`` arrays in the split, the flow is conditional on them (zuko's ``context=``,
normflows' ``ConditionalNormalizingFlow`` with ``context_features``, flowjax's ``cond_dim``).
Training is each framework's plain loop: Adam, the data reshuffled every epoch, one step per
batch (flowjax: its own ``step``, as ``fit_to_data`` takes). The held-out NLL is scored after
every epoch, outside the timed span; the first steps' compilation (JAX) is timed. With
``--threads 1``, PyTorch (``torch.set_num_threads``) or XLA (``XLA_FLAGS``) computes on one
thread; by default each framework picks its own number.

Run on its own (prints one JSON record: held-out NLL and cumulative seconds per epoch, the
number of parameters and the versions)::

    .others/bin/python benchmarks/other_libraries.py --library zuko --flow maf \\
        --data split.npz --seed 0 --batch-size 256 --learning-rate 1e-3

where ``split.npz`` holds float32 arrays ``train`` and ``test`` of shape ``(n, 2)`` and,
optionally, ``train_context`` and ``test_context`` of shape ``(n, k)``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

LIBRARIES = ("zuko", "normflows", "flowjax")
FLOWS = ("maf", "nsf")
LAYERS = {"maf": 3, "nsf": 4}
BINS = 8


def timed_epochs(epoch: Callable[[np.ndarray], None], score: Callable[[], float], n: int,
                 seed: int, max_epochs: int, max_seconds: float) -> dict:
    """Run ``epoch(order)`` on a fresh random order of the ``n`` training points until
    ``max_epochs`` or ``max_seconds`` of training; ``score()`` after each, untimed.

    Parameters
    ----------
    epoch : callable
        One pass over the training set in the given order (it must return only once the
        computation has finished).
    score : callable
        Held-out NLL in nats.
    n : int
        Number of training points.
    seed : int
        Seed of the reshuffling.
    max_epochs : int
        Most epochs.
    max_seconds : float
        Training seconds after which no new epoch starts.

    Returns
    -------
    dict
        ``nll`` and cumulative training ``seconds`` after each epoch.
    """
    rng = np.random.default_rng(seed)
    nll: list[float] = []
    seconds: list[float] = []
    elapsed = 0.0
    for _ in range(max_epochs):
        order = rng.permutation(n)
        start = time.perf_counter()
        epoch(order)
        elapsed += time.perf_counter() - start
        nll.append(score())
        seconds.append(elapsed)
        if elapsed >= max_seconds:
            break
    return {"nll": nll, "seconds": seconds}


def torch_flow(library: str, flow: str, context_dim: int, width: int, num_layers: int
               ) -> tuple[Any, Callable]:
    """A zuko or normflows flow on two dimensions and its ``log_prob(x, context)``.

    Parameters
    ----------
    library : {"zuko", "normflows"}
        The PyTorch library.
    flow : {"maf", "nsf"}
        Affine MAF or rational-quadratic spline flow.
    context_dim : int
        Width of the context; 0 for an unconditional flow.
    width : int
        Hidden units per layer of each network.
    num_layers : int
        Number of flow layers.

    Returns
    -------
    tuple
        The ``torch.nn.Module`` and a function of a batch and its context (or ``None``) that
        returns the log-densities.
    """
    if library == "zuko":
        import zuko

        kind = zuko.flows.MAF if flow == "maf" else zuko.flows.NSF
        extra = {} if flow == "maf" else {"bins": BINS}
        module = kind(features=2, context=context_dim, transforms=num_layers,
                      hidden_features=(width, width), **extra)
        return module, lambda x, c: module(c).log_prob(x)
    import normflows as nf

    context = context_dim or None
    layers = []
    for _ in range(num_layers):
        if flow == "maf":  # one plain block: hidden widths (width, width); with a context
            # normflows' MADE takes only residual blocks: (width, width, width), skip between
            layers.append(nf.flows.MaskedAffineAutoregressive(
                2, width, context_features=context, num_blocks=1,
                use_residual_blocks=bool(context_dim)))
        else:
            layers.append(nf.flows.AutoregressiveRationalQuadraticSpline(
                2, 1, width, num_context_channels=context, num_bins=BINS))
        layers.append(nf.flows.Permute(2, mode="swap"))
    base = nf.distributions.DiagGaussian(2, trainable=False)
    if context_dim:
        module = nf.ConditionalNormalizingFlow(base, layers[:-1])
        return module, lambda x, c: module.log_prob(x, c)
    module = nf.NormalizingFlow(base, layers[:-1])
    return module, lambda x, c: module.log_prob(x)


def train_torch(library: str, flow: str, split: dict[str, np.ndarray], seed: int,
                batch_size: int, learning_rate: float, max_epochs: int, max_seconds: float,
                width: int, threads: int | None, layers: int, cosine: bool) -> dict:
    r"""Train a zuko or normflows flow by maximum likelihood with Adam (``timed_epochs``), on
    ``threads`` threads (None: PyTorch's default); with ``cosine``, the learning rate decays
    as :math:`\eta_k = \eta_0 (1 + \cos(\pi k / K)) / 2` over the ``K`` steps of
    ``max_epochs`` epochs (Keras's ``CosineDecay``)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    context_dim = split["train_context"].shape[1] if "train_context" in split else 0
    module, log_prob = torch_flow(library, flow, context_dim, width, layers)
    optimizer = torch.optim.Adam(module.parameters(), lr=learning_rate)
    total_steps = max_epochs * -(-len(split["train"]) // batch_size)
    schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
                if cosine else None)
    x, x_test = torch.from_numpy(split["train"]), torch.from_numpy(split["test"])
    c = torch.from_numpy(split["train_context"]) if context_dim else None
    c_test = torch.from_numpy(split["test_context"]) if context_dim else None

    def epoch(order: np.ndarray) -> None:
        for index in torch.from_numpy(order).split(batch_size):
            loss = -log_prob(x[index], None if c is None else c[index]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()

    def score() -> float:
        with torch.no_grad():
            return float(-log_prob(x_test, c_test).mean())

    record = timed_epochs(epoch, score, len(x), seed, max_epochs, max_seconds)
    package = __import__(library)
    return {**record, "parameters": sum(p.numel() for p in module.parameters()),
            "versions": f"PyTorch {torch.__version__}, {library} {package.__version__}"}


def train_flowjax(flow: str, split: dict[str, np.ndarray], seed: int, batch_size: int,
                  learning_rate: float, max_epochs: int, max_seconds: float, width: int,
                  threads: int | None, layers: int, cosine: bool) -> dict:
    """Train a flowjax flow by maximum likelihood with optax's Adam, step by step as
    ``flowjax.train.fit_to_data`` does (``timed_epochs``); with ``threads=1``, XLA on one
    thread (set before JAX is imported)."""
    import os
    from importlib.metadata import version

    if threads == 1:
        os.environ["XLA_FLAGS"] = ("--xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1")

    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import optax
    import paramax
    from flowjax.bijections import RationalQuadraticSpline
    from flowjax.distributions import Normal
    from flowjax.flows import masked_autoregressive_flow
    from flowjax.train.losses import MaximumLikelihoodLoss
    from flowjax.train.train_utils import step

    context_dim = split["train_context"].shape[1] if "train_context" in split else None
    transformer = (None if flow == "maf"
                   else RationalQuadraticSpline(knots=BINS - 1, interval=5.0))  # 8 bins
    dist = masked_autoregressive_flow(
        jax.random.key(seed), base_dist=Normal(jnp.zeros(2)), transformer=transformer,
        cond_dim=context_dim, flow_layers=layers, nn_width=width, nn_depth=2)
    params, static = eqx.partition(dist, eqx.is_inexact_array,
                                   is_leaf=lambda leaf: isinstance(leaf, paramax.NonTrainable))
    if cosine:
        steps = max_epochs * -(-len(split["train"]) // batch_size)
        learning_rate = optax.cosine_decay_schedule(learning_rate, steps)
    optimizer = optax.adam(learning_rate)
    state = {"params": params, "opt_state": optimizer.init(params)}
    loss = MaximumLikelihoodLoss()
    x, x_test = jnp.asarray(split["train"]), jnp.asarray(split["test"])
    c = jnp.asarray(split["train_context"]) if context_dim else None
    c_test = jnp.asarray(split["test_context"]) if context_dim else None

    def epoch(order: np.ndarray) -> None:
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            state["params"], state["opt_state"], _ = step(
                state["params"], static, x[index], None if c is None else c[index],
                optimizer=optimizer, opt_state=state["opt_state"], loss_fn=loss)
        jax.block_until_ready(state["params"])

    def score() -> float:
        return float(loss(state["params"], static, x_test, c_test))

    record = timed_epochs(epoch, score, len(x), seed, max_epochs, max_seconds)
    count = sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))
    return {**record, "parameters": int(count),
            "versions": f"JAX {jax.__version__}, flowjax {version('flowjax')}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", choices=LIBRARIES, default="zuko")
    parser.add_argument("--flow", choices=FLOWS, default="maf")
    parser.add_argument("--data", required=True,
                        help=".npz file with `train` and `test` (and their `_context`)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--max-epochs", type=int, default=1000)
    parser.add_argument("--budget", type=float, default=60.0, help="training seconds")
    parser.add_argument("--width", type=int, default=128, help="hidden units per layer")
    parser.add_argument("--threads", type=int, default=None,
                        help="compute threads (PyTorch; XLA: 1 only); default: the framework's")
    parser.add_argument("--layers", type=int, default=None,
                        help="flow layers; default: 3 for the MAF, 4 for the NSF")
    parser.add_argument("--cosine", action="store_true",
                        help="decay the learning rate to 0 over --max-epochs (cosine)")
    args = parser.parse_args()
    split = dict(np.load(args.data))
    options = (split, args.seed, args.batch_size, args.learning_rate, args.max_epochs,
               args.budget, args.width, args.threads, args.layers or LAYERS[args.flow],
               args.cosine)
    if args.library == "flowjax":
        record = train_flowjax(args.flow, *options)
    else:
        record = train_torch(args.library, args.flow, *options)
    print(json.dumps(record))


if __name__ == "__main__":
    main()
