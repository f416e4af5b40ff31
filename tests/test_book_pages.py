"""Checks on the rendered book in _build/html (run `make book` first; `make test` does).

For every page listed in _toc.yml: relative image sources and links resolve, link fragments exist
in their target page, no page shows an execution traceback, and every notebook chapter shows at
least one figure. The landing page and every chapter are also rendered in headless Chromium and
the PNGs checked not blank (NFBOOK_SKIP_BROWSER=1 skips that where no browser can be installed).
Only the standard library's html.parser reads the pages.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
TOC = ROOT / "_toc.yml"


# --------------------------------------------------------------------------------------------
# The pages: read from _toc.yml, so new chapters are covered as soon as they are listed.
def _toc_files() -> list[str]:
    toc = yaml.safe_load(TOC.read_text())
    files = [toc["root"]]

    def walk(entries: list[dict]) -> None:
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            for key in ("parts", "chapters", "sections"):
                walk(entry.get(key, []))

    walk(toc.get("parts", []))
    walk(toc.get("chapters", []))
    return files


def _source(doc: str) -> Path:
    """The source file of a toc entry (`book/01_introduction` -> book/01_introduction.ipynb)."""
    candidates = [ROOT / f"{doc}{ext}" for ext in (".ipynb", ".md", ".rst")]
    found = [path for path in candidates if path.exists()]
    assert found, f"_toc.yml lists {doc!r} but no {doc}.ipynb/.md/.rst exists"
    return found[0]


DOCS = _toc_files()
NOTEBOOK_DOCS = [doc for doc in DOCS if _source(doc).suffix == ".ipynb"]


def test_toc_has_pages():
    assert DOCS, "_toc.yml lists no pages"
    assert NOTEBOOK_DOCS, "_toc.yml lists no notebook chapters"


# --------------------------------------------------------------------------------------------
# Parsing.
class _Page(HTMLParser):
    """Collects ids, image sources, links, assets, the classes of divs and the visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.images: list[str] = []
        self.links: list[str] = []
        self.assets: list[str] = []
        self.div_classes: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {key: value or "" for key, value in attrs}
        for key in ("id", "name"):
            if a.get(key):
                self.ids.add(a[key])
        if tag == "img":
            if a.get("src"):
                self.images.append(a["src"])
            for candidate in a.get("srcset", "").split(","):
                if candidate.strip():
                    self.images.append(candidate.split()[0])
        elif tag == "source" and a.get("srcset"):
            self.images.extend(c.split()[0] for c in a["srcset"].split(",") if c.strip())
        elif tag == "a" and "href" in a:
            self.links.append(a["href"])
        elif tag == "script" and a.get("src"):
            self.assets.append(a["src"])
        elif tag == "link" and a.get("href") and "stylesheet" in a.get("rel", ""):
            self.assets.append(a["href"])
        if tag == "div":
            self.div_classes.append(a.get("class", ""))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@functools.cache
def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def _html_path(doc: str) -> Path:
    if not HTML.is_dir():
        pytest.fail(f"{HTML} is missing: run `make book` first", pytrace=False)
    path = HTML / f"{doc}.html"
    assert path.is_file(), f"{doc} is in _toc.yml but {path} was not built: run `make book`"
    return path


def _is_relative(url: str) -> bool:
    parts = urlsplit(url)
    return not (parts.scheme or parts.netloc or url.startswith("/"))


def _resolve(page: Path, url: str) -> tuple[Path, str]:
    parts = urlsplit(url)
    target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
    if target.is_dir():
        target = target / "index.html"
    return target, unquote(parts.fragment)


# --------------------------------------------------------------------------------------------
# The checks.
def test_build_exists():
    assert HTML.is_dir(), f"{HTML} is missing: run `make book` first"
    assert (HTML / "index.html").is_file(), f"{HTML}/index.html is missing: run `make book`"


