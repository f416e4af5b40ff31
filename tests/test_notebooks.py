"""Structure of every chapter notebook listed in _toc.yml (no execution: nbval does that).

Each chapter must open with the same Colab install cell (installing from the repository URL of
_config.yml), have a title without a typed number (the table of contents numbers it), an
"Audience and objectives" box, a hidden set-up cell that seeds and styles, asserts behind its
claims, a summary, and exercises each followed by a dropdown solution and a hidden, asserting
solution cell; it must be stored without outputs, cite only keys of references.bib, and never use
`tf.keras` outside a Keras 3 demonstration.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())


def _chapters() -> list[Path]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    return [ROOT / f"{f}.ipynb" for f in files if (ROOT / f"{f}.ipynb").exists()]


CHAPTERS = _chapters()
IDS = [path.stem for path in CHAPTERS]


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _source(cell: dict) -> str:
    return "".join(cell["source"])


def _tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def test_every_notebook_in_book_is_in_the_toc():
    listed = {path.name for path in CHAPTERS}
    on_disk = {path.name for path in (ROOT / "book").glob("*.ipynb")}
    assert on_disk == listed, f"not in _toc.yml: {sorted(on_disk - listed)}"
    assert len(CHAPTERS) >= 5


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_first_cell_installs_nfbook_in_colab_only(path):
    first = _cells(path)[0]
    reference = _cells(CHAPTERS[0])[0]
    assert first["cell_type"] == "code" and "hide-cell" in _tags(first)
    assert _source(first) == _source(reference), "the Colab cell differs from chapter 1's"
    text = _source(first)
    assert 'if "google.colab" in sys.modules:' in text
    assert f"nfbook @ git+{CONFIG['repository']['url']}" in text
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_title_objectives_setup_summary(path):
    cells = _cells(path)
    # The table of contents numbers the chapters; a typed number would show twice.
    assert re.match(r"# [A-Z]", _source(cells[1])), "second cell: '# Title', no typed number"
    markdown = [_source(c) for c in cells if c["cell_type"] == "markdown"]
    assert any("{admonition} Audience and objectives" in m for m in markdown)
    setup = [c for c in cells[:6] if c["cell_type"] == "code" and "hide-cell" in _tags(c)
             and "nfbook.set_seed(" in _source(c)]
    assert setup and "nfbook.plot.style()" in _source(setup[0])
    headings = [line for m in markdown for line in m.splitlines() if line.startswith("## ")]
    assert "## Summary" in headings and "## Exercises" in headings
    assert headings.index("## Summary") < headings.index("## Exercises")


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_exercises_have_dropdown_solutions_that_assert(path):
    cells = _cells(path)
    start = next(i for i, c in enumerate(cells) if _source(c).startswith("## Exercises"))
    exercises = [i for i, c in enumerate(cells) if i >= start and c["cell_type"] == "markdown"
                 and re.search(r"\*\*Exercise \d", _source(c))]
    assert 2 <= len(exercises) <= 4, f"{len(exercises)} exercises"
    for i in exercises:
        solution, code = cells[i + 1], cells[i + 2]
        assert _source(solution).startswith("```{admonition} Solution\n:class: dropdown")
        assert len(_source(solution).splitlines()) >= 5, "a solution needs its explanation"
        assert code["cell_type"] == "code" and "hide-cell" in _tags(code)
        assert "assert" in _source(code)


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_claims_are_asserted_and_outputs_stripped(path):
    code = [c for c in _cells(path) if c["cell_type"] == "code"]
    asserts = sum(_source(c).count("assert") for c in code)
    assert asserts >= 8, f"only {asserts} asserts"
    stored = [i for i, c in enumerate(code) if c.get("outputs") or c.get("execution_count")]
    assert not stored, f"code cells {stored} keep outputs: clear them before committing"


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_only_tf_keras_and_no_legacy_templates(path):
    for cell in _cells(path):
        if cell["cell_type"] != "code":
            continue
        text = _source(cell)
        assert "real_nvp_default_template" not in text
        if "tf.keras" in text:
            assert "Keras 3" in text, "tf.keras outside a Keras 3 demonstration"


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_citations_exist_in_references_bib(path):
    bib = (ROOT / "book" / "references.bib").read_text()
    keys = set(re.findall(r"@\w+\{([^,]+),", bib))
    text = " ".join(_source(c) for c in _cells(path) if c["cell_type"] == "markdown")
    cited = {k.strip() for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", text)
             for k in group.split(",")}
    assert cited, "a chapter cites its sources"
    assert cited <= keys, f"unknown citation keys: {sorted(cited - keys)}"
