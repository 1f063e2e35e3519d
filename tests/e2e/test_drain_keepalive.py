"""SIGTERM under steady load from 32 keep-alive callers: every request the server read gets an
answer (200 or 503 "draining"); a caller may find the port closed or its handshake unanswered
(nothing sent, safe to send elsewhere) but never a connection that took its request and closed
without a word.

Two kinds of client: httpx (checks a pooled connection before reusing it) and a raw HTTP/1.1
client that reuses its connection until told ``Connection: close``, as simple clients do."""

from __future__ import annotations

import io
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.e2e.conftest import ServiceProcess, run_service, wait_until

pytestmark = pytest.mark.slow

CALLERS = 32
ANSWERED, REFUSED, LOST = "answered", "refused (nothing sent)", "LOST (sent, no answer)"


def small_jpeg(photo: bytes) -> bytes:
    image = Image.open(io.BytesIO(photo)).convert("RGB")
    image.thumbnail((96, 96))
    out = io.BytesIO()
    image.save(out, "JPEG")
    return out.getvalue()


def httpx_caller(url: str, body: bytes, outcomes: LockedCounter, stop: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            try:
                client.post("/v1/classify", content=body, headers={"Content-Type": "image/jpeg"})
            except httpx.ConnectError:
                outcomes.add(REFUSED)
                return  # the listener is closed: a real client now goes elsewhere
            except httpx.TransportError as exc:
                outcomes.add(LOST)
                outcomes.add(f"{type(exc).__name__}: {exc} {exc.__context__!r}")
                return
            outcomes.add(ANSWERED)


def raw_caller(url: str, body: bytes, outcomes: LockedCounter, stop: threading.Event) -> None:
    host, port = url.removeprefix("http://").split(":")
    request = (
        f"POST /v1/classify HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    sock: socket.socket | None = None
    while not stop.is_set():
        if sock is None:
            try:
                sock = socket.create_connection((host, int(port)), timeout=30)
            except OSError:
                outcomes.add(REFUSED)
                return
        try:
            sock.sendall(request)
            head, keep = read_response(sock)
        except OSError:
            head, keep = b"", False
        if not head:
            outcomes.add(LOST)
            sock.close()
            return
        outcomes.add(ANSWERED)
        if not keep:
            sock.close()
            sock = None
    if sock is not None:
        sock.close()


def read_response(sock: socket.socket) -> tuple[bytes, bool]:
    """One response: (its head, whether the connection may be reused). b"" if the server
    closed the connection before a whole response."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return b"", False
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").lower().split("\r\n")
    length = next(int(line.split(":")[1]) for line in lines if line.startswith("content-length"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return b"", False
        rest += chunk
    return head, "connection: close" not in lines


def requests_seen(server: ServiceProcess) -> int:
    return sum(1 for line in server.log_text().splitlines() if '"POST /v1/classify' in line)


@pytest.mark.parametrize("caller", [httpx_caller, raw_caller], ids=["httpx", "raw keep-alive"])
def test_sigterm_under_keep_alive_load_answers_every_request_it_read(
    tmp_path: Path,
    trained_model_dir: Path,
    photo_bytes: Callable[[str], bytes],
    caller: Callable[[str, bytes, LockedCounter, threading.Event], None],
) -> None:
    body = small_jpeg(photo_bytes("coffee.png"))
    outcomes = LockedCounter()
    stop = threading.Event()
    with run_service(tmp_path, trained_model_dir, IMGCLS_LOG_LEVEL="info") as server:
        threads = [
            threading.Thread(target=caller, args=(server.url, body, outcomes, stop), daemon=True)
            for _ in range(CALLERS)
        ]
        for thread in threads:
            thread.start()
        wait_until(lambda: outcomes[ANSWERED] >= 200, 60, "200 answers under load", server.log)
        server.process.send_signal(signal.SIGTERM)
        exit_code = server.process.wait(timeout=60)
        time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join(30)
        handled = requests_seen(server)
    print(dict(outcomes), f"server handled {handled}")
    assert exit_code == 0
    # Every request the server read was answered, and every answer came from a request it
    # logged: the two counts are the same requests.
    assert outcomes[ANSWERED] == handled, dict(outcomes)
    # Nothing is lost, not even a connection the kernel completed in the last instant before
    # the port closed: new handshakes are stopped first (service/server/syn_filter.py), those under
    # way
    # are accepted and answered. Before the drain closed connections cleanly, 2-10 (httpx) and
    # all 32 (raw) were lost; with a one-slot accept queue instead of the filter, 0-2.
    assert outcomes[LOST] == 0, dict(outcomes)
    assert outcomes[REFUSED] > 0  # the callers were still calling when the port closed


class LockedCounter(Counter[str]):
    """A Counter the 32 caller threads can add to at once (``+=`` on a Counter is not atomic:
    the exact comparison with the server's log needs every count)."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def add(self, key: str) -> None:
        with self._lock:
            self[key] += 1
