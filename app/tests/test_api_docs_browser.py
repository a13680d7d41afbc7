"""The offline docs pages in a real browser: Debian's chromium, headless, loads /api/v1/docs (Swagger UI)
and /api/v1/redoc (ReDoc) from a real `netjobs-api` process. Each page must render the API's
operations, and every request it makes (the document, scripts, styles, images, fonts, the schema,
those of any frame or worker it starts) must go to that process's own 127.0.0.1 port.

The browser is driven over the Chrome DevTools Protocol on a pipe (--remote-debugging-pipe: JSON
messages ending in NUL, read from its fd 3 and written to its fd 4), so no port is opened and no client
library is needed; the requests are those it reports in Network.requestWillBeSent. Name resolution
maps every host but 127.0.0.1 to nothing (--host-resolver-rules), so a page that tries a CDN reaches
nothing even on a host with a network, and fails here by the request it tried. A request the browser
itself refused to send (Network.loadingFailed with a blockedReason, such as the page's
Content-Security-Policy) did not leave the host and does not count.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.test_api_server import API, api_process

PAGE_TIMEOUT = 20.0  # the page renders in about a second here
QUIET = 0.5  # after rendering, no new request for this long: the page has finished loading

# Chromium's own background traffic (component updates, safe browsing, ...) is off; the docs page's
# requests are what the test watches.
CHROMIUM_FLAGS = (
    "--headless", "--remote-debugging-pipe", "--no-first-run", "--no-default-browser-check",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-default-apps",
    "--disable-extensions", "--disable-gpu", "--mute-audio", "--window-size=1280,1024",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    # Chromium's sandbox needs user namespaces or a setuid helper, which root and containers lack;
    # the only page loaded is the API's own.
    "--no-sandbox",
)


def _high_fd(fd: int) -> int:
    """``fd`` moved to 10 or above (close-on-exec), so that it cannot be the child's 3 or 4 itself."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


