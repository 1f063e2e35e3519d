"""The autoscalers' queries (deploy/k8s/autoscaling: KEDA's triggers, prometheus-adapter's
rules) against a real Prometheus scraping a real service after a burst of load: each answers
one finite value, in the range its target assumes. The scrape adds the namespace and pod labels
a Kubernetes scrape config gives, which the queries select on."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.deploy.test_autoscaling import queries
from tests.e2e.conftest import ServiceProcess, wait_until
from tests.e2e.prometheus import Prometheus, run_prometheus

pytestmark = pytest.mark.slow

POD = {"namespace": "imgcls", "pod": "imgcls-7d9f8b6c5-x2x4k"}
COUNTER = "imgcls_in_flight_image_seconds_total"
CALLERS = 8
REQUESTS = 240  # a few seconds of load: well inside the queries' 1-minute windows


def load(client: httpx.Client, image: bytes) -> None:
    def post(_: int) -> int:
        answer = client.post("/v1/classify", content=image, headers={"Content-Type": "image/png"})
        return answer.status_code

    with ThreadPoolExecutor(CALLERS) as pool:
        assert set(pool.map(post, range(REQUESTS))) == {200}


def test_every_autoscaling_query_answers_one_value_after_load(
    tmp_path: Path, trained_server: ServiceProcess, photo_bytes: Callable[[str], bytes]
) -> None:
    target = trained_server.url.removeprefix("http://")
    with (
        run_prometheus(tmp_path, target, labels=POD) as prometheus,
        httpx.Client(base_url=trained_server.url, timeout=60) as service,
    ):
        wait_until(lambda: scraped(prometheus) is not None, 30, "a scrape", prometheus.log)
        load(service, photo_bytes("coffee.png"))  # the cache is off: every image runs
        total = float(re.findall(rf"^{COUNTER} (\S+)$", service.get("/metrics").text, re.M)[0])
        wait_until(lambda: scraped(prometheus) == total, 30, "the load scraped", prometheus.log)
        now = time.time()  # one instant for every query: their windows hold the same samples

        values = {where: one_value(prometheus, query, now) for where, query in queries()}

    assert set(values) == {
        "keda saturation", "keda queue-wait", "adapter imgcls_saturation",
        "adapter imgcls_queue_wait_seconds",
    }  # fmt: skip
    # One pod: KEDA's sum over the pods and the adapter's per-pod value are the same figure.
    assert values["keda saturation"] == pytest.approx(values["adapter imgcls_saturation"])
    assert 0 < values["keda saturation"] <= 1  # images in flight over the capacity
    assert values["keda queue-wait"] == pytest.approx(values["adapter imgcls_queue_wait_seconds"])
    assert 0 < values["keda queue-wait"] < 10  # seconds; the request timeout bounds it


def scraped(prometheus: Prometheus) -> float | None:
    return prometheus.value(f'{COUNTER}{{pod="{POD["pod"]}"}}')


def one_value(prometheus: Prometheus, query: str, at: float) -> float:
    result = prometheus.query(query, at)
    assert len(result) == 1, (query, result)
    value = float(result[0]["value"][1])
    assert math.isfinite(value), (query, value)
    return value
