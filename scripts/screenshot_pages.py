"""Full-page PNG screenshots of the built book's pages, taken with headless Chromium.

Usage (after `make book`; `make screenshots` runs it for every page in _toc.yml):

    .venv/bin/python scripts/screenshot_pages.py [--html _build/html] [--out _build/screenshots]
                                                 [--width 1280] [--mode cdp|cli] [DOC ...]

DOC is a toc entry such as `book/index` or `book/01_introduction`; the PNG is written as
`<out>/book__01_introduction.png`. Without DOCs, every page in _toc.yml is taken.

Chromium is not installed by this script. On Debian: `apt-get install -y --no-install-recommends
chromium` (`make test` and `make screenshots` do this when running as root). On Ubuntu the
`chromium` package is a snap stub that does not work in containers: use Google Chrome or
Debian's package, and point CHROMIUM at the executable.

Mode `cdp` (default) drives Chromium over --remote-debugging-pipe (the DevTools protocol; stdlib
only) and captures the whole page, however long. Mode `cli` runs the plain command
`chromium --headless --screenshot=... --window-size=WIDTH,HEIGHT file:///...`, which captures only
the first HEIGHT pixels; it is also the fallback when `cdp` fails.

`--math` takes no screenshot: it loads each page with networking off and prints, as one JSON line
per page, whether MathJax ran and how many of the page's math elements it rendered
(:func:`math_report`; tests/test_book_pages.py uses it).
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--mute-audio",
]
MAX_HEIGHT = 30_000  # px; longer pages are cut (PNG encoders and viewers struggle beyond)


def find_chromium() -> str | None:
    """The Chromium executable: $CHROMIUM, else the first of CANDIDATES on PATH, else None."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env if Path(env).is_file() else shutil.which(env)
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def toc_docs() -> list[str]:
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    docs = [toc["root"]]

    def walk(entries: list[dict]) -> None:
        for entry in entries or []:
            if "file" in entry:
                docs.append(entry["file"])
            for key in ("parts", "chapters", "sections"):
                walk(entry.get(key, []))

    walk(toc.get("parts", []))
    walk(toc.get("chapters", []))
    return docs


# --------------------------------------------------------------------------------------------
class _DevTools:
    """A minimal DevTools-protocol client over Chromium's --remote-debugging-pipe (fds 3 and 4)."""

    def __init__(self, chromium: str, profile: str, flags: list[str] | None = None) -> None:
        # Pipe ends for the child are moved to fds >= 10 so that dup2 onto 3 and 4 in the child
        # cannot clobber one of them.
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        child_r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_child_r)
        os.close(from_child_w)

        def wire() -> None:  # in the child before exec: commands on fd 3, replies on fd 4
            os.dup2(child_r, 3)  # dup2 makes 3 and 4 inheritable; child_r/child_w are CLOEXEC
            os.dup2(child_w, 4)

        self.proc = subprocess.Popen(
            [chromium, *FLAGS, *(flags or []), "--remote-debugging-pipe",
             f"--user-data-dir={profile}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=wire,
            close_fds=False,  # Python's own fds are non-inheritable (PEP 446); 3 and 4 must stay
        )
        os.close(child_r)
        os.close(child_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no reply from chromium")
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: str | None = None, timeout: float = 60,
             **params: object) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    del self.events[: i + 1]
                    return
            self.events.clear()
            self.events.append(self._read_message(deadline))

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_child)
        os.close(self._from_child)


def shoot_cdp(chromium: str, url: str, png: Path, width: int) -> None:
    """Whole-page screenshot: load at width x 1000, then resize the viewport to the page height."""
    with tempfile.TemporaryDirectory(prefix="nfbook-chromium-") as profile:
        tools = _DevTools(chromium, profile)
        try:
            target = tools.call("Target.createTarget", url="about:blank")["targetId"]
            attached = tools.call("Target.attachToTarget", targetId=target, flatten=True)
            session = attached["sessionId"]
            tools.call("Page.enable", session)
            tools.call("Emulation.setDeviceMetricsOverride", session, width=width, height=1000,
                       deviceScaleFactor=1, mobile=False)
            tools.call("Page.navigate", session, url=url)
            tools.wait_event("Page.loadEventFired", timeout=120)
            # Fonts, MathJax (when online) and lazy images: give them a moment to settle.
            tools.call("Runtime.evaluate", session, expression="document.fonts.ready",
                       awaitPromise=True)
            time.sleep(1.0)
            metrics = tools.call("Page.getLayoutMetrics", session)
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            height = min(int(size["height"]) + 1, MAX_HEIGHT)
            tools.call("Emulation.setDeviceMetricsOverride", session, width=width, height=height,
                       deviceScaleFactor=1, mobile=False)
            time.sleep(0.5)
            shot = tools.call("Page.captureScreenshot", session, timeout=120, format="png",
                              captureBeyondViewport=False)
            png.write_bytes(base64.b64decode(shot["data"]))
        finally:
            tools.close()


# Resolves no host name and sends everything else to a closed port: no request leaves the machine.
OFFLINE_FLAGS = ["--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
                 "--proxy-bypass-list=<-loopback>"]