class DevTools:
    """A Chrome DevTools Protocol client on chromium's pipe. Single-threaded: each call reads the pipe
    until its answer comes, handing the events it reads to ``_on_event``."""

    def __init__(self, proc: subprocess.Popen, to_browser: int, from_browser: int, log: Path):
        self.proc, self.to_browser, self.from_browser, self.log = proc, to_browser, from_browser, log
        self._buffer = b""
        self._next_id = 0
        self._answers: dict[int, dict] = {}
        # Every request a watched target made: session, requestId, URL and, when the browser refused to
        # send it (the page's Content-Security-Policy, mixed content...), why.
        self.requests: list[dict] = []
        self._latest: dict[tuple[str, str], dict] = {}
        self._watched: set[str] = set()
        self.failures: list[str] = []  # sessions that could not be watched
        self.last_request = time.monotonic()

    def _gone(self) -> str:
        return (f"chromium closed its DevTools pipe (exit {self.proc.poll()}):\n"
                f"{self.log.read_text(errors='replace')[-4000:]}")

    def _read(self, timeout: float) -> None:
        """Read what the browser wrote within ``timeout`` and dispatch every whole message."""
        ready, _, _ = select.select([self.from_browser], [], [], max(timeout, 0))
        if not ready:
            return
        chunk = os.read(self.from_browser, 1 << 20)
        if not chunk:
            raise AssertionError(self._gone())
        self._buffer += chunk
        *messages, self._buffer = self._buffer.split(b"\0")
        for raw in messages:
            message = json.loads(raw)
            if "id" in message:
                self._answers[message["id"]] = message
            else:
                self._on_event(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 10.0) -> dict:
        self._next_id += 1
        call = self._next_id
        message = {"id": call, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        try:
            os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        except BrokenPipeError:
            raise AssertionError(self._gone()) from None
        deadline = time.monotonic() + timeout
        while call not in self._answers:
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer from chromium to {method} in {timeout}s")
            self._read(deadline - time.monotonic())
        answer = self._answers.pop(call)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._read(deadline - time.monotonic())

    def watch(self, session: str) -> None:
        """Record the requests of ``session``'s target and of every frame or worker it starts; those
        start paused until they are watched too."""
        self._watched.add(session)
        self.send("Network.enable", session=session)
        self.send("Target.setAutoAttach", {"autoAttach": True, "waitForDebuggerOnStart": True, "flatten": True},
                  session=session)

    def _on_event(self, message: dict) -> None:
        method, params, session = message["method"], message.get("params", {}), message.get("sessionId", "")
        if method in ("Network.requestWillBeSent", "Network.webSocketCreated"):
            url = params["request"]["url"] if "request" in params else params["url"]
            request = {"session": session, "id": params["requestId"], "url": url, "blocked": None}
            self.requests.append(request)
            self._latest[session, params["requestId"]] = request  # a redirect's next hop has the same id
            self.last_request = time.monotonic()
        elif method == "Network.loadingFailed" and params.get("blockedReason"):
            if (session, params["requestId"]) in self._latest:
                self._latest[session, params["requestId"]]["blocked"] = params["blockedReason"]
        elif method == "Target.attachedToTarget" and params["sessionId"] not in self._watched:
            child, info = params["sessionId"], params["targetInfo"]
            try:
                self.watch(child)
            except RuntimeError as error:
                self.failures.append(f"{info['type']} {info.get('url')}: {error}")
            if params.get("waitingForDebugger"):
                self.send("Runtime.runIfWaitingForDebugger", session=child)

    def evaluate(self, session: str, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    @contextmanager
    def page(self, url: str):
        """A new tab, watched from before it asks for anything, at ``url``; yields its session."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        try:
            self.watch(session)
            self.send("Page.enable", session=session)
            self.send("Runtime.enable", session=session)
            self.send("Page.navigate", {"url": url}, session=session)
            yield session
        finally:
            self.send("Target.closeTarget", {"targetId": target})

    def wait_rendered(self, session: str, expression: str, timeout: float = PAGE_TIMEOUT):
        """Poll ``expression`` in the page until it is truthy, then until no request came for QUIET
        seconds. Returns its last value (falsy when the page never rendered)."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.evaluate(session, expression)
            if value:
                break
            self.pump(0.1)
        while time.monotonic() < deadline and time.monotonic() - self.last_request < QUIET:
            self.pump(0.1)
        return value


@contextmanager
def headless_chromium():
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium is not installed: the docs-page tests need Debian's chromium package "
                    "(`make deps` installs it, from APT_PACKAGES in mk/app.mk)", pytrace=False)
    profile = Path(tempfile.mkdtemp(prefix="netjobs-chromium-"))
    log = profile / "chromium.log"
    commands_r, commands_w = (_high_fd(fd) for fd in os.pipe())
    events_r, events_w = (_high_fd(fd) for fd in os.pipe())
    # The browser reads commands on fd 3 and writes answers and events on fd 4; bash puts them there
    # (dash takes no fd number over 9).
    redirect = f'exec "$@" 3<&{commands_r} 4>&{events_w} {commands_r}<&- {events_w}>&-'
    with open(log, "wb") as out:
        proc = subprocess.Popen(["bash", "-c", redirect, "bash", exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                 "about:blank"], pass_fds=(commands_r, events_w), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    os.close(commands_r)
    os.close(events_w)
    browser = DevTools(proc, commands_w, events_r, log)
    try:
        browser.send("Browser.getVersion", timeout=30)
        yield browser
    finally:
        try:
            if proc.poll() is None:
                browser.send("Browser.close", timeout=5)
                proc.wait(10)
        except (AssertionError, RuntimeError, OSError, subprocess.TimeoutExpired):
            pass
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            os.close(commands_w)
            os.close(events_r)
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def docs_site(netjobs_env):
    """(base URL of a real `netjobs-api`, a headless chromium) for this module's tests."""
    with headless_chromium() as browser, api_process(netjobs_env) as (base, _log):
        yield base, browser


def load(docs_site, path: str, rendered: str):
    """``path`` of the API loaded in the browser: (the value of ``rendered`` once truthy, or its last
    falsy value; the URLs the page sent requests to that are not the API's own; every URL it asked for)."""
    base, browser = docs_site
    origin = urlsplit(base)
    first = len(browser.requests)
    with browser.page(base + path) as session:
        value = browser.wait_rendered(session, rendered)
    requests = browser.requests[first:]
    requested = [r["url"] for r in requests]
    assert requested and requested[0] == base + path, requested
    foreign = []
    for request in requests:
        parts = urlsplit(request["url"])
        if parts.scheme in ("data", "blob", "about"):  # made in the page itself, nothing sent
            continue
        if request["blocked"]:  # refused by the browser before anything was sent (the request was still made)
            continue
        if (parts.scheme, parts.hostname, parts.port) != (origin.scheme, origin.hostname, origin.port):
            foreign.append(request["url"])
    assert not browser.failures, browser.failures
    return value, foreign, requested


# The operations Swagger UI rendered: each operation's path, as its summary line shows it.
SWAGGER_PATHS = """(() => {
  const seen = [...document.querySelectorAll('.opblock-summary-path')]
    .map(e => (e.getAttribute('data-path') || e.textContent).replace(/\\u200b/g, ''));
  return seen.length ? {title: document.querySelector('.info .title')?.textContent, paths: seen} : null;
})()"""

# ReDoc rendered: its title, and its operations' sections (each with the operation's path).
REDOC_OPERATIONS = """(() => {
  const operations = [...document.querySelectorAll('[data-section-id^="tag/"][data-section-id*="/operation/"]')];
  return operations.length ? {title: document.querySelector('.api-info h1')?.textContent,
                              operations: operations.length,
                              text: operations.map(e => e.textContent).join('\\n')} : null;
})()"""


def rendered_locally(docs_site, path: str, probe: str, page: str) -> tuple[dict, list[str]]:
    """Load ``path``; fail unless the page rendered (``probe``) and requested nothing from another host."""
    rendered, foreign, requested = load(docs_site, path, probe)
    assert not foreign, f"the {page} page requested other hosts: {foreign}"
    assert rendered, f"{page} did not render any operation in {PAGE_TIMEOUT}s; requests: {requested}"
    assert rendered["title"].startswith("netjobs"), rendered
    return rendered, requested


@pytest.mark.slow
def test_swagger_ui_renders_the_operations_with_no_request_leaving_the_host(docs_site):
    rendered, requested = rendered_locally(docs_site, f"{API}/docs", SWAGGER_PATHS, "Swagger UI")
    assert {f"{API}/jobs", f"{API}/jobs/{{task_id}}", f"{API}/health/live"} <= set(rendered["paths"]), rendered
    # Its assets and the schema came from the API itself.
    base = docs_site[0]
    assert {f"{base}{API}/docs/static/swagger-ui-bundle.js", f"{base}{API}/docs/static/swagger-ui.css",
            f"{base}{API}/openapi.json"} <= set(requested), requested


@pytest.mark.slow
def test_redoc_renders_the_operations_with_no_request_leaving_the_host(docs_site):
    rendered, requested = rendered_locally(docs_site, f"{API}/redoc", REDOC_OPERATIONS, "ReDoc")
    assert f"{API}/jobs/{{task_id}}/cancel" in rendered["text"], rendered["text"][:2000]
    base = docs_site[0]
    assert {f"{base}{API}/docs/static/redoc.standalone.js", f"{base}{API}/openapi.json"} <= set(requested), requested
