"""Shared by every pytest run: report TensorFlow's devices, enforce NFBOOK_DEVICE, time the
notebooks that nbval executes (a line per notebook at the end of the run), and with
``--save-executed DIR`` write them, with the outputs nbval received, under ``DIR`` once every
cell has passed (``make test`` builds the book from these, so no notebook runs twice).

``NFBOOK_DEVICE=gpu`` makes the session fail at once when TensorFlow sees no GPU, so a GPU run
can never pass on the CPU by mistake. ``make nbval`` loads this file with ``-p tests.conftest``.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import functools  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--save-executed", metavar="DIR", default=None,
                     help="write each notebook nbval executed, with its outputs, under DIR "
                          "(at the same path relative to the working directory) if all passed")


@functools.cache
def _devices() -> tuple[str, tuple[tuple[str, str], ...]]:
    import tensorflow as tf

    found = tuple((d.device_type, d.name) for d in tf.config.list_physical_devices())
    return tf.__version__, found


def pytest_report_header(config: pytest.Config) -> list[str]:
    version, found = _devices()
    names = ", ".join(f"{name} ({kind})" for kind, name in found) or "none"
    gpus = sum(kind == "GPU" for kind, _ in found)
    requested = os.environ.get("NFBOOK_DEVICE", "") or "unset"
    return [
        f"tensorflow {version}: devices {names}",
        f"GPUs visible to TensorFlow: {gpus}; NFBOOK_DEVICE={requested}",
    ]


def pytest_sessionstart(session: pytest.Session) -> None:
    requested = os.environ.get("NFBOOK_DEVICE", "").strip().lower()
    if requested in ("", "cpu", "any"):
        return
    if requested != "gpu":
        pytest.exit(f"NFBOOK_DEVICE={requested!r}: expected 'gpu', 'cpu' or unset.", returncode=1)
    _, found = _devices()
    if not any(kind == "GPU" for kind, _ in found):
        names = ", ".join(name for _, name in found) or "none"
        pytest.exit(
            "NFBOOK_DEVICE=gpu but TensorFlow sees no GPU (devices: "
            f"{names}). Refusing to run the tests on the CPU.",
            returncode=1,
        )


@pytest.fixture
def close_figures():
    """Close every matplotlib figure a test left open (tests that draw use this fixture)."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


_notebook_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Add up the time of every notebook cell that nbval runs, per notebook."""
    path = report.nodeid.split("::")[0]
    if path.endswith(".ipynb"):
        _notebook_seconds[path] = _notebook_seconds.get(path, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the execution time of each notebook and their total (the book's time budget)."""
    if not _notebook_seconds:
        return
    terminalreporter.section("seconds per notebook (cells executed by nbval)")
    workers = terminalreporter.config.getoption("numprocesses", None) or 0
    if workers > 1:
        terminalreporter.write_line(f"{workers} notebooks at a time: each shared the CPU cores")
    for path, seconds in sorted(_notebook_seconds.items()):
        terminalreporter.write_line(f"{seconds:8.1f}  {path}")
    terminalreporter.write_line(f"{sum(_notebook_seconds.values()):8.1f}  total")


_executed: dict[str, object] = {}  # notebook path -> nbval's notebook node, outputs filled in


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """After nbval runs a cell, keep what the kernel sent as that cell's outputs."""
    yield
    outputs = getattr(item, "test_outputs", None)
    notebook = getattr(item.parent, "nb", None)
    if outputs is None or notebook is None:
        return
    item.cell.outputs = outputs
    item.cell.execution_count = item.cell_num + 1
    _executed[str(item.parent.path)] = notebook


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With ``--save-executed DIR`` and every test passed, write the executed notebooks."""
    folder = session.config.getoption("save_executed", None)
    if not folder or not _executed or exitstatus != 0:
        return
    import nbformat

    for path, notebook in _executed.items():
        target = Path(folder) / Path(path).relative_to(Path.cwd())
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, target)