# Runs in the page once it has loaded: waits for MathJax 3 to finish typesetting, then counts the
# math elements Sphinx wrote (class "math") and those MathJax rendered (mjx-container).
_MATH_PROBE = """
(async () => {
  const mj = window.MathJax;
  const loaded = Boolean(mj && mj.startup && mj.startup.promise);
  if (loaded) { await mj.startup.promise; }
  const math = Array.from(document.querySelectorAll(".math"));
  return {
    loaded: loaded,
    version: loaded ? String(mj.version) : null,
    math: math.length,
    rendered: math.filter(el => el.querySelector("mjx-container")).length,
    containers: document.querySelectorAll("mjx-container").length,
    errors: document.querySelectorAll("mjx-merror").length,
    scripts: Array.from(document.scripts).map(el => el.src).filter(Boolean),
  };
})()
"""


def math_report(chromium: str, url: str, timeout: float = 120) -> dict:
    """How MathJax rendered the page at ``url``, loaded with networking off.

    The browser runs with :data:`OFFLINE_FLAGS` and the DevTools offline mode, so only files
    under ``file://`` load. Returns the :data:`_MATH_PROBE` dict: ``loaded`` (MathJax 3 ran),
    ``version``, ``math`` (elements of class ``math``), ``rendered`` (those holding an
    ``mjx-container``), ``containers``, ``errors`` (``mjx-merror`` elements) and ``scripts``
    (every script URL of the page).
    """
    with tempfile.TemporaryDirectory(prefix="nfbook-chromium-") as profile:
        tools = _DevTools(chromium, profile, OFFLINE_FLAGS)
        try:
            target = tools.call("Target.createTarget", url="about:blank")["targetId"]
            session = tools.call("Target.attachToTarget", targetId=target,
                                 flatten=True)["sessionId"]
            tools.call("Page.enable", session)
            tools.call("Network.enable", session)
            tools.call("Network.emulateNetworkConditions", session, offline=True, latency=0,
                       downloadThroughput=-1, uploadThroughput=-1)
            tools.call("Page.navigate", session, url=url)
            tools.wait_event("Page.loadEventFired", timeout=timeout)
            result = tools.call("Runtime.evaluate", session, timeout=timeout,
                                expression=_MATH_PROBE, awaitPromise=True, returnByValue=True)
            if "exceptionDetails" in result:
                raise RuntimeError(f"the math probe failed: {result['exceptionDetails']}")
            return result["result"]["value"]
        finally:
            tools.close()


def shoot_cli(chromium: str, url: str, png: Path, width: int, height: int) -> None:
    """The plain command line: captures the first `height` pixels of the page."""
    with tempfile.TemporaryDirectory(prefix="nfbook-chromium-") as profile:
        cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--screenshot={png}", url]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        if run.returncode != 0 or not png.is_file():
            raise RuntimeError(f"chromium exited {run.returncode}:\n{run.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("docs", nargs="*", help="toc entries (default: every page in _toc.yml)")
    parser.add_argument("--html", type=Path, default=ROOT / "_build" / "html")
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "screenshots")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=4000, help="viewport height in cli mode")
    parser.add_argument("--mode", choices=("cdp", "cli"), default="cdp")
    parser.add_argument("--math", action="store_true",
                        help="no screenshots: print how MathJax rendered each page offline")
    args = parser.parse_args(argv)

    chromium = find_chromium()
    if chromium is None:
        print("error: chromium not found. Install it (Debian: apt-get install -y "
              "--no-install-recommends chromium) or set CHROMIUM=/path/to/chrome.",
              file=sys.stderr)
        return 2
    if not args.html.is_dir():
        print(f"error: {args.html} is missing: run `make book` first", file=sys.stderr)
        return 2
    if not args.math:
        args.out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for doc in args.docs or toc_docs():
        page = (args.html / f"{doc}.html").resolve()
        png = (args.out / (doc.replace("/", "__") + ".png")).resolve()
        if not page.is_file():
            print(f"error: {page} does not exist", file=sys.stderr)
            failures += 1
            continue
        if args.math:
            try:
                report = math_report(chromium, page.as_uri())
            except Exception as error:  # noqa: BLE001 - report every page, then fail
                print(f"error: {doc}: {error}", file=sys.stderr)
                failures += 1
                continue
            print(json.dumps({"doc": doc, **report}))
            continue
        png.unlink(missing_ok=True)
        start = time.monotonic()
        try:
            if args.mode == "cdp":
                try:
                    shoot_cdp(chromium, page.as_uri(), png, args.width)
                except Exception as error:  # noqa: BLE001 - fall back to the plain command
                    print(f"warning: {doc}: DevTools capture failed ({error}); "
                          f"falling back to --screenshot ({args.height} px)", file=sys.stderr)
                    shoot_cli(chromium, page.as_uri(), png, args.width, args.height)
            else:
                shoot_cli(chromium, page.as_uri(), png, args.width, args.height)
        except Exception as error:  # noqa: BLE001 - report every page, then fail
            print(f"error: {doc}: {error}", file=sys.stderr)
            failures += 1
            continue
        print(f"{png} ({png.stat().st_size // 1024} KiB, {time.monotonic() - start:.1f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
