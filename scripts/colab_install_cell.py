"""Run a chapter's first cell (the Colab install cell) as Colab would, and check what it did.

Used by ``make colab`` in a virtual environment that holds Colab's own TensorFlow stack
(requirements-colab.txt). The cell runs in an IPython shell with a stand-in ``google.colab``
module, so its ``%pip install`` really runs; the package is installed from this checkout instead
of the repository URL. The check fails unless the cell printed every package of the stack as
"Colab's own" (pip kept Colab's TensorFlow), printed nfbook's version, and asked for no restart.

Usage: python scripts/colab_install_cell.py book/01_introduction.ipynb
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import types
from pathlib import Path

from IPython.core.interactiveshell import InteractiveShell

ROOT = Path(__file__).resolve().parents[1]
REPOSITORY_SPEC = "nfbook @ git+https://github.com/nfbook/nfbook"
STACK = ("tensorflow", "tf-keras", "tensorflow-probability")


def install_cell(notebook: Path) -> str:
    """The first cell's source, installing from this checkout instead of the repository."""
    source = "".join(json.loads(notebook.read_text())["cells"][0]["source"])
    if REPOSITORY_SPEC not in source:
        raise SystemExit(f"{notebook}: first cell does not install {REPOSITORY_SPEC!r}")
    return source.replace(REPOSITORY_SPEC, f"nfbook @ {ROOT.as_uri()}")


def main(notebook: str) -> None:
    sys.modules["google.colab"] = types.ModuleType("google.colab")
    shell = InteractiveShell.instance()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = shell.run_cell(install_cell(Path(notebook)))
    output = printed.getvalue()
    print(output, end="")
    if not result.success:
        raise SystemExit(f"the install cell raised: {result.error_in_exec!r}")
    lines = output.splitlines()
    for name in STACK:
        if not any(line.startswith(f"{name} ") and "(Colab's own)" in line for line in lines):
            raise SystemExit(f"the install cell did not keep Colab's {name}")
    if not any(line.startswith("nfbook ") for line in lines):
        raise SystemExit("the install cell did not report nfbook's version")
    if "Restart session" in output:
        raise SystemExit("the install cell asked for a restart")
    print("Colab install cell: nfbook installed, Colab's TensorFlow stack kept.")


if __name__ == "__main__":
    main(sys.argv[1])
