"""Gap to the floor on the five toy densities: nfbook's MAF and NSF beside zuko's and normflows'.

Is a large gap a limit of the kind of flow or of nfbook's version of it? This script answers
with the yardstick libraries, on the sets, splits and score of ``toy_densities.py``: every flow
trains on 10,000 points (seed 0), and its gap is the mean over 5,000 held-out points (seed 1)
of log p(x) - log q(x), p the set's exact density. Since the other libraries report only their
held-out NLL, the gap is computed here as mean(log p) + NLL over the same points, which is the
same number.

Every flow gets the same recipe as nfbook's flow of its kind in ``toy_densities.py``: the data
standardised by the training set's mean and standard deviation (log-determinant counted), Adam
with a cosine decay to zero from the same peak rate, the same epochs, batch size, number of
layers and hidden widths (two layers of 128). The affine MAFs have 5 layers; the spline flows
are autoregressive, 4 layers of 8 bins, since zuko's and normflows' spline flows are (nfbook's
``nsf(2, autoregressive=True)``). Each library keeps its own parameterisation: how it bounds the
scales, the spline's interval and tails, its initialisation. The other libraries run in a venv
of their own (``benchmarks/requirements-others.txt``) through ``other_libraries.py``, a fresh
process per run on one compute thread, so their seconds are not comparable with nfbook's (two
threads); the gaps are.

Run from the repository root::

    .venv/bin/python benchmarks/toy_libraries.py --others-python .others/bin/python
"""

from __future__ import annotations

import argparse
import os
import subprocess

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from libraries import Task  # noqa: E402
from moons import run_other  # noqa: E402
from toy_densities import RECIPES, SETS, run_one, split, table_cell  # noqa: E402

from report import write  # noqa: E402

# column: (library, flow, the recipe of toy_densities.py it trains with, its layers)
SYSTEMS = {
    "nfbook MAF": ("nfbook", "maf", "MAF", 5),
    "zuko MAF": ("zuko", "maf", "MAF", 5),
    "normflows MAF": ("normflows", "maf", "MAF", 5),
    "nfbook NSF": ("nfbook", "nsf", "NSF, autoregressive", 4),
    "zuko NSF": ("zuko", "nsf", "NSF, autoregressive", 4),
    "normflows NSF": ("normflows", "nsf", "NSF, autoregressive", 4),
}


def other_gap(python: str, library: str, flow: str, recipe: str, layers: int, task: Task,
              split_path: str, mean_log_p: float, seed: int) -> tuple[float, float]:
    """Train another library's flow on the standardised ``task``; its gap and the seconds."""
    chosen = RECIPES[recipe]
    record = run_other(python, split_path, chosen.batch_size, chosen.learning_rate, seed,
                       max_seconds=float("inf"), library=library, flow=flow, threads=1,
                       max_epochs=chosen.epochs, extra=["--layers", str(layers), "--cosine"])
    nll = record["nll"][-1] + task.offset  # NLL of the data in its own units
    return mean_log_p + nll, record["seconds"][-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--others-python", required=True,
                        help="the Python of the venv with zuko and normflows")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--report", default="toy_libraries")
    args = parser.parse_args()

    lines = [
        "Gap to the floor (nats): the mean of log p(x) - log q(x) over 5,000 held-out points, "
        f"median over seeds {args.seeds} [min, max], and the median training seconds (nfbook "
        "on 2 threads, the others on 1). Every flow trains with the recipe of nfbook's flow of "
        "its kind in `toy_densities.py` (MAF: 5 affine layers, 60 epochs, batch 256, peak rate "
        "2e-3; NSF: 4 autoregressive spline layers of 8 bins, 40 epochs, batch 128, peak rate "
        "1e-3; Adam with cosine decay, data standardised).",
        "",
        "| data | " + " | ".join(args.systems) + " |",
        "| --- | " + " | ".join("---" for _ in args.systems) + " |",
    ]
    for set_name in args.sets:
        x_train, x_test, log_p_test = split(set_name)
        task = Task.standardised(x_train, x_test)
        split_path = task.save()
        results: dict[str, list[tuple[float | None, float]]] = {s: [] for s in args.systems}
        for seed in args.seeds:
            for system in args.systems:
                library, flow, recipe, layers = SYSTEMS[system]
                if library == "nfbook":
                    gap, _, seconds = run_one(recipe, RECIPES[recipe], x_train, x_test,
                                              log_p_test, seed, 1.0)
                else:
                    gap, seconds = other_gap(args.others_python, library, flow, recipe, layers,
                                             task, split_path, float(log_p_test.mean()),
                                             seed)
                print(f"{set_name} {system} seed {seed}: gap "
                      f"{'stopped' if gap is None else f'{gap:.3f}'} in {seconds:.0f} s",
                      flush=True)
                results[system].append((gap, seconds))
        cells = [table_cell([gap for gap, _ in results[system]],
                            [seconds for _, seconds in results[system]])
                 for system in args.systems]
        lines.append(f"| {set_name} | " + " | ".join(cells) + " |")
    others = subprocess.run(
        [args.others_python, "-c", "from importlib.metadata import version as v; "
         "print(', '.join(f'{p} {v(p)}' for p in ('torch', 'zuko', 'normflows')))"],
        check=True, capture_output=True, text=True).stdout.strip()
    lines += ["", f"The other libraries: {others}."]
    write(args.report, lines)


if __name__ == "__main__":
    main()
