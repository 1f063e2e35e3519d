"""Decode memory by format (issue 22, finding 9): a 1.5 KB lossless WebP of 16000x2400 costs
~590 MB to decode, ~16 bytes per pixel, twice an RGBA PNG's. Charged as pixels alike, two of
them fitted a budget sized for two PNGs and decoded together (+1.2 GB). Charged what they cost,
they decode one at a time within the budget's memory, and at the default budget (320 MB) such a
WebP is refused with 413 before a pixel is decoded."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image

from service.limits.pixel_budget import BYTES_PER_BUDGET_PIXEL
from tests.e2e.conftest import ServiceProcess, run_service

pytestmark = pytest.mark.slow

SIZE = (16000, 2400)  # 38.4 MP: under the default IMGCLS_MAX_IMAGE_PIXELS (40 MP)
# Fits one such WebP (charged ~88 M budget pixels), not two; two RGBA PNGs of its size.
BUDGET_PIXELS = 100_000_000


@pytest.fixture(scope="module")
def flat_webp() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", SIZE, (90, 90, 90)).save(out, "WEBP", lossless=True)
    assert len(out.getvalue()) < 4096
    return out.getvalue()


def peak_rss_mb(server: ServiceProcess) -> float:
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def post(server: ServiceProcess, data: bytes) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/classify",
        content=data,
        headers={"Content-Type": "image/webp"},
        timeout=300,
    )


def test_two_large_webps_decode_one_at_a_time_within_the_budgets_memory(
    tmp_path: Path, trained_model_dir: Path, flat_webp: bytes
) -> None:
    env = {
        "IMGCLS_DECODE_WORKERS": "2",
        "IMGCLS_DECODE_BUDGET_PIXELS": str(BUDGET_PIXELS),
        "IMGCLS_REQUEST_TIMEOUT_S": "300",  # two such decodes in a row take seconds
    }
    with run_service(tmp_path, trained_model_dir, **env) as server:
        baseline = peak_rss_mb(server)
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda _: post(server, flat_webp), range(2)))
        growth = peak_rss_mb(server) - baseline
    assert [a.status_code for a in answers] == [200, 200], answers[0].text
    budget_mb = BUDGET_PIXELS * BYTES_PER_BUDGET_PIXEL / 1e6
    print(f"two 16000x2400 lossless WebPs: peak RSS +{growth:.0f} MB (budget {budget_mb:.0f})")
    # Measured: +590 MB (one at a time); charged as pixels alike: +1,170 MB (both at once).
    assert growth < budget_mb, f"peak RSS grew {growth:.0f} MB, over the {budget_mb:.0f} MB budget"


def test_at_the_default_budget_such_a_webp_is_refused_before_decoding(
    tmp_path: Path, trained_model_dir: Path, flat_webp: bytes
) -> None:
    with run_service(tmp_path, trained_model_dir) as server:
        baseline = peak_rss_mb(server)
        answer = post(server, flat_webp)
        growth = peak_rss_mb(server) - baseline
    assert answer.status_code == 413, answer.text
    message = answer.json()["error"]["message"]
    assert "16000x2400 WebP image (RGB) would take about 701 MB" in message
    assert "more than this server decodes at once (320 MB)" in message
    assert growth < 50, f"peak RSS grew {growth:.0f} MB: was it decoded?"
