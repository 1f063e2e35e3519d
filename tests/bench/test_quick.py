"""The benchmarks must never rot: run them all (the suite and the experiments that report) in
quick mode into a temporary folder and check that every benchmark ran and produced its report
sections, tables and plots. Never a timing: quick-mode figures mean nothing and the machine may
be busy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.run_all import BENCHMARKS

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "model_artifacts"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# The first test sets up the quick run (up to 600 s) within its own time limit.
pytestmark = pytest.mark.timeout(900)

SECTIONS = (
    "## Machine",
    "## Summary",
    "### The write-up's table, reproduced here",
    "## Engines, in-process",
    "### resnet18: batch 1",
    "### resnet18: throughput",
    "## Accuracy beside speed",
    "## The Classifier in-process, by settings",
    "## The service over HTTP",
    "### In-process reference",
    "### Issue 3 targets",
    "### Where the time goes",
    "## Peers on the same harness",
    "### Issue 4 targets",
    "### Issue 10 targets",
    "## Cold start",
    "## Overload: open loop at 4x capacity",
    "### Issue 7 targets",
    "## Soak and chaos: mixed valid and hostile traffic",
    "## Response cache: repeated images, cache off and on",
    "## Open Inference Protocol v2: 8 images per request at saturation",
)
PLOTS = (
    "engines_resnet18_latency.png",
    "engines_resnet18_throughput.png",
    "http_latency_vs_throughput_p50.png",
    "http_latency_vs_throughput_p99.png",
    "peers_latency_vs_throughput.png",
    "peers_cpu_per_request.png",
    "soak_rss.png",
    "v2_throughput.png",
)


@pytest.fixture(scope="module")
def quick_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    for model in ("resnet18", "efficientnet_lite0"):
        if not (ARTIFACTS / model / "manifest.json").is_file():
            pytest.skip(f"no {model} artifacts: run `make test-models` first")
    out = tmp_path_factory.mktemp("bench")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench.run_all", "--quick", "--all", f"--out={out}"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,  # 230-380 s in CI here (Intel VNNI, 2 cores)
            check=False,
        )
    except subprocess.TimeoutExpired as slow:  # say which benchmark it was in
        err = slow.stderr or b""
        log = err.decode(errors="replace") if isinstance(err, bytes) else err
        pytest.fail(f"bench.run_all --quick ran past {slow.timeout:.0f} s:\n{log[-4000:]}")
    return done, out


def failed_sections(out: Path) -> str:
    """The report's failed sections, each with its traceback (run_all writes them there, not to
    stderr): what a failing CI log must show."""
    report = out / "report.md"
    if not report.is_file():
        return "no report.md\n"
    parts = report.read_text().split("\n## ")
    return "".join(f"## {p}\n" for p in parts if p.split("\n", 1)[0].endswith(": FAILED"))


@pytest.mark.slow
def test_quick_mode_runs_every_benchmark(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, out = quick_run
    assert done.returncode == 0, failed_sections(out) + done.stderr[-2000:]
    assert done.stdout.strip().endswith("report.md")
    for name in BENCHMARKS:  # every benchmark run_all knows, so a new one cannot be missed
        assert f"{name}: done" in done.stderr


@pytest.mark.slow
def test_quick_report_has_every_section_and_no_failure(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out = quick_run
    report = (out / "report.md").read_text()
    assert report.startswith("# imgcls benchmark report (QUICK MODE")
    missing = [heading for heading in SECTIONS if heading not in report]
    assert not missing, missing
    assert "FAILED" not in report, failed_sections(out)
    assert "Skipped" not in report
    assert "CPU flags of interest" in report
    assert "onnxruntime-openvino" in report


@pytest.mark.slow
def test_quick_plots_are_pngs_and_linked(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out = quick_run
    report = (out / "report.md").read_text()
    for plot in PLOTS:
        assert (out / plot).read_bytes()[:8] == PNG_MAGIC, plot
        assert f"]({plot})" in report


@pytest.mark.slow
def test_quick_results_json_holds_every_engine_and_server(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out = quick_run
    results = json.loads((out / "results.json").read_text())
    assert results["quick"] is True
    engines = results["engines"]["models"]["resnet18"]["2"]
    assert set(engines) == {
        "torch_eager",
        "torchscript",
        "ort_fp32",
        "ort_int8_dynamic",
        "ort_int8_static",
        "openvino_int8",
    }
    assert all(e["batch1_ms"]["count"] == 10 for e in engines.values())
    servers = [s["name"] for s in results["peers"]["servers"]]
    assert servers == [
        "service (defaults)",
        "fastapi + openvino",
        "bentoml + ort",
        "fastapi + ort",
        "flask + torchscript",
    ]
    for server in results["peers"]["servers"] + results["http"]["servers"]:
        for step in server["steps"]:
            assert step["ok"] > 0, (server["name"], step)
            assert step["errors"] == {}, (server["name"], step)
    accuracy = results["accuracy"]["models"]["efficientnet_lite0"]["variants"]
    assert set(accuracy) == {"fp32", "int8_dynamic", "int8_static", "int8_openvino"}
