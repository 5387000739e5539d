"""Helpers for tests that talk to a real server: uvicorn on a free loopback port, and polling."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


@contextlib.contextmanager
def uvicorn_server(app):
    """A real uvicorn on a free loopback port, in a thread; yields the base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def open_page(playwright, url: str, models: int):
    """Chromium (the system's; skips the test without one) on the served page, once its model menu holds `models`
    entries, allowed to play sound; (browser, page, the page's uncaught errors)."""
    import shutil

    import pytest

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium binary: apt-get install chromium (make test installs it where apt works)")
    browser = playwright.chromium.launch(executable_path=chromium, args=[
        "--no-sandbox", "--disable-gpu", "--no-first-run", "--autoplay-policy=no-user-gesture-required"])
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/")
    wait_until(lambda: page.locator("#model option").count() == models, 20)
    return browser, page, errors


def wait_until(condition, seconds: float) -> float:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < seconds, "condition not reached in time"
        time.sleep(0.02)
    return time.monotonic() - start