@pytest.mark.parametrize("doc", DOCS)
def test_images_resolve(doc):
    path = _html_path(doc)
    missing = [
        src
        for src in _parse(path).images
        if _is_relative(src)
        and not src.startswith("data:")
        and not _resolve(path, src)[0].is_file()
    ]
    assert not missing, f"{path.relative_to(ROOT)}: images that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS)
def test_assets_resolve(doc):
    path = _html_path(doc)
    missing = [
        url
        for url in _parse(path).assets
        if _is_relative(url) and not _resolve(path, url)[0].is_file()
    ]
    assert not missing, f"{path.relative_to(ROOT)}: scripts/stylesheets missing: {missing}"


@pytest.mark.parametrize("doc", DOCS)
def test_internal_links_resolve(doc):
    path = _html_path(doc)
    problems = []
    for href in _parse(path).links:
        if not href or not _is_relative(href) or href.startswith(("mailto:", "javascript:")):
            continue
        target, fragment = _resolve(path, href)
        if not target.is_file():
            problems.append(f"{href}: no file {target}")
        elif fragment and target.suffix == ".html" and fragment not in _parse(target).ids:
            problems.append(f"{href}: no id {fragment!r} in {target.relative_to(HTML)}")
    assert not problems, f"{path.relative_to(ROOT)}: broken links:\n" + "\n".join(problems)


@pytest.mark.parametrize("doc", DOCS)
def test_no_execution_errors(doc):
    page = _parse(_html_path(doc))
    text = "".join(page.text)
    assert "Traceback (most recent call last)" not in text, f"{doc}: the page shows a traceback"
    tracebacks = [c for c in page.div_classes if "traceback" in c.split()]
    assert not tracebacks, f"{doc}: the page has an error output ({tracebacks[0]!r})"


@pytest.mark.parametrize("doc", NOTEBOOK_DOCS)
def test_chapter_has_figures(doc):
    path = _html_path(doc)
    figures = [
        src
        for src in _parse(path).images
        if src.startswith("data:image/") or "_images/" in src
    ]
    assert figures, f"{doc}: a notebook chapter must show at least one figure; found none"


# --------------------------------------------------------------------------------------------
# Screenshots in headless Chromium (installed by `make test` when it runs as root).
def _chromium() -> str | None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from screenshot_pages import find_chromium
    finally:
        sys.path.pop(0)
    return find_chromium()


@pytest.mark.parametrize("doc", [DOCS[0], *NOTEBOOK_DOCS])
def test_screenshot_not_blank(doc, tmp_path):
    import matplotlib.image as mpimg

    _html_path(doc)
    if _chromium() is None:
        if os.environ.get("NFBOOK_SKIP_BROWSER") == "1":
            pytest.skip("NFBOOK_SKIP_BROWSER=1: no browser check asked for")
        pytest.fail("chromium not found: `sudo apt-get install chromium` (make test does it as "
                    "root), set CHROMIUM=/path/to/chrome, or opt out with NFBOOK_SKIP_BROWSER=1",
                    pytrace=False)
    out = tmp_path / "shots"
    cmd = [sys.executable, str(ROOT / "scripts" / "screenshot_pages.py"), "--html", str(HTML),
           "--out", str(out), doc]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"screenshot failed:\n{run.stdout}\n{run.stderr}"
    png = out / (doc.replace("/", "__") + ".png")
    assert png.is_file(), f"no screenshot written at {png}:\n{run.stdout}\n{run.stderr}"
    assert png.stat().st_size > 20_000, f"{png} is only {png.stat().st_size} bytes"
    pixels = mpimg.imread(png)[..., :3]
    height, width = pixels.shape[:2]
    assert width >= 1000 and height >= 600, f"{png}: unexpected size {width}x{height}"
    assert pixels.std() > 0.05, f"{png} looks blank (pixel std {pixels.std():.3f})"
    dark = (pixels.mean(axis=-1) < 0.5).mean()
    assert dark > 0.005, f"{png} has almost no dark pixels ({dark:.2%}): no text rendered?"
    shutil.rmtree(out)
