"""Which library? nfbook (TFP) beside zuko, normflows and flowjax on the same moons tasks.

One run trains every system on the same arrays and under the same clock: nfbook here, in
TensorFlow; zuko and normflows (PyTorch) and flowjax (JAX) through ``other_libraries.py`` in
the Python environment given by ``--others-python``, a fresh process per system and seed (as
every nfbook run pays its own tracing). The tasks:

- the two moons (``moons(10000, noise=0.05, seed=0)``, held out: ``seed=1``, as
  ``moons.py``) with each library's MAF (3 layers) and rational-quadratic spline flow (NSF,
  4 layers, 8 bins), networks of two hidden layers of 128 units; nfbook's are ``nfbook.maf(2)``
  and ``nfbook.nsf(2)`` at their defaults (the NSF in coupling form, the others'
  autoregressive, which in two dimensions differ only in the first coordinate's spline);
- p(x | moon), the moons with noise 0.1 and the moon's label as context (as
  ``conditional_moons.py``), with each library's conditional MAF.

One recipe for all: the data standardised by a fixed affine map from the training set (its
log-determinant counted, so every NLL is in the data's units), Adam with the same learning
rate, the same batch size, the data reshuffled every epoch, the held-out NLL scored after
every epoch outside the timed span, training stopped after ``--budget`` seconds (compilation
and tracing included) or ``--max-epochs``, every framework computing on ``--threads`` threads
(default 1: one core each, which also keeps the ratios fair when other jobs share the
machine, where PyTorch's default of a thread per core slows down far more than the others).
nfbook's ``FlowModel`` runs without its weight averaging, which the other libraries do not
have. Systems take turns seed by seed, so that a change in the machine's pace weighs on every
row alike. Medians over seeds, with min and max.

Run from the repository root (the other libraries' venv: ``benchmarks/requirements-others.txt``)::

    .venv/bin/python benchmarks/libraries.py --seeds 0 1 2 --others-python .others/bin/python
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402
from conditional_moons import NOISE, floor, labelled_moons  # noqa: E402
from moons import Run, run_other, train_nfbook  # noqa: E402

import nfbook  # noqa: E402

from report import fmt, median, median_range, write  # noqa: E402

THRESHOLD = 0.60
LIBRARIES = ("zuko", "normflows", "flowjax")


@dataclass
class Task:
    """A data set, standardised: training and held-out points (and contexts), and the log-
    determinant of the standardisation, to add to every NLL."""

    train: np.ndarray
    test: np.ndarray
    offset: float
    context: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def standardised(cls, train: np.ndarray, test: np.ndarray,
                     context: tuple[np.ndarray, np.ndarray] | None = None) -> Task:
        """The task on ``(x - mean) / std`` of the training set; ``offset`` is
        ``sum(log std)``, since ``-log p(x) = -log p(z) + sum(log std)``."""
        loc, scale = train.mean(axis=0), train.std(axis=0)
        return cls(((train - loc) / scale).astype(np.float32),
                   ((test - loc) / scale).astype(np.float32), float(np.log(scale).sum()),
                   context)

    def save(self) -> str:
        """The arrays in an ``.npz`` file for ``other_libraries.py``; its path."""
        path = os.path.join(tempfile.mkdtemp(), "split.npz")
        arrays = {"train": self.train, "test": self.test}
        if self.context is not None:
            arrays.update(train_context=self.context[0], test_context=self.context[1])
        np.savez(path, **arrays)
        return path


@dataclass
class Result:
    """One system's run on one seed: held-out NLL (data units) per epoch, and its size."""

    run: Run
    parameters: int


def nfbook_system(builder: Callable[[], tfp.bijectors.Bijector], task: Task,
                  batch_size: int, learning_rate: float, max_epochs: int,
                  budget: float) -> Callable[[int], Result]:
    """A seed's run of ``FlowModel(builder())`` on ``task`` (``moons.train_nfbook``)."""
    parameters = nfbook.FlowModel(builder(), ndim=2).count_params()  # the same for every seed

    def run(seed: int) -> Result:
        trained = train_nfbook(builder, batch_size, learning_rate, task.train, task.test, seed,
                               max_epochs, budget, context=task.context, average_weights=False)
        return Result(Run([v + task.offset for v in trained.nll], trained.seconds), parameters)

    return run


def other_system(python: str, library: str, flow: str, task: Task, batch_size: int,
                 learning_rate: float, max_epochs: int, budget: float,
                 threads: int | None) -> Callable[[int], Result]:
    """A seed's run of ``library``'s ``flow`` on ``task`` (``moons.run_other``)."""
    split = task.save()

    def run(seed: int) -> Result:
        record = run_other(python, split, batch_size, learning_rate, seed, budget,
                           library=library, flow=flow, threads=threads,
                           max_epochs=max_epochs)
        return Result(Run([v + task.offset for v in record["nll"]], record["seconds"]),
                      record["parameters"])

    return run


