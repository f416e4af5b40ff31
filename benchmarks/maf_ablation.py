"""Why does TFP's MAF train slowly on two moons? An ablation, one change at a time.

The model is the classic 3-layer affine MAF: ``tfb.MaskedAutoregressiveFlow`` over a
``tfb.AutoregressiveNetwork(params=2, event_shape=[2], hidden_units=[128, 128], 'relu')``,
``tfb.Permute([1, 0])`` between layers, standard-normal base (52k parameters). It trains by
NLL on ``make_moons(10000, noise=0.05, random_state=0)`` and is scored on the held-out
``random_state=1`` set after every epoch (scoring excluded from the training time).

A variant is a ``+``-joined list of atomic changes applied to that baseline, so changes can
be tested one at a time (``zero-out``) or stacked (``torch-init+zero-out+zuko-dir``):

``baseline``       TFP defaults: glorot-uniform kernels, zero biases, unbounded log-scale,
                   TFP's direction ``z = (x - m) * exp(-s)``, Adam epsilon 1e-7, raw data.
``torch-bias``     hidden-layer biases ~ U(+-1/sqrt(fan_in)) (PyTorch's default), kernels kept.
``torch-init``     every layer's kernel and bias ~ U(+-1/sqrt(fan_in)), PyTorch ``nn.Linear``.
``zero-out``       output layer's kernel and bias zero: every MADE starts as the identity.
``small-out``      output layer's kernel times 0.01 and bias zero.
``tanhC``          soft clamp of the log-scale ``s -> C tanh(s / C)`` (e.g. ``tanh3``).
``zuko-clamp``     zuko's soft clamp ``s -> s / (1 + |s / log(1e-3)|)``.
``softplus``       scale ``softplus(s + log(e - 1)) + 1e-3`` instead of ``exp(s)``.
``zuko-dir``       zuko's direction ``z = x * exp(s) + m`` (a ``bijector_fn`` returning
                   ``Invert(Chain([Shift(m), Scale(log_scale=s)]))``).
``swap``           a ``Permute`` before the first MAF too (dimension 1 goes first).
``eps8``           Adam epsilon 1e-8 (PyTorch's) instead of 1e-7.
``std``            data standardised with the training mean and std; NLLs are reported in
                   the original units (the log-determinant of the standardisation added).
``clip``           Adam with ``global_clipnorm=1`` (gradient clipping).
``emaM``           score with an exponential moving average of the weights, momentum 0.M
                   (e.g. ``ema99``; Polyak averaging); the step and epoch loops only.
``zuko``           shorthand for ``torch-init+zuko-clamp+zuko-dir+eps8``.

The MADE is TFP's own network; non-default initialisations are written into its built
``Dense`` layers (times its masks) before training. The training loop is ``--loop``: Keras
``fit`` (``fit``, or ``fit-spe`` with ``steps_per_execution``), a Python loop over a
``tf.function`` step (``step``, ``step-xla``), or a ``tf.function`` running the whole epoch
in-graph (``epoch``, ``epoch-xla``). ``--timing`` instead prints seconds per epoch and the
start-up (tracing/compiling) cost of every loop for the first variant.

Run from the repository root, e.g.::

    .venv/bin/python benchmarks/maf_ablation.py --batch-size 32 --lr 1e-3 --max-epochs 12 \\
        --variants baseline zero-out torch-bias zuko-dir
"""

from __future__ import annotations

import argparse
import math
import os
import re
import time
from dataclasses import dataclass, field

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402
import tf_keras as keras  # noqa: E402
from sklearn.datasets import make_moons  # noqa: E402

from report import fmt, median, write  # noqa: E402

tfb = tfp.bijectors
tfd = tfp.distributions

THRESHOLDS = (0.70, 0.60)
LOOPS = ("fit", "fit-spe", "step", "step-xla", "epoch", "epoch-xla")
ATOMS = ("baseline", "torch-bias", "torch-init", "zero-out", "small-out", "zuko-clamp",
         "softplus", "zuko-dir", "swap", "eps8", "std", "clip", "zuko")


@dataclass
class Config:
    """One variant of the flow and its optimiser."""

    hidden_init: str = "glorot"  # glorot | torch-bias | torch
    out_init: str = "glorot"  # glorot | torch | zero | small
    clamp: str = "none"  # none | tanh | zuko
    clamp_c: float = 3.0
    scale: str = "exp"  # exp | softplus
    direction: str = "tfp"  # tfp | zuko
    swap: bool = False
    adam_eps: float = 1e-7
    standardise: bool = False
    clipnorm: float | None = None
    ema: float | None = None


