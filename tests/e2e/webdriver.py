"""A minimal W3C WebDriver client over httpx, enough to drive Debian's chromium through
chromedriver: open a page, put a file in an <input type=file>, run a script. (Selenium would do
the same over the same protocol; this keeps the test dependencies unchanged.)"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import free_port, wait_until

ELEMENT_KEY = "element-6066-11e4-a52e-4f735466cecf"  # fixed by the W3C spec
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class WebDriverError(Exception):
    pass


class Session:
    def __init__(self, http: httpx.Client, session_id: str) -> None:
        self.http = http
        self.base = f"/session/{session_id}"

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.http.request(method, self.base + path, json=body)
        value = response.json()["value"]
        if response.status_code != 200:
            raise WebDriverError(f"{method} {path}: {value}")
        return value

    def open(self, url: str) -> None:
        self._call("POST", "/url", {"url": url})

    def find(self, css: str) -> str:
        found = self._call("POST", "/element", {"using": "css selector", "value": css})
        element: str = found[ELEMENT_KEY]
        return element

    def send_file(self, css: str, path: Path) -> None:
        self._call("POST", f"/element/{self.find(css)}/value", {"text": str(path)})

    def run_async(self, script: str, timeout_s: float = 60.0) -> Any:
        self._call("POST", "/timeouts", {"script": int(timeout_s * 1000)})
        return self._call("POST", "/execute/async", {"script": script, "args": []})

    def run(self, script: str) -> Any:
        return self._call("POST", "/execute/sync", {"script": script, "args": []})


@contextlib.contextmanager
def chromium_session(chromedriver: str, chromium: str, profile: Path) -> Iterator[Session]:
    port = free_port()
    log = profile.parent / "chromedriver.log"
    with log.open("wb") as out:
        # Its own process group: chromium is chromedriver's child, and terminating only the
        # driver would leave the browser running after the test.
        driver = subprocess.Popen(
            [chromedriver, f"--port={port}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
            wait_until(lambda: _driver_ready(http), 30, "chromedriver /status ready", log)
            session = _new_session(http, chromium, profile)
            try:
                yield session
            finally:
                http.delete(session.base)  # quits chromium
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)  # whatever the quit left behind
        driver.wait(timeout=30)


def _driver_ready(http: httpx.Client) -> bool:
    ready: bool = http.get("/status").json()["value"]["ready"]
    return ready


def _new_session(http: httpx.Client, chromium: str, profile: Path) -> Session:
    options = {"binary": chromium, "args": [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]}
    capabilities = {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}
    response = http.post("/session", json={"capabilities": capabilities})
    if response.status_code != 200:
        raise WebDriverError(f"could not start chromium: {response.text}")
    return Session(http, response.json()["value"]["sessionId"])
