"""Hostile request heads against the service's HTTP protocol (service/server/protocol.py) in a
real uvicorn server: whatever the method, target and header fields, every answer is JSON with
its status (never uvicorn's plain text), or the connection closes with no answer, and the server
answers a probe afterwards. Small limits, so that examples reach them."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator

import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.app import create_app
from service.server.draining import _protocol
from service.settings import Settings
from tests.api.conftest import fake_factory

TOKEN = st.text(
    st.sampled_from("!#$%&'*+-.^_`|~ABCDEFGHIJKLMNOPQRSTUVWXYZabcxyz0123456789"),
    min_size=1,
    max_size=12,
)
METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PROPFIND"]) | TOKEN
PATHS = st.sampled_from(["/livez", "/v1/classify", "/v2/models/m/infer", "/nope", "/v1/model"])
TARGETS = st.builds(
    lambda path, query: path + ("?" + query if query else ""),
    PATHS,
    st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=3000),
)
FIELD = st.tuples(TOKEN, st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=200))
GARBAGE = st.binary(max_size=64)


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    app = create_app(
        Settings(http_max_head_bytes=2048, http_max_headers=10, http_max_url_bytes=1024),
        metrics=None,
        classifier_factory=fake_factory(),
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,
        http=_protocol("httptools", app),
        log_config=None,
        access_log=False,
        limit_concurrency=None,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    while not server.started:
        threading.Event().wait(0.01)
    yield sock.getsockname()[1]
    server.should_exit = True
    thread.join(10)
    sock.close()


def exchange(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        try:
            conn.sendall(raw)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # closed on us mid-send: what it answered is still to be read
        received = b""
        try:
            while chunk := conn.recv(65536):
                received += chunk
        except ConnectionError:
            pass
        return received


def check_answers(received: bytes, head: bool = False) -> None:
    """Each answer on the connection: JSON (the API's or the error shape) with a status; the
    answer to a HEAD request has no body, whatever its Content-Length says."""
    while received:
        top, _, rest = received.partition(b"\r\n\r\n")
        lines = top.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        assert headers["content-type"].startswith("application/json"), received[:300]
        length = 0 if head else int(headers["content-length"])
        body, received, head = rest[:length], rest[length:], False
        if status >= 400 and length:
            assert "error" in json.loads(body)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(method=METHODS, target=TARGETS, fields=st.lists(FIELD, max_size=14), garbage=GARBAGE)
def test_any_head_gets_json_or_a_close(
    port: int, method: str, target: str, fields: list[tuple[str, str]], garbage: bytes
) -> None:
    lines = [f"{method} {target} HTTP/1.1", "Host: x", *(f"{n}: {v}" for n, v in fields)]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + garbage
    check_answers(exchange(port, raw), head=method == "HEAD")
    check_answers(exchange(port, b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
