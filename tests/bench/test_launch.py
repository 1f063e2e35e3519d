"""bench.launch, the one "start a server and wait until it is ready" of bench/, tests/e2e and
tests/deploy, against real child processes on loopback ports: a server that becomes ready is
waited for and stopped on the way out; one that exits, or never answers, raises NotReady with
its log instead of hanging."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from bench import launch

# A tiny server: /readyz answers 503 for its first two polls, then 200.
READY_AFTER_TWO = """
import http.server, sys
polls = 0
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global polls
        polls += 1
        self.send_response(200 if polls > 2 else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
print("serving", flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_a_server_that_becomes_ready_is_waited_for_then_stopped(tmp_path: Path) -> None:
    port = launch.free_port()
    command = [sys.executable, "-c", READY_AFTER_TWO, str(port)]
    with launch.started(command, port, tmp_path / "server.log", graceful_s=5) as server:
        assert server.url == f"http://127.0.0.1:{port}"
        assert server.ready_s > 0
        assert server.proc.poll() is None
    assert server.proc.poll() is not None  # stopped on the way out
    assert "serving" in (tmp_path / "server.log").read_text()


def test_a_server_that_exits_raises_with_its_log(tmp_path: Path) -> None:
    port = launch.free_port()
    command = [sys.executable, "-c", "print('no model here'); raise SystemExit(3)"]
    with (
        pytest.raises(launch.NotReady, match=r"exited with 3(.|\n)*no model here"),
        launch.started(command, port, tmp_path / "server.log"),
    ):
        pytest.fail("never ready")


def test_a_url_that_never_answers_raises_after_the_bound() -> None:
    started = time.monotonic()
    with pytest.raises(launch.NotReady, match="did not answer 200 within"):
        launch.wait_ready(f"http://127.0.0.1:{launch.free_port()}", 0.5, log=lambda: "the tail")
    assert time.monotonic() - started < 5