def parse_variant(name: str) -> Config:
    """Turn ``'a+b+c'`` into a :class:`Config` by applying the atomic changes in order."""
    cfg = Config()
    for atom in name.split("+"):
        if atom == "baseline":
            continue
        if atom == "zuko":
            for sub in ("torch-init", "zuko-clamp", "zuko-dir", "eps8"):
                cfg = _apply(cfg, sub)
        else:
            cfg = _apply(cfg, atom)
    return cfg


def _apply(cfg: Config, atom: str) -> Config:
    tanh = re.fullmatch(r"tanh(\d+(?:\.\d+)?)", atom)
    ema = re.fullmatch(r"ema(\d+)", atom)
    if ema:
        cfg.ema = float("0." + ema.group(1))
    elif tanh:
        cfg.clamp, cfg.clamp_c = "tanh", float(tanh.group(1))
    elif atom == "torch-bias":
        cfg.hidden_init = "torch-bias"
    elif atom == "torch-init":
        cfg.hidden_init, cfg.out_init = "torch", "torch"
    elif atom == "zero-out":
        cfg.out_init = "zero"
    elif atom == "small-out":
        cfg.out_init = "small"
    elif atom == "zuko-clamp":
        cfg.clamp = "zuko"
    elif atom == "softplus":
        cfg.scale = "softplus"
    elif atom == "zuko-dir":
        cfg.direction = "zuko"
    elif atom == "swap":
        cfg.swap = True
    elif atom == "eps8":
        cfg.adam_eps = 1e-8
    elif atom == "std":
        cfg.standardise = True
    elif atom == "clip":
        cfg.clipnorm = 1.0
    else:
        raise ValueError(f"unknown change {atom!r}; known: {ATOMS} and tanhC")
    return cfg


# --------------------------------------------------------------------------------------------
# The model


def _reinit_made(made: tfb.AutoregressiveNetwork, cfg: Config, rng: np.random.Generator) -> None:
    """Write the variant's initial weights into TFP's built MADE (masked like TFP does)."""
    dense = [layer for layer in made._network.layers if isinstance(layer, keras.layers.Dense)]
    for k, (layer, mask) in enumerate(zip(dense, made._masks)):
        kernel, bias = (v.numpy() for v in (layer.kernel, layer.bias))
        fan_in = kernel.shape[0]
        bound = 1.0 / math.sqrt(fan_in)
        is_out = k == len(dense) - 1
        mode = cfg.out_init if is_out else cfg.hidden_init
        if mode == "torch":
            kernel = rng.uniform(-bound, bound, kernel.shape)
            bias = rng.uniform(-bound, bound, bias.shape)
        elif mode == "torch-bias":
            bias = rng.uniform(-bound, bound, bias.shape)
        elif mode == "zero":
            kernel, bias = np.zeros_like(kernel), np.zeros_like(bias)
        elif mode == "small":
            kernel, bias = 0.01 * kernel, np.zeros_like(bias)
        layer.kernel.assign((mask * kernel).astype(np.float32))
        layer.bias.assign(np.asarray(bias, np.float32))


def _bound(s: tf.Tensor, cfg: Config) -> tf.Tensor:
    if cfg.clamp == "tanh":
        return cfg.clamp_c * tf.tanh(s / cfg.clamp_c)
    if cfg.clamp == "zuko":
        return s / (1.0 + tf.abs(s / math.log(1e-3)))
    return s


def _scale_bijector(s: tf.Tensor, cfg: Config) -> tfb.Bijector:
    if cfg.scale == "softplus":
        return tfb.Scale(tf.nn.softplus(s + math.log(math.e - 1.0)) + 1e-3)
    return tfb.Scale(log_scale=s)


def build_flow(cfg: Config, seed: int) -> tuple[tfd.Distribution, list[keras.layers.Layer]]:
    """The 3-layer MAF of ``cfg``; returns the distribution and its MADEs (for variables)."""
    rng = np.random.default_rng(seed)
    layers: list[tfb.Bijector] = [tfb.Permute([1, 0])] if cfg.swap else []
    mades = []
    for i in range(3):
        made = tfb.AutoregressiveNetwork(params=2, event_shape=[2], hidden_units=[128, 128],
                                         activation="relu")
        made(tf.zeros([1, 2]))  # build, then re-initialise
        _reinit_made(made, cfg, rng)
        mades.append(made)

        def bijector_fn(y: tf.Tensor, made: keras.layers.Layer = made) -> tfb.Bijector:
            m, s = tf.unstack(made(y), axis=-1)
            chain = tfb.Chain([tfb.Shift(m), _scale_bijector(_bound(s, cfg), cfg)])
            # TFP: forward (base -> data) is x = z * scale + m, so z = (x - m) / scale.
            # zuko: the one-pass (data -> base) map is z = x * scale + m.
            return tfb.Invert(chain) if cfg.direction == "zuko" else chain

        layers.append(tfb.MaskedAutoregressiveFlow(bijector_fn=bijector_fn))
        if i < 2:
            layers.append(tfb.Permute([1, 0]))
    flow = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(loc=tf.zeros(2)),
                                       tfb.Chain(layers))
    return flow, mades


