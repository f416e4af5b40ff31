"""Shared by the benchmark scripts: medians over seeds, number formatting, and the report file.

A report is a markdown file under ``benchmarks/results/`` that starts with the command that made
it, the date and the machine; the book's benchmark page includes these files as they are.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def median(values: list[float | None]) -> float | None:
    """Median over seeds, where a run that never reached the mark (None) counts as infinitely
    late; None if the median itself is such a run."""
    value = float(np.median([np.inf if v is None else v for v in values]))
    return value if np.isfinite(value) else None


def fmt(value: float | None, digits: int = 1, cap: int | None = None) -> str:
    """``value`` with ``digits`` decimals; a missing value as "> cap" or "not reached"."""
    if value is None:
        return f"> {cap}" if cap is not None else "not reached"
    return f"{value:.{digits}f}"


def median_range(values: list[float | None], digits: int = 3) -> str:
    """A table cell: the median over seeds, then the min and max in brackets, e.g.
    "0.352 [0.350, 0.360]". The brackets are left out for a single value, for equal values, and
    when a run never reached the mark (None, counted as infinitely late by :func:`median`)."""
    cell = fmt(median(values), digits)
    finite = [v for v in values if v is not None]
    if len(finite) == len(values) > 1 and min(finite) != max(finite):
        cell += f" [{min(finite):.{digits}f}, {max(finite):.{digits}f}]"
    return cell


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write(name: str, lines: list[str]) -> Path:
    """Write ``lines`` to ``benchmarks/results/<name>.md`` under a header that names the
    command, the date and the machine."""
    command = " ".join(["python", shlex.quote(f"benchmarks/{Path(sys.argv[0]).name}"),
                        *map(shlex.quote, sys.argv[1:])])
    import tensorflow as tf

    header = [
        f"Measured with `{command}` on {time.strftime('%Y-%m-%d')}: {os.cpu_count()} CPU cores "
        f"({_cpu_model()}), Python {platform.python_version()}, TensorFlow {tf.__version__}.",
        "",
    ]
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text("\n".join(header + lines) + "\n")
    print(f"written to {path}")
    return path
