"""Moons benchmark: the classic TFP tutorial's MAF against nfbook's flows, in one run.

Every system trains on ``moons(10000, noise=0.05, seed=0)`` and is scored on the held-out
``moons(10000, seed=1)`` after every epoch (scoring excluded from the training time; tracing
and compiling included). The script prints, per system, the medians over seeds of seconds per
epoch, epochs and seconds to held-out NLL <= 0.70 and <= 0.60, the best held-out NLL within the
time budget, and the speed-up over the classic code in seconds, both to the classic code's best
NLL and to 0.60. Systems take turns seed by seed, so that a change in the machine's pace
during the run weighs on every row alike.
The data's entropy, the floor of any held-out NLL, is computed here too.

With ``--zuko-python``, the same run also trains the PyTorch library zuko's MAF of the same
size (``other_libraries.py``, in the Python environment given, which needs PyTorch and zuko
but not TensorFlow; ``requirements-others.txt``), on the same split and under the same clock.

Run from the repository root::

    .venv/bin/python benchmarks/moons.py --seeds 0 1 2
    python3.11 -m venv .others    # then install as benchmarks/requirements-others.txt says
    .venv/bin/python benchmarks/moons.py --seeds 0 1 2 --zuko-python .others/bin/python

A second look at a few rows, in a table of its own (the classic code always runs, as the
reference of the speed-ups)::

    .venv/bin/python benchmarks/moons.py --only "batch 128" --report moons_batch128
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402
import tf_keras as keras  # noqa: E402

import nfbook  # noqa: E402

from report import fmt, median, write  # noqa: E402

tfb = tfp.bijectors
tfd = tfp.distributions

THRESHOLDS = (0.70, 0.60)


@dataclass
class Run:
    """Held-out NLL after each epoch and the cumulative training seconds at that point."""

    nll: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def first_epoch_at(self, threshold: float) -> int | None:
        hits = [i + 1 for i, value in enumerate(self.nll) if value <= threshold]
        return hits[0] if hits else None

    def seconds_at(self, threshold: float) -> float | None:
        epoch = self.first_epoch_at(threshold)
        return None if epoch is None else self.seconds[epoch - 1]

    def best_within(self, seconds: float) -> float:
        values = [v for v, t in zip(self.nll, self.seconds) if t <= seconds]
        return min(values) if values else float("nan")


class _Timer(keras.callbacks.Callback):
    """Scores the held-out set after each epoch, outside the timed span; stops at budgets."""

    def __init__(self, score: Callable[[], float], run: Run, max_seconds: float) -> None:
        super().__init__()
        self.score, self.run, self.max_seconds = score, run, max_seconds
        self.elapsed = 0.0

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if epoch > 0:
            self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.elapsed += time.perf_counter() - self.start
        self.run.seconds.append(self.elapsed)
        self.run.nll.append(self.score())
        if self.elapsed >= self.max_seconds:
            self.model.stop_training = True


def classic_model(ndim: int = 2) -> tuple[keras.Model, tfd.Distribution]:
    """The classic tutorial's flow: 3 x (MAF on MADE [128, 128], Permute), a functional
    Keras model over ``td.log_prob(x)``, trained with zero labels and a loss that ignores them."""
    layers = []
    for _ in range(3):
        made = tfb.AutoregressiveNetwork(params=2, hidden_units=[128, 128], activation="relu")
        layers += [tfb.MaskedAutoregressiveFlow(made), tfb.Permute([1, 0])]
    flow = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(loc=[0.0] * ndim),
                                       tfb.Chain(layers))
    x = keras.Input(shape=(ndim,), dtype=tf.float32)
    model = keras.Model(x, flow.log_prob(x))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=lambda _, log_prob: -log_prob)
    return model, flow


def train_classic(train: np.ndarray, test: np.ndarray, seed: int, max_epochs: int,
                  max_seconds: float) -> Run:
    nfbook.set_seed(seed)
    model, flow = classic_model()
    held_out = tf.constant(test)
    score = tf.function(lambda: -tf.reduce_mean(flow.log_prob(held_out)))
    run = Run()
    model.fit(train, np.zeros(len(train)), batch_size=32, epochs=max_epochs, verbose=0,
              callbacks=[_Timer(lambda: float(score()), run, max_seconds)])
    return run


def train_nfbook(builder: Callable[[], tfb.Bijector], batch_size: int, learning_rate: float,
                 train: np.ndarray, test: np.ndarray, seed: int, max_epochs: int,
                 max_seconds: float, cosine: bool = False,
                 steps_per_execution: int = 100, fused: bool = False,
                 clip: float | None = None,
                 context: tuple[np.ndarray, np.ndarray] | None = None,
                 average_weights: bool = True) -> Run:
    """nfbook's recipe: FlowModel (weight averaging on, 100 steps per compiled call by
    default), Adam; with ``cosine`` the learning rate decays to zero over ``max_epochs``;
    with ``fused``, tf_keras's legacy Adam (one fused kernel per variable, the default of
    ``FlowModel.compile``) instead of ``keras.optimizers.Adam``; with ``clip``, every
    batch's gradients scaled down to a global norm of at most ``clip``; with ``context``
    (training and held-out), a conditional flow; with ``average_weights=False``, plain
    weights (no moving average)."""
    nfbook.set_seed(seed)
    model = nfbook.FlowModel(builder(), ndim=2, average_weights=average_weights)
    rate: float | keras.optimizers.schedules.LearningRateSchedule = learning_rate
    if cosine:
        steps = max_epochs * int(np.ceil(len(train) / batch_size))
        rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
    adam = keras.optimizers.legacy.Adam if fused else keras.optimizers.Adam
    model.compile(optimizer=adam(rate, global_clipnorm=clip),
                  steps_per_execution=steps_per_execution)
    held_out = tf.constant(test) if context is None else (tf.constant(test),
                                                          tf.constant(context[1]))
    score = tf.function(lambda: -tf.reduce_mean(model(held_out)))
    run = Run()
    model.fit(train, batch_size=batch_size, epochs=max_epochs, verbose=0,
              callbacks=[_Timer(lambda: float(score()), run, max_seconds)],
              **({} if context is None else {"context": context[0]}))
    return run


def run_other(python: str, split: str, batch_size: int, learning_rate: float, seed: int,
              max_seconds: float, library: str = "zuko", flow: str = "maf",
              threads: int | None = None, max_epochs: int | None = None,
              extra: Sequence[str] = ()) -> dict:
    """A flow of zuko, normflows or flowjax through ``other_libraries.py`` in the interpreter
    ``python`` (a fresh process per seed, as every nfbook run pays its own tracing), on
    ``threads`` compute threads (None: the framework's default), for at most ``max_epochs``
    epochs (None: the worker's default), with ``extra`` options (``--layers 5``...); the
    worker's record (``nll``, ``seconds``, ``parameters``, ``versions``)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "other_libraries.py")
    output = subprocess.run(
        [python, script, "--library", library, "--flow", flow, "--data", split,
         "--seed", str(seed), "--batch-size", str(batch_size),
         "--learning-rate", str(learning_rate), "--budget", str(max_seconds),
         *([] if threads is None else ["--threads", str(threads)]),
         *([] if max_epochs is None else ["--max-epochs", str(max_epochs)]), *extra],
        check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def train_zuko(python: str, split: str, batch_size: int, learning_rate: float, seed: int,
               max_seconds: float) -> Run:
    """zuko's MAF (``run_other``)."""
    record = run_other(python, split, batch_size, learning_rate, seed, max_seconds)
    return Run(nll=record["nll"], seconds=record["seconds"])


def zuko_systems(python: str, split: str, budget: float) -> dict[str, Callable[[int], Run]]:
    """The two zuko rows of the issue's comparison: batch 32 with Adam 1e-3 and batch 1024
    with Adam 3e-3."""
    probe = subprocess.run([python, "-c", "import torch, zuko; print(zuko.__version__)"],
                           check=True, capture_output=True, text=True).stdout.strip()
    return {
        f"zuko {probe} MAF (PyTorch), batch {batch}, Adam {rate:g}":
            lambda s, batch=batch, rate=rate: train_zuko(python, split, batch, rate, s, budget)
        for batch, rate in ((32, 1e-3), (1024, 3e-3))
    }


def _times_sooner(baseline: float | None, seconds: float | None) -> str:
    """How many times sooner than the baseline, e.g. "12.3x"; "not reached" where either
    never got there."""
    return "not reached" if baseline is None or seconds is None else f"{baseline / seconds:.1f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--classic-epochs", type=int, default=100)
    parser.add_argument("--budget", type=float, default=60.0,
                        help="training seconds per nfbook run (and for 'best within')")
    parser.add_argument("--zuko-python", default=None,
                        help="a Python with torch and zuko: add zuko's MAF to the run")
    parser.add_argument("--only", nargs="+", default=None, metavar="TEXT",
                        help="run only the systems whose name contains one of these texts "
                        "(and the classic code, the reference of the speed-ups)")
    parser.add_argument("--report", default="moons",
                        help="write the table to benchmarks/results/REPORT.md")
    args = parser.parse_args()

    train, test = nfbook.data.moons(10000, seed=0), nfbook.data.moons(10000, seed=1)
    floor = nfbook.data.moons_entropy(noise=0.05)
    systems: dict[str, Callable[[int], Run]] = {
        "classic TFP code, Keras fit + fake labels, batch 32, Adam 1e-3": lambda s: train_classic(
            train, test, s, args.classic_epochs, np.inf),
        "nfbook.maf(2), batch 32, Adam 1e-3": lambda s: train_nfbook(
            lambda: nfbook.maf(2), 32, 1e-3, train, test, s, 1000, args.budget),
        "nfbook.maf(2), batch 32, Adam 1e-3, steps_per_execution=1 (a Keras call per batch)":
            lambda s: train_nfbook(lambda: nfbook.maf(2), 32, 1e-3, train, test, s, 1000,
                                   args.budget, steps_per_execution=1),
        "nfbook.maf(2), batch 1024, Adam 3e-3": lambda s: train_nfbook(
            lambda: nfbook.maf(2), 1024, 3e-3, train, test, s, 1000, args.budget),
        "nfbook.maf(2), batch 512, Adam 3e-3": lambda s: train_nfbook(
            lambda: nfbook.maf(2), 512, 3e-3, train, test, s, 1000, args.budget),
        "nfbook.maf(2), batch 512, legacy (fused) Adam 3e-3, FlowModel.compile's default":
            lambda s: train_nfbook(lambda: nfbook.maf(2), 512, 3e-3, train, test, s, 1000,
                                   args.budget, fused=True),
        "nfbook.maf(2), batch 128, legacy (fused) Adam 2e-3": lambda s: train_nfbook(
            lambda: nfbook.maf(2), 128, 2e-3, train, test, s, 1000, args.budget, fused=True),
        "nfbook.maf(2), batch 128, legacy (fused) Adam 4e-3, gradients clipped to norm 1":
            lambda s: train_nfbook(lambda: nfbook.maf(2), 128, 4e-3, train, test, s, 1000,
                                   args.budget, fused=True, clip=1.0),
        "nfbook.maf(2), batch 256, Adam 3e-3 with cosine decay over 100 epochs":
            lambda s: train_nfbook(lambda: nfbook.maf(2), 256, 3e-3, train, test, s, 100,
                                   args.budget, cosine=True),
        "nfbook.realnvp(2), batch 256, Adam 1e-3 (for information)": lambda s: train_nfbook(
            lambda: nfbook.realnvp(2), 256, 1e-3, train, test, s, 1000, args.budget),
    }
    if args.zuko_python:  # the very same arrays, through a file
        split = os.path.join(tempfile.mkdtemp(), "moons.npz")
        np.savez(split, train=train, test=test)
        systems.update(zuko_systems(args.zuko_python, split, args.budget))
    classic_name = next(iter(systems))
    if args.only:
        systems = {name: run for name, run in systems.items()
                   if name == classic_name or any(text in name for text in args.only)}
    # Seed by seed, every system in turn: a machine that slows down or speeds up during the
    # run then weighs on every row alike, and the ratios within the table stay fair.
    runs: dict[str, list[Run]] = {name: [] for name in systems}
    for seed in args.seeds:
        for name, run in systems.items():
            runs[name].append(run(seed))
    classic = next(iter(runs.values()))
    target = max(run.best_within(np.inf) for run in classic)  # every classic seed reached it
    classic_seconds = median([run.seconds_at(target) for run in classic])
    classic_to_060 = median([run.seconds_at(0.60) for run in classic])

    lines = [
        f"Entropy of the data (floor of any held-out NLL): {floor:.3f} nats. Seeds {args.seeds}; "
        f"medians over seeds. Target for the speed-up: {target:.3f}, the worst of the classic "
        f"code's best held-out NLLs in {args.classic_epochs} epochs. Training seconds include "
        "tracing and exclude the scoring of the held-out set after every epoch.",
        "",
        "| system | s/epoch | epochs to 0.70 | epochs to 0.60 | s to 0.60 "
        f"| best NLL in {args.budget:.0f} s | best NLL overall | s to target | speed-up "
        "| speed-up to 0.60 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, system_runs in runs.items():
        per_epoch = median([run.seconds[-1] / len(run.seconds) for run in system_runs])
        epochs = [median([run.first_epoch_at(t) for run in system_runs]) for t in THRESHOLDS]
        to_060 = median([run.seconds_at(0.60) for run in system_runs])
        best_budget = median([run.best_within(args.budget) for run in system_runs])
        best = median([run.best_within(np.inf) for run in system_runs])
        to_target = median([run.seconds_at(target) for run in system_runs])
        lines.append(f"| {name} | {fmt(per_epoch, 2)} | {fmt(epochs[0], 0)} "
                     f"| {fmt(epochs[1], 0)} | {fmt(to_060)} | {fmt(best_budget, 3)} "
                     f"| {fmt(best, 3)} | {fmt(to_target)} "
                     f"| {_times_sooner(classic_seconds, to_target)} "
                     f"| {_times_sooner(classic_to_060, to_060)} |")
    print("\n".join(lines))
    write(args.report, lines)

if __name__ == "__main__":
    main()