class FlowModel(keras.Model):
    """A Keras model whose output is ``log_prob(x)``, for the ``fit`` loops."""

    def __init__(self, flow: tfd.Distribution, mades: list[keras.layers.Layer]) -> None:
        super().__init__()
        self.flow, self.mades = flow, mades

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return self.flow.log_prob(x)


# --------------------------------------------------------------------------------------------
# Training


@dataclass
class Run:
    """Held-out NLL and cumulative training seconds after each epoch."""

    nll: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)

    def first_epoch_at(self, threshold: float) -> int | None:
        hits = [i + 1 for i, v in enumerate(self.nll) if v <= threshold]
        return hits[0] if hits else None

    def best_within(self, seconds: float) -> float:
        values = [v for v, t in zip(self.nll, self.seconds) if t <= seconds]
        return min(values) if values else float("nan")

    def steady_seconds(self) -> float:
        """Median seconds per epoch after the first (which holds the tracing)."""
        rest = self.epoch_seconds[1:] or self.epoch_seconds
        return float(np.median(rest))


@dataclass
class Settings:
    batch_size: int
    lr: float
    max_epochs: int
    loop: str
    schedule: str = "constant"
    budget: float = math.inf
    stop_at: float = -math.inf
    spe: int = 50


def train(cfg: Config, seed: int, data: tuple[np.ndarray, np.ndarray], st: Settings) -> Run:
    """Train one variant with one seed; score the held-out set after every epoch."""
    np.random.seed(seed)
    tf.random.set_seed(seed)
    keras.utils.set_random_seed(seed)
    train_x, test_x = data
    shift = train_x.mean(0) if cfg.standardise else np.zeros(2, np.float32)
    scale = train_x.std(0) if cfg.standardise else np.ones(2, np.float32)
    log_det = float(np.sum(np.log(scale)))  # NLL in original units = NLL standardised + this
    train_x = ((train_x - shift) / scale).astype(np.float32)
    held_out = tf.constant(((test_x - shift) / scale).astype(np.float32))
    flow, mades = build_flow(cfg, seed)
    n = len(train_x)
    steps_per_epoch = math.ceil(n / st.batch_size)
    lr: float | keras.optimizers.schedules.LearningRateSchedule = st.lr
    if st.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(st.lr, st.max_epochs * steps_per_epoch)
    opt = keras.optimizers.Adam(lr, epsilon=cfg.adam_eps, global_clipnorm=cfg.clipnorm)

    @tf.function
    def score() -> tf.Tensor:
        lp = tf.concat([flow.log_prob(b) for b in tf.split(held_out, 5)], 0)
        return -tf.reduce_mean(lp) + log_det

    run = Run()
    rng = np.random.default_rng(seed)

    def record(seconds: float) -> bool:
        run.epoch_seconds.append(seconds)
        run.seconds.append((run.seconds[-1] if run.seconds else 0.0) + seconds)
        run.nll.append(float(evaluate()))
        return run.seconds[-1] >= st.budget or run.nll[-1] <= st.stop_at

    if st.loop.startswith("fit"):
        evaluate = score
        model = FlowModel(flow, mades)
        model.compile(optimizer=opt, loss=lambda _, log_prob: -log_prob,
                      steps_per_execution=st.spe if st.loop == "fit-spe" else 1)

        class Timer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
                self.start = time.perf_counter()

            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                if record(time.perf_counter() - self.start):
                    self.model.stop_training = True

        model.fit(train_x, np.zeros(n, np.float32), batch_size=st.batch_size,
                  epochs=st.max_epochs, verbose=0, callbacks=[Timer()])
        return run

    variables = [v for made in mades for v in made.trainable_variables]
    xla = st.loop.endswith("xla")

    shadow = [tf.Variable(v) for v in variables] if cfg.ema else []

    def step(x: tf.Tensor) -> None:
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(flow.log_prob(x))
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        for average, v in zip(shadow, variables):
            average.assign(cfg.ema * average + (1.0 - cfg.ema) * v)

    def score_averaged() -> tf.Tensor:
        current = [v.numpy() for v in variables]
        for average, v in zip(shadow, variables):
            v.assign(average)
        value = score()
        for saved, v in zip(current, variables):
            v.assign(saved)
        return value

    evaluate = score_averaged if cfg.ema else score

    step_fn = tf.function(step, jit_compile=xla)

    @tf.function(jit_compile=xla)
    def epoch_fn(batches: tf.Tensor) -> None:
        for i in tf.range(tf.shape(batches)[0]):
            step(batches[i])

    full = n // st.batch_size
    for _ in range(st.max_epochs):
        x = train_x[rng.permutation(n)]
        start = time.perf_counter()
        if st.loop.startswith("epoch"):
            epoch_fn(tf.constant(x[: full * st.batch_size].reshape(full, st.batch_size, 2)))
        else:
            for i in range(full):
                step_fn(tf.constant(x[i * st.batch_size:(i + 1) * st.batch_size]))
        if full * st.batch_size < n:
            step_fn(tf.constant(x[full * st.batch_size:]))
        if record(time.perf_counter() - start):
            break
    return run


