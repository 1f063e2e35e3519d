"""A real Prometheus (Debian's binary) scrapes a real ``python -m service``; its query API must
then hold our series with the right labels: what a dashboard would really see."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ServiceProcess, free_port, require_binary, wait_until

pytestmark = pytest.mark.slow

CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: imgcls
    static_configs:
      - targets: ["{target}"]
"""


@pytest.fixture
def prometheus(tmp_path: Path, trained_server: ServiceProcess) -> Iterator[httpx.Client]:
    binary = require_binary("prometheus")
    target = trained_server.url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(CONFIG.format(target=target))
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            wait_until(lambda: client.get("/-/ready").status_code == 200, 60, "ready", log)
            yield client
    finally:
        process.terminate()
        process.wait(timeout=30)


def query(client: httpx.Client, promql: str) -> list[dict[str, Any]]:
    body = client.get("/api/v1/query", params={"query": promql}).json()
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def test_prometheus_scrapes_our_metrics_with_the_right_labels(
    prometheus: httpx.Client,
    trained_server: ServiceProcess,
    photo_bytes: Callable[[str], bytes],
) -> None:
    with httpx.Client(base_url=trained_server.url, timeout=30) as service:
        ok = service.post(
            "/v1/classify",
            content=photo_bytes("rocket.jpg"),
            headers={"Content-Type": "image/jpeg"},
        )
        refused = service.post(
            "/v1/classify", content=b"hi", headers={"Content-Type": "text/plain"}
        )
    assert (ok.status_code, refused.status_code) == (200, 415)

    # Scraped after our requests: the 415 series only exists from then on.
    wanted = 'imgcls_rejections_total{reason="unsupported_media_type"}'
    wait_until(lambda: bool(query(prometheus, wanted)), 60, "the 415 scraped", None)

    (up,) = query(prometheus, 'up{job="imgcls"}')
    assert up["value"][1] == "1"
    series = query(prometheus, 'imgcls_http_requests_total{route="/v1/classify"}')
    labels = {(s["metric"]["method"], s["metric"]["status"]) for s in series}
    assert {("POST", "200"), ("POST", "415")} <= labels
    assert all(s["metric"]["job"] == "imgcls" for s in series)
    (ready,) = query(prometheus, "imgcls_ready")
    assert ready["value"][1] == "1"
    buckets = query(prometheus, 'imgcls_http_request_duration_seconds_bucket{route="/v1/classify"}')
    assert {b["metric"]["le"] for b in buckets} >= {"0.1", "+Inf"}
    (inferences,) = query(prometheus, "imgcls_inference_duration_seconds_count")
    assert float(inferences["value"][1]) >= 1
    info = query(prometheus, "imgcls_model_info")
    assert info[0]["metric"]["name"] == "efficientnet_lite0"