def versions(python: str) -> list[tuple[str, str]]:
    """The libraries measured and their frameworks, ``(name, version)``."""
    code = ("from importlib.metadata import version as v; print(';'.join(f'{p} {v(p)}' for p "
            "in ('torch', 'zuko', 'normflows', 'jax', 'flowjax')))")
    others = subprocess.run([python, "-c", code], check=True, capture_output=True,
                            text=True).stdout.strip().split(";")
    ours = [("nfbook", nfbook.__version__), ("TensorFlow Probability", tfp.__version__),
            ("TensorFlow", tf.__version__)]
    return ours + [tuple(line.split(" ", 1)) for line in others]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=float, default=60.0, help="training seconds per run")
    parser.add_argument("--max-epochs", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--others-python", required=True,
                        help="a Python with torch, zuko, normflows, jax and flowjax")
    parser.add_argument("--threads", type=int, default=1,
                        help="compute threads of every framework (0: each one's default)")
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    parser.add_argument("--report", default="libraries",
                        help="write REPORT.md, REPORT_conditional.md and REPORT_versions.md "
                        "to benchmarks/results/")
    args = parser.parse_args()
    recipe = (args.batch_size, args.learning_rate)
    threads = args.threads or None
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)

    moons = Task.standardised(nfbook.data.moons(10000, seed=0), nfbook.data.moons(10000, seed=1))
    (x, c), (x_test, c_test) = labelled_moons(10000, 0), labelled_moons(10000, 1)
    conditional = Task.standardised(x, x_test, (c, c_test))
    entropy = nfbook.data.moons_entropy(noise=0.05)
    conditional_entropy, error = floor()
    builders = {("moons", "maf"): lambda: nfbook.maf(2), ("moons", "nsf"): lambda: nfbook.nsf(2),
                ("conditional", "maf"): lambda: nfbook.maf(2, context_dim=1)}
    tasks = {"moons": moons, "conditional": conditional}
    systems: dict[tuple[str, str, str], Callable[[int], Result]] = {}
    for task, flow in builders:
        systems[task, flow, "nfbook"] = nfbook_system(
            builders[task, flow], tasks[task], *recipe, args.max_epochs, args.budget)
        for library in args.libraries:
            systems[task, flow, library] = other_system(
                args.others_python, library, flow, tasks[task], *recipe, args.max_epochs,
                args.budget, threads)
    # Seed by seed, every system in turn: a change in the machine's pace during the run
    # weighs on every row alike.
    results: dict[tuple[str, str, str], list[Result]] = {key: [] for key in systems}
    for seed in args.seeds:
        for key, run in systems.items():
            results[key].append(run(seed))
            last = results[key][-1].run
            print(f"{key} seed {seed}: best {min(last.nll):.3f} in {len(last.nll)} epochs, "
                  f"{last.seconds[-1]:.0f} s (load average {os.getloadavg()[0]:.1f})",
                  flush=True)

    recipe_text = (f"Adam {args.learning_rate:g}, batch {args.batch_size}, reshuffled every "
                   f"epoch, data standardised by the training set's mean and standard "
                   f"deviation (log-determinant counted), at most {args.budget:.0f} training "
                   f"seconds (compilation and tracing included, held-out scoring after every "
                   f"epoch excluded) or {args.max_epochs} epochs, every framework on "
                   f"{threads or 'its default number of'} compute thread{'s' * (threads != 1)}")
    lines = [
        f"Two moons (noise 0.05, 10,000 training and 10,000 held-out points): held-out NLL "
        f"in nats, medians over seeds {args.seeds} with [min, max]. The data's entropy, the "
        f"floor of any held-out NLL, is {entropy:.3f}. {recipe_text}.",
        "",
        f"| library | flow | parameters | s/epoch | epochs to {THRESHOLD:.2f} "
        f"| s to {THRESHOLD:.2f} | best NLL in {args.budget:.0f} s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    conditional_lines = [
        f"Conditional moons (noise {NOISE}, context: the moon's label), each library's "
        f"conditional MAF: held-out NLL of p(x | moon) in nats, medians over seeds "
        f"{args.seeds} with [min, max], and its gap to the floor H(X | moon) = "
        f"{conditional_entropy:.3f} (s.e. {error:.3f}). {recipe_text}.",
        "",
        f"| library | parameters | s/epoch | epochs in {args.budget:.0f} s "
        f"| best NLL in {args.budget:.0f} s | gap to floor |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for (task, flow, library), runs in results.items():
        per_epoch = median([r.run.seconds[-1] / len(r.run.seconds) for r in runs])
        best = [r.run.best_within(args.budget) for r in runs]
        size = f"{runs[0].parameters:,}"
        if task == "moons":
            lines.append(
                f"| {library} | {flow.upper()} | {size} | {fmt(per_epoch, 3)} "
                f"| {median_range([r.run.first_epoch_at(THRESHOLD) for r in runs], 0)} "
                f"| {median_range([r.run.seconds_at(THRESHOLD) for r in runs], 1)} "
                f"| {median_range(best, 3)} |")
        else:
            epochs = median([sum(t <= args.budget for t in r.run.seconds) for r in runs])
            gap = median(best)
            conditional_lines.append(
                f"| {library} | {size} | {fmt(per_epoch, 3)} | {fmt(epochs, 0)} "
                f"| {median_range(best, 3)} "
                f"| {fmt(None if gap is None else gap - conditional_entropy, 3)} |")
    write(args.report, lines)
    write(f"{args.report}_conditional", conditional_lines)
    write(f"{args.report}_versions", [
        "The versions measured (nfbook's side in the project's venv, the others in a venv of "
        "their own, `benchmarks/requirements-others.txt`).", "",
        "| package | version |", "| --- | --- |",
        *[f"| {name} | {version} |" for name, version in versions(args.others_python)]])


if __name__ == "__main__":
    main()
