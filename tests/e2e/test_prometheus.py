"""A real Prometheus (Debian's binary) scrapes a real ``python -m service``; its query API must
then hold our series with the right labels: what a dashboard would really see."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ServiceProcess, wait_until
from tests.e2e.prometheus import Prometheus, run_prometheus

pytestmark = pytest.mark.slow


@pytest.fixture
def prometheus(tmp_path: Path, trained_server: ServiceProcess) -> Iterator[Prometheus]:
    with run_prometheus(tmp_path, trained_server.url.removeprefix("http://")) as running:
        yield running


def test_prometheus_scrapes_our_metrics_with_the_right_labels(
    prometheus: Prometheus,
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
    wait_until(lambda: bool(prometheus.query(wanted)), 60, "the 415 scraped", None)

    (up,) = prometheus.query('up{job="imgcls"}')
    assert up["value"][1] == "1"
    series = prometheus.query('imgcls_http_requests_total{route="/v1/classify"}')
    labels = {(s["metric"]["method"], s["metric"]["status"]) for s in series}
    assert {("POST", "200"), ("POST", "415")} <= labels
    assert all(s["metric"]["job"] == "imgcls" for s in series)
    (ready,) = prometheus.query("imgcls_ready")
    assert ready["value"][1] == "1"
    buckets = prometheus.query('imgcls_http_request_duration_seconds_bucket{route="/v1/classify"}')
    assert {b["metric"]["le"] for b in buckets} >= {"0.1", "+Inf"}
    (inferences,) = prometheus.query("imgcls_inference_duration_seconds_count")
    assert float(inferences["value"][1]) >= 1
    info = prometheus.query("imgcls_model_info")
    assert info[0]["metric"]["name"] == "efficientnet_lite0"
