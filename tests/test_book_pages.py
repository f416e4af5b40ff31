"""Checks on the rendered book in _build/html (run `make book` first; `make test` does).

For every page listed in _toc.yml: relative image sources and links resolve, link fragments exist
in their target page, no page shows an execution traceback or TensorFlow log noise, every script
and stylesheet is served from the book itself (MathJax included: no CDN), chapter titles carry one
number (sidebar, heading, browser tab), and every notebook chapter shows at least one figure. The
executed notebooks' stderr (left out of the pages) holds nothing but TensorFlow's C++ log lines.
The landing page and every chapter are also rendered in headless Chromium and the PNGs checked
not blank, and every page with math is loaded with networking off and its math checked rendered by
MathJax (NFBOOK_SKIP_BROWSER=1 skips the browser checks where no browser can be installed).
Only the standard library's html.parser reads the pages.
"""

from __future__ import annotations

import functools
import json
import os
import re
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
EXECUTED = ROOT / "_build" / "jupyter_execute"
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
    """Collects ids, image sources, links, assets, the classes of divs, the visible text, and the
    texts of the <title>, of each <h1> and of each link in the sidebar's table of contents."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.images: list[str] = []
        self.links: list[str] = []
        self.assets: list[str] = []
        self.div_classes: list[str] = []
        self.text: list[str] = []
        self.title = ""
        self.h1: list[str] = []
        self.sidebar: list[tuple[str, str]] = []  # (href, text) of the sidebar's links
        self._nav_depth = 0  # open <nav> elements, counted from the sidebar's
        self._open: list[tuple[str, list[str], str]] = []  # (tag, text parts, href) capturing

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {key: value or "" for key, value in attrs}
        if tag == "nav" and (self._nav_depth or "bd-docs-nav" in a.get("class", "").split()):
            self._nav_depth += 1
        if tag in ("title", "h1") or (tag == "a" and self._nav_depth):
            self._open.append((tag, [], a.get("href", "")))
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

    def handle_endtag(self, tag: str) -> None:
        if tag == "nav" and self._nav_depth:
            self._nav_depth -= 1
        if self._open and self._open[-1][0] == tag:
            _, parts, href = self._open.pop()
            text = " ".join("".join(parts).split())
            if tag == "title":
                self.title = text
            elif tag == "h1":
                self.h1.append(text.rstrip("#").strip())
            else:
                self.sidebar.append((href, text))

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        for _, parts, _ in self._open:
            parts.append(data)


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


# What TensorFlow's C++ side and its Python logger print; none of it belongs in the book.
NOISE = ("cuInit", "CUDA error", "oneDNN", "retracing", "cuda drivers", "absl::",
         "WARNING:tensorflow", "TF_ENABLE_ONEDNN_OPTS")


@pytest.mark.parametrize("doc", DOCS)
def test_no_tensorflow_noise(doc):
    path = _html_path(doc)
    html = path.read_text(encoding="utf-8")
    found = [word for word in NOISE if word in html]
    assert not found, f"{doc}: the page shows TensorFlow log output or warnings: {found}"
    stderr = [c for c in _parse(path).div_classes if "stderr" in c.split()]
    assert not stderr, f"{doc}: the page shows a stderr output ({stderr[0]!r})"


# A line of TensorFlow's C++ log (severity and date, time, thread, file:line], as in
# "E0000 00:00:1796567369.717961    6981 cuda_platform.cc:52] failed call to cuInit") or the note
# absl prints before its first one, or the second line of a two-line one.
_CPP_LOG_LINE = re.compile(
    r"[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w./-]+:\d+\] "
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"
    # the second line of cpu_feature_guard's message, when INFO lines are not silenced
    r"|To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler"
)


@pytest.mark.parametrize("doc", NOTEBOOK_DOCS)
def test_executed_stderr_is_only_tensorflow_cpp_log(doc):
    # _config.yml removes stderr from the pages (TensorFlow's C++ log cannot be silenced), so
    # check here that nothing else went there: a Python warning must be fixed at its cause.
    executed = EXECUTED / f"{doc}.ipynb"
    assert executed.is_file(), f"{executed} is missing: run `make book`"
    other = [
        line
        for cell in json.loads(executed.read_text(encoding="utf-8"))["cells"]
        for output in cell.get("outputs", [])
        if output.get("name") == "stderr"
        for line in "".join(output["text"]).splitlines()
        if line.strip() and not _CPP_LOG_LINE.match(line)
    ]
    assert not other, f"{doc}: stderr lines that are not TensorFlow's C++ log:\n" + "\n".join(
        other[:10])


def _is_external(url: str) -> bool:
    """True for a URL the browser fetches from the network (http:, https:, //host/...)."""
    return urlsplit(url).scheme not in ("", "file", "data") or url.startswith("//")


@pytest.mark.parametrize("doc", DOCS)
def test_scripts_and_styles_are_served_by_the_book(doc):
    page = _parse(_html_path(doc))
    external = [url for url in page.assets if _is_external(url)]
    assert not external, f"{doc}: scripts/stylesheets from outside the book: {external}"
    mathjax = [url for url in page.assets if "mathjax" in url.lower()]
    assert all("_static/mathjax/" in url for url in mathjax), f"{doc}: MathJax from {mathjax}"


# "1. 1. Introduction": a section number followed by another.
_TWO_NUMBERS = re.compile(r"^\s*\d+(?:\.\d+)*\.?\s+\d+(?:\.\d+)*\.\s")
_ONE_NUMBER = re.compile(r"^\d+\. \D")


@pytest.mark.parametrize("doc", NOTEBOOK_DOCS)
def test_chapter_titles_carry_one_number(doc):
    # The toc numbers the chapters; a number typed into the heading as well shows as "1. 1. ...".
    path = _html_path(doc)
    page = _parse(path)
    landing = _parse(_html_path(DOCS[0]))
    own = [text for href, text in page.sidebar if href == "#"]
    listed = [text for href, text in landing.sidebar
              if _is_relative(href) and _resolve(_html_path(DOCS[0]), href)[0] == path.resolve()]
    assert own and listed and page.h1, (
        f"{doc}: title missing: sidebar {own}, landing page's sidebar {listed}, h1 {page.h1}")
    titles = [("<title>", page.title), ("sidebar", own[0]), ("landing page's sidebar", listed[0]),
              *(("<h1>", h1) for h1 in page.h1)]
    for where, text in titles:
        assert not _TWO_NUMBERS.match(text), f"{doc}: the {where} carries two numbers: {text!r}"
    numbered = [where for where, text in titles if _ONE_NUMBER.match(text)]
    assert {"<title>", "sidebar", "landing page's sidebar", "<h1>"} <= set(numbered), (
        f"{doc}: a title without its chapter number: {titles}")


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
def _screenshot_pages():  # noqa: ANN202 - the module scripts/screenshot_pages.py
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import screenshot_pages
    finally:
        sys.path.pop(0)
    return screenshot_pages


def _chromium() -> str | None:
    return _screenshot_pages().find_chromium()


def _require_chromium() -> str:
    chromium = _chromium()
    if chromium is None:
        if os.environ.get("NFBOOK_SKIP_BROWSER") == "1":
            pytest.skip("NFBOOK_SKIP_BROWSER=1: no browser check asked for")
        pytest.fail("chromium not found: `sudo apt-get install chromium` (make test does it as "
                    "root), set CHROMIUM=/path/to/chrome, or opt out with NFBOOK_SKIP_BROWSER=1",
                    pytrace=False)
    return chromium


@pytest.mark.parametrize("doc", [DOCS[0], *NOTEBOOK_DOCS])
def test_screenshot_not_blank(doc, tmp_path):
    import matplotlib.image as mpimg

    _html_path(doc)
    _require_chromium()
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


def test_math_renders_offline():
    # Every page with math, loaded from file:// with networking off: MathJax must come from the
    # book and render every math element.
    math_docs = [doc for doc in DOCS if 'class="math' in _html_path(doc).read_text("utf-8")]
    assert math_docs, "no page has math (class=\"math\"): the check would be void"
    chromium = _require_chromium()
    problems = []
    for doc in math_docs:
        report = _screenshot_pages().math_report(chromium, _html_path(doc).as_uri())
        if not report["loaded"]:
            problems.append(f"{doc}: MathJax did not load offline (scripts {report['scripts']})")
        elif report["rendered"] != report["math"] or report["errors"]:
            problems.append(f"{doc}: MathJax rendered {report['rendered']} of {report['math']} "
                            f"math elements, with {report['errors']} TeX errors")
    assert not problems, "\n".join(problems)
