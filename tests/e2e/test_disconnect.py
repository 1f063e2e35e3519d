"""A caller that hangs up while its image waits in a real server's queue: uvicorn delivers
http.disconnect, the route cancels the classify call, the image never runs, and the rejection
is counted as client_disconnected."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ServiceProcess, run_service, wait_until

pytestmark = pytest.mark.slow


def metric(server: ServiceProcess, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_hanging_up_while_queued_cancels_the_work(
    tmp_path: Path, trained_model_dir: Path, photo_bytes: Callable[[str], bytes]
) -> None:
    # A long batch window holds the one image in the queue until the caller has hung up.
    env = {"IMGCLS_MAX_BATCH_WAIT_S": "30", "IMGCLS_REQUEST_TIMEOUT_S": "60"}
    with run_service(tmp_path, trained_model_dir, **env) as server:
        data = photo_bytes("coffee.png")
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            head = (
                f"POST /v1/classify HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/png\r\n"
                f"Content-Length: {len(data)}\r\n\r\n"
            )
            sock.sendall(head.encode() + data)
            wait_until(lambda: metric(server, "imgcls_queue_depth") == 1, 30, "queued", None)
        disconnected = 'imgcls_rejections_total{reason="client_disconnected"}'
        wait_until(lambda: metric(server, disconnected) == 1, 30, "disconnect counted", None)
        # Dropped from the queue now, not when its 30 s batch window would have ended.
        assert metric(server, "imgcls_queue_depth") == 0
        assert "client disconnected while waiting" in server.log_text()


@pytest.mark.parametrize("content_type", ["image/png", "multipart/form-data; boundary=xyz"])
def test_hanging_up_mid_upload_is_a_client_disconnect_not_a_server_error(
    tmp_path: Path, trained_model_dir: Path, photo_bytes: Callable[[str], bytes], content_type: str
) -> None:
    data = photo_bytes("coffee.png")
    if content_type.startswith("multipart"):
        data = (
            b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="c.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + data + b"\r\n--xyz--\r\n"
        )
    with run_service(tmp_path, trained_model_dir) as server:
        host, port = server.url.removeprefix("http://").split(":")
        for _ in range(3):
            with socket.create_connection((host, int(port))) as sock:
                head = (
                    f"POST /v1/classify HTTP/1.1\r\nHost: {host}\r\n"
                    f"Content-Type: {content_type}\r\nContent-Length: {len(data)}\r\n\r\n"
                )
                sock.sendall(head.encode() + data[: len(data) // 2])
        disconnected = 'imgcls_rejections_total{reason="client_disconnected"}'
        wait_until(lambda: metric(server, disconnected) == 3, 30, "disconnects counted", None)
        assert metric(server, 'imgcls_rejections_total{reason="internal"}') == 0
        assert 'status="500"' not in httpx.get(f"{server.url}/metrics", timeout=5).text
        assert "unhandled error" not in server.log_text()
        assert "Traceback" not in server.log_text()