# --------------------------------------------------------------------------------------------
# Reporting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--variants", nargs="+", default=["baseline"],
                        help=f"'+'-joined changes from {ATOMS} or tanhC")
    parser.add_argument("--loop", choices=LOOPS, default="epoch")
    parser.add_argument("--schedule", choices=("constant", "cosine"), default="constant",
                        help="cosine: decay to 0 over --max-epochs")
    parser.add_argument("--budget", type=float, default=math.inf,
                        help="stop a run after this many training seconds")
    parser.add_argument("--stop-at", type=float, default=-math.inf,
                        help="stop a run once the held-out NLL is at or below this")
    parser.add_argument("--timing", action="store_true",
                        help="time every --loop mode on the first variant instead")
    parser.add_argument("--steps-per-execution", type=int, default=50)
    parser.add_argument("--verbose", action="store_true", help="print each run's NLL curve")
    parser.add_argument("--report", help="also write the table to benchmarks/results/REPORT.md")
    args = parser.parse_args()

    def moons(seed: int) -> np.ndarray:
        return make_moons(10000, noise=0.05, random_state=seed)[0].astype(np.float32)

    data = (moons(0), moons(1))
    settings = Settings(args.batch_size, args.lr, args.max_epochs, args.loop, args.schedule,
                        args.budget, args.stop_at, args.steps_per_execution)
    print(f"batch {args.batch_size}, Adam {args.lr:g} ({args.schedule}), seeds {args.seeds}, "
          f"at most {args.max_epochs} epochs, loop {args.loop}; medians over seeds\n")

    if args.timing:
        cfg = parse_variant(args.variants[0])
        lines = [
            f"Variant {args.variants[0]}, batch {args.batch_size}, {args.max_epochs} epochs, "
            f"seeds {args.seeds}: medians over seeds.",
            "",
            "| loop | s/epoch (after the first) | start-up: first epoch minus s/epoch |",
            "| --- | --- | --- |",
        ]
        for loop in LOOPS:
            runs = [train(cfg, s, data, Settings(args.batch_size, args.lr, args.max_epochs,
                                                 loop, spe=args.steps_per_execution))
                    for s in args.seeds]
            per_epoch = median([r.steady_seconds() for r in runs])
            startup = median([r.epoch_seconds[0] - r.steady_seconds() for r in runs])
            name = f"fit, steps_per_execution={args.steps_per_execution}" if loop == "fit-spe" \
                else loop
            lines.append(f"| {name} | {fmt(per_epoch, 3)} | {fmt(startup, 2)} |")
        print("\n".join(lines))
        if args.report:
            write(args.report, lines)
        return

    budget = "" if math.isinf(args.budget) else f" (within {args.budget:g} s)"
    lines = [
        f"Batch {args.batch_size}, Adam {args.lr:g} ({args.schedule}), at most "
        f"{args.max_epochs} epochs, seeds {args.seeds}: medians over seeds.",
        "",
        "| variant | epochs to NLL<=0.70 | epochs to NLL<=0.60 "
        f"| best held-out NLL{budget} | s/epoch |",
        "| --- | --- | --- | --- | --- |",
    ]
    print("\n".join(lines[2:]))
    for name in args.variants:
        cfg = parse_variant(name)
        runs = [train(cfg, s, data, settings) for s in args.seeds]
        if args.verbose:
            for s, r in zip(args.seeds, runs):
                print(f"  {name} seed {s}: " + " ".join(f"{v:.3f}" for v in r.nll), flush=True)
        epochs = [median([r.first_epoch_at(t) for r in runs]) for t in THRESHOLDS]
        best = median([min(r.nll) for r in runs])
        per_epoch = median([r.steady_seconds() for r in runs])
        lines.append(f"| {name} | {fmt(epochs[0], 0, args.max_epochs)} "
                     f"| {fmt(epochs[1], 0, args.max_epochs)} | {fmt(best, 3)} "
                     f"| {fmt(per_epoch, 3)} |")
        print(lines[-1], flush=True)
    if args.report:
        write(args.report, lines)


if __name__ == "__main__":
    main()
