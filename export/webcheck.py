"""Open a web bundle in headless Chromium and read its self-test: the browser half of the parity claim.

``python -m export.webcheck DIR`` serves ``DIR`` on 127.0.0.1 (a random port), opens
``index.html#selftest`` in headless Chromium and prints the page's ``selftest: N/N ok`` line and, per
graph, the logit difference from ``runtime.Classifier`` and the ``session.run`` latency;
``--screenshot PNG`` also saves the page as the browser drew it.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: standard
library only). ``--dump-dom`` with ``--virtual-time-budget`` is no use here: virtual time does not
wait for WebAssembly compilation, so the DOM is dumped while the self-test is still running.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import functools
import http.server
import json
import os
import select
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

#: Tried in order when ``ANYCHANNEL_CHROMIUM`` is not set (Debian's package installs the first).
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ENV = "ANYCHANNEL_CHROMIUM"
#: Headless on a closed network: as root Chromium needs --no-sandbox, and without the
#: background-networking switches it keeps trying to reach Google's services.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--disable-dev-shm-usage", "--mute-audio",
    "--no-default-browser-check", "--password-store=basic", "--use-mock-keychain",
)


class BrowserError(RuntimeError):
    """Chromium could not be started, or the page did not finish in time."""


def find_chromium() -> str | None:
    """A Chromium executable: ``$ANYCHANNEL_CHROMIUM``, else the first of :data:`CHROMIUM_CANDIDATES` found."""
    if os.environ.get(CHROMIUM_ENV):
        return os.environ[CHROMIUM_ENV]
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    # .mjs must be served as JavaScript or the browser refuses onnxruntime-web's module.
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm"}

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


@contextlib.contextmanager
def serve(folder: "str | os.PathLike[str]") -> Iterator[str]:
    """Serve ``folder`` over http on 127.0.0.1 (a free port) from a thread; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class HeadlessChromium:
    """One headless Chromium with one page, driven over the DevTools protocol on a pipe.

    Use as a context manager; :meth:`open` loads a URL, :meth:`evaluate` runs JavaScript in it.
    """

    def __init__(self, executable: str | None = None, width: int = 1100, height: int = 1400,
                 flags: tuple[str, ...] = ()) -> None:
        self.executable = executable or find_chromium()
        if self.executable is None:
            raise BrowserError(f"no Chromium found (tried {', '.join(CHROMIUM_CANDIDATES)}; set ${CHROMIUM_ENV}); "
                               "on Debian: apt-get install chromium")
        self.width, self.height = width, height
        self.flags = tuple(flags)
        self._next_id = 0
        self._buffer = b""
        self._session: str | None = None

    def __enter__(self) -> "HeadlessChromium":
        self._profile = tempfile.mkdtemp(prefix="anychannel-chromium-")
        # --remote-debugging-pipe: Chromium reads commands from its fd 3 and writes answers to fd 4.
        cmd_read, self._cmd = os.pipe()
        self._events, evt_write = os.pipe()
        # Moved above 9 first, so that placing them at 3 and 4 cannot overwrite one with the other.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (cmd_read, evt_write)]
        os.close(cmd_read)
        os.close(evt_write)
        argv = [self.executable, *CHROMIUM_FLAGS, *self.flags, f"--user-data-dir={self._profile}",
                "--remote-debugging-pipe", f"--window-size={self.width},{self.height}", "about:blank"]
        quiet = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
        try:
            # posix_spawn rather than Popen(preexec_fn=...): no Python code runs in the child, so it is
            # safe beside the server thread. Our other descriptors are close-on-exec (PEP 446).
            self._pid = os.posix_spawnp(self.executable, argv, os.environ, file_actions=[
                *quiet, (os.POSIX_SPAWN_DUP2, high[0], 3), (os.POSIX_SPAWN_DUP2, high[1], 4)])
        except OSError as exc:
            raise BrowserError(f"cannot start {self.executable}: {exc}") from None
        finally:
            for fd in high:
                os.close(fd)
        try:
            targets = self.send("Target.getTargets")["targetInfos"]
            page = next(t["targetId"] for t in targets if t["type"] == "page")
            self._session = self.send("Target.attachToTarget", targetId=page, flatten=True)["sessionId"]
            self.send("Page.enable")
            self.send("Runtime.enable")
            self.send("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height,
                      deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _exited(self, timeout: float) -> bool:
        """Whether Chromium has exited (reaping it), waiting up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            pid, _ = os.waitpid(self._pid, os.WNOHANG)
            if pid:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self._session = None
            self.send("Browser.close", timeout=5)
        with contextlib.suppress(ChildProcessError):
            if not self._exited(10):
                os.kill(self._pid, signal.SIGKILL)
                self._exited(10)
        for fd in (self._cmd, self._events):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self._profile, ignore_errors=True)

    def send(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        """Send one DevTools command (to the page once attached) and return its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self._session is not None:
            message["sessionId"] = self._session
        os.write(self._cmd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("Chromium did not answer in time")
            ready, _, _ = select.select([self._events], [], [], left)
            if ready:
                chunk = os.read(self._events, 1 << 16)
                if not chunk:
                    raise BrowserError("Chromium exited")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float) -> Any:
        """Poll ``expression`` until it is truthy; its value, or :class:`BrowserError` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(BrowserError):  # the page may be between documents
                value = self.evaluate(expression)
                if value:
                    return value
            time.sleep(0.1)
        raise BrowserError(f"the page did not get to {expression!r} within {timeout:.0f} s")

    def screenshot(self, path: "str | os.PathLike[str]") -> Path:
        """Save the whole page as a PNG."""
        # The content's height, not the window's: no empty band below the page.
        height = int(self.evaluate("Math.ceil(document.body.getBoundingClientRect().bottom) + 16") or self.height)
        self.send("Emulation.setDeviceMetricsOverride", width=self.width, height=height, deviceScaleFactor=1,
                  mobile=False)
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path = Path(path)
        path.write_bytes(base64.b64decode(data))
        return path


#: The page sets this attribute when its self-test has finished ("pass" or "fail").
SELFTEST_DONE = "document.documentElement.dataset.selftest"


def run_selftest(folder: "str | os.PathLike[str]", timeout: float = 120, backend: str | None = None,
                 screenshot: "str | os.PathLike[str] | None" = None, executable: str | None = None,
                 flags: tuple[str, ...] = ()) -> dict[str, Any]:
    """Serve ``folder``, open ``index.html#selftest`` in headless Chromium and return the page's summary.

    The summary is what the page writes into ``#selftest-json``: ``line`` ("selftest: 7/7 ok"),
    ``graphs`` (per graph: ``ok``, ``max_abs_diff``, ``top1_match``, ``pixels_differ``, ``latency``,
    ``error``), ``backend``, ``csp_violations``; plus ``title``, ``selftest_text`` and ``message`` (the
    page's error box) as the DOM shows them. ``flags``: extra Chromium switches.
    """
    hash_ = "selftest" + (f"&backend={backend}" if backend else "")
    with serve(folder) as base, HeadlessChromium(executable, flags=flags) as browser:
        browser.open(f"{base}index.html#{hash_}")
        browser.wait_for(SELFTEST_DONE, timeout)
        summary = json.loads(browser.evaluate("document.getElementById('selftest-json').textContent") or "{}")
        summary["title"] = browser.evaluate("document.title")
        summary["selftest_text"] = browser.evaluate("document.getElementById('selftest').textContent")
        summary["message"] = browser.evaluate("document.getElementById('message').textContent")
        if screenshot is not None:
            # After the self-test the page classifies the first image: shoot once its result (or an error) shows.
            browser.wait_for("!document.getElementById('result').hidden || "
                             "document.getElementById('message').textContent", 30)
            browser.screenshot(screenshot)
    return summary


def python_latency(folder: "str | os.PathLike[str]", threads: tuple[int, ...] = (1,), runs: int = 200
                   ) -> dict[tuple[str, str], dict[int, float]]:
    """Per (channels, precision) and thread count: the p50 ms of ``runtime.Classifier.run`` on the CPU for
    the input the page times (the first self-test image), for a side-by-side table."""
    from runtime.bench import latency
    from runtime.classifier import Classifier

    folder = Path(folder)
    cases = json.loads((folder / "selftest" / "cases.json").read_text())
    image = str(folder / cases["images"][0]["file"])
    found: dict[tuple[str, str], dict[int, float]] = {}
    for n in threads:
        classifiers: dict[str, Classifier] = {}
        for graph in cases["graphs"]:
            precision = graph["precision"]
            if precision not in classifiers:
                classifiers[precision] = Classifier(folder, device="cpu", precision=precision, threads=n)
            clf = classifiers[precision]
            x, config = clf.preprocess(image, graph["channels"])
            result = latency(lambda: clf.run(x, config), 1, runs, warmup=10)
            found.setdefault((graph["channels"], precision), {})[n] = result.p50_ms
    return found


def latency_table(summary: dict[str, Any], python: dict[tuple[str, str], dict[int, float]] | None = None) -> str:
    """The self-test's rows as a markdown table; with ``python`` (:func:`python_latency`), beside the runtime's."""
    threads = sorted({n for row in (python or {}).values() for n in row})
    head = "| graph | precision | result | max abs logit diff | page session.run p50 ms | p90 ms | calls |"
    head += "".join(f" Python runtime p50 ms, {n} thread{'s' if n > 1 else ''} |" for n in threads)
    rows = [head, "|---|---|---|---:|---:|---:|---:|" + "---:|" * len(threads)]
    for g in summary.get("graphs", []):
        lat = g.get("latency") or {}
        row = (f"| {g['channels']} | {g['precision']} | {'ok' if g['ok'] else 'FAILED: ' + str(g.get('error'))} | "
               f"{g.get('max_abs_diff', float('nan')):.2e} | {lat.get('p50_ms', float('nan')):.3f} | "
               f"{lat.get('p90_ms', float('nan')):.3f} | {lat.get('runs', 0)} |")
        ours = (python or {}).get((g["channels"], g["precision"]), {})
        row += "".join(f" {ours[n]:.3f} |" if n in ours else " - |" for n in threads)
        rows.append(row)
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.webcheck", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="a folder written by `python cli.py export --web`")
    parser.add_argument("--backend", choices=("wasm", "webgpu"), default=None)
    parser.add_argument("--screenshot", type=Path, default=None, help="also save the page as a PNG")
    parser.add_argument("--timeout", type=float, default=180)
    parser.add_argument("--json", action="store_true", help="print the page's summary as JSON")
    parser.add_argument("--python", action="store_true", help="also time runtime.Classifier on the CPU (1 thread "
                                                              "and all cores) on the same input, for the table")
    args = parser.parse_args(argv)
    try:
        summary = run_selftest(args.bundle, args.timeout, args.backend, args.screenshot)
    except BrowserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    python = None
    if args.python:
        from runtime.device import available_cores

        python = python_latency(args.bundle, tuple(sorted({1, available_cores()})))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(summary.get("line"))
        print(f"backend {summary.get('backend')}, {summary.get('threads')} thread(s), onnxruntime-web "
              f"{summary.get('onnxruntime_web')}, {summary.get('user_agent')}")
        print(latency_table(summary, python))
        if summary.get("csp_violations"):
            print("content-security-policy violations: " + "; ".join(summary["csp_violations"]))
    ok = summary.get("total", 0) > 0 and summary.get("ok") == summary.get("total")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
