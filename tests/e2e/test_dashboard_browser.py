"""The dashboard in a real headless Chromium (Debian's, `make chromium`), driven by Playwright.

A replica runs under uvicorn on a free port (the ``serve`` fixture of the stream tests, ticks of
200 ms); the browser reaches it through a TCP proxy this test owns, so the test can cut the stream and
refuse new connections for a moment (the browser retries by itself) or answer them with a 503 (the
browser gives up, the page retries). No browser is ever downloaded, and a missing or broken
browser fails the test: it never skips. Every wait polls the page (Playwright's ``expect``).

Set ``DASHBOARD_SCREENSHOT_DIR`` to also keep the screenshot outside the test's tmp_path.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Error, Page, expect, sync_playwright

from tests.m1lib.api.test_stream import Replica, serve  # noqa: F401  (the fixture)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
WAIT_MS = 30_000
TEMPLATE_TITLE = "p99 tool latency by 5 minutes"


class CuttableProxy:
    """A TCP forwarder on a free port: ``cut()`` closes every connection and refuses new ones
    (nothing listens), ``restore()`` listens on the same port again. While ``unavailable`` is
    set it answers each new connection with a 503, as a load balancer without a backend does."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.unavailable = False
        self.restore()

    def restore(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.1)  # the accept loop notices cut() within this
        self.port = listener.getsockname()[1]
        self._listener, self._stop = listener, threading.Event()
        self._thread = threading.Thread(target=self._accept, args=(listener, self._stop))
        self._thread.start()

    def cut(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(10)
        self.drop()

    def drop(self) -> None:
        """Close every forwarded connection (both ends)."""
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:
            _close(sock)

    def _accept(self, listener: socket.socket, stop: threading.Event) -> None:
        with listener:
            while not stop.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                client.settimeout(10)
                if self.unavailable:
                    _answer_503(client)
                    continue
                client.settimeout(None)
                try:
                    upstream = socket.create_connection(("127.0.0.1", self.target_port), 10)
                except OSError:
                    _close(client)
                    continue
                upstream.settimeout(None)
                with self._lock:
                    self._sockets.update((client, upstream))
                for source, sink in ((client, upstream), (upstream, client)):
                    threading.Thread(target=_pump, args=(source, sink), daemon=True).start()

    def close(self) -> None:
        self.cut()


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def _answer_503(client: socket.socket) -> None:
    try:
        client.recv(65536)  # the request's head
        client.sendall(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
    except OSError:
        pass
    finally:
        _close(client)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        _close(sink)


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Debian's Chromium under Playwright; failing (never skipping) when it cannot be had."""
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run `make chromium`"
    expect.set_options(timeout=WAIT_MS)  # every expect below polls up to this long
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=WAIT_MS
            )
        except Error as error:
            pytest.fail(f"{CHROMIUM} does not start under Playwright: {error}")
        yield launched
        launched.close()


def _record_tools(replica: Replica, count: int, *, failed: int = 0) -> None:
    for i in range(count):
        replica.record(
            "tool_executions",
            toolName="web_search" if i % 3 else "fetch_page",
            scope="read",
            success=i >= failed,
            durationMs=20.0 + i,
        )


def test_dashboard_live_in_chromium(
    serve: Callable[..., Replica],  # noqa: F811
    browser: Browser,
    tmp_path: Path,
) -> None:
    replica = serve(stream={"tick_ms": 200, "retry_ms": 300})
    proxy = CuttableProxy(replica.port)
    base = f"http://127.0.0.1:{proxy.port}"
    page: Page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(WAIT_MS)
    problems: list[str] = []  # uncaught exceptions, CSP violations, missing files
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: (
            problems.append(message.text)
            if "Content Security Policy" in message.text or "status of 404" in message.text
            else None
        ),
    )
    try:
        # Log in through the key form.
        page.goto(f"{base}/dashboard")
        expect(page).to_have_url(f"{base}/dashboard/login")
        page.fill("#key", "m1_not_a_key")
        page.click("#login-submit")
        expect(page.locator("#login-error")).to_contain_text("unknown or revoked")
        page.fill("#key", replica.viewer)
        page.click("#login-submit")
        expect(page).to_have_url(f"{base}/dashboard")
        conn = page.locator("#conn")
        expect(conn).to_have_attribute("data-state", "connected")

        # Figures follow the events recorded.
        expect(page.locator("#tools-total")).to_have_text("0")
        _record_tools(replica, 5, failed=2)
        expect(page.locator("#tools-total")).to_have_text("5")
        expect(page.locator("#tools-failed")).to_have_text("2")
        expect(page.locator("#card-tools .uplot")).to_be_visible()

        # An alert appears, its text inserted as text (no markup from the event reaches the DOM).
        message = '<img id="injected" src="x"> disk almost full'
        replica.record("error_alerts", level="critical", source="browser-test", message=message)
        first = page.locator("#alerts li.alert").first
        expect(first.locator(".message")).to_have_text(message)
        expect(first.locator(".source")).to_have_text("browser-test")
        assert page.locator("#injected").count() == 0

        # The stream is cut: the page says so; it comes back by itself and updates again.
        proxy.cut()
        expect(conn).to_have_attribute("data-state", "disconnected")
        proxy.restore()
        expect(conn).to_have_attribute("data-state", "connected")
        _record_tools(replica, 4)
        expect(page.locator("#tools-total")).to_have_text("9")

        # A 503 makes the browser give up on the stream (readyState CLOSED): the page retries
        # by itself, with backoff, until the stream is back.
        proxy.unavailable = True
        proxy.drop()
        expect(conn).to_have_attribute("data-state", "disconnected")
        expect(page.locator("#conn-detail")).to_contain_text("retrying in")
        proxy.unavailable = False
        expect(conn).to_have_attribute("data-state", "connected")
        _record_tools(replica, 1)
        expect(page.locator("#tools-total")).to_have_text("10")

        # The query box: a refused query shows the problem's detail; a series of buckets is
        # plotted, anything else tabulated.
        expect(page.locator("#query-template option")).not_to_have_count(1)
        page.fill("#query-text", '{"metric": "tool_executions", "groupBy": ["nope"]}')
        page.click("#query-run")
        expect(page.locator("#query-error")).to_be_visible()
        expect(page.locator("#query-error")).to_contain_text("nope")
        earlier = time.time() - 180  # outside the stream's window, inside the query's range
        for minutes in (0, 1):
            replica.record(
                "tool_executions",
                timestamp=earlier + 60 * minutes,
                toolName="web_search",
                scope="read",
                success=True,
                durationMs=30.0,
            )
        page.fill("#query-text", '{"metric": "tool_executions", "groupBy": ["toolName"]}')
        page.click("#query-run")
        expect(page.locator("#query-error")).to_be_hidden()
        expect(page.locator("#query-table td", has_text="fetch_page")).to_be_visible()
        page.select_option("#query-template", label=TEMPLATE_TITLE)
        expect(page.locator("#query-text")).to_have_value(re.compile(r'"interval": "5m"'))
        page.fill(
            "#query-text", '{"metric": "tool_executions", "timeRange": "1h", "interval": "1m"}'
        )
        page.click("#query-run")
        expect(page.locator("#query-status")).to_contain_text(re.compile(r"\d+ rows"))
        expect(page.locator("#query-chart .uplot")).to_be_visible()
        expect(page.locator("#query-table table")).to_have_count(0)

        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        keep = os.environ.get("DASHBOARD_SCREENSHOT_DIR")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, Path(keep) / shot.name)

        # Logging out ends the session: the page is the key form again.
        page.click("#logout")
        expect(page).to_have_url(f"{base}/dashboard/login")
        page.goto(f"{base}/dashboard")
        expect(page).to_have_url(f"{base}/dashboard/login")
        assert problems == []
    finally:
        page.close()
        proxy.close()
