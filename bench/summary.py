"""The summary at the top of the full report: the write-up's table beside our measurements of
the same rows, then how far past it we go, then the issue targets. Reads the other sections'
data; a row whose benchmark did not run shows a dash."""

from __future__ import annotations

from typing import Any

from bench.report import Section, table
from bench.stats import fmt
from bench.targets import WRITEUP


def _get(data: dict[str, Any] | None, *path: str) -> Any:
    node: Any = data
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _writeup_rows(sections: dict[str, dict[str, Any]]) -> list[list[object]]:
    r18 = _get(sections.get("engines"), "models", "resnet18") or {}
    threads = sorted((k for k in r18 if k.isdigit()), key=int)
    top = threads[-1] if threads else "2"

    def value(engine: str, *path: str, thread: str = top) -> float | None:
        found = _get(r18, thread, engine, *path)
        return None if found is None else float(found)

    def p50(engine: str) -> str:
        """Every thread count measured, e.g. '39.6 / 21.9' for 1 / 2 threads."""
        cells = [fmt(value(engine, "batch1_ms", "p50", thread=t)) for t in threads]
        return " / ".join(cells) or "-"

    cold = _get(sections.get("coldstart"), "servers") or {}
    lazy = _get(cold, "flask + torchscript lazy", "first_ms")
    warm = _get(cold, "flask + torchscript", "first_ms")
    ours_first = _get(cold, "service auto", "first_ms") or _get(cold, "service cpu", "first_ms")
    return [
        ["PyTorch eager, ms", fmt(WRITEUP["eager_ms"]), p50("torch_eager"), ""],
        ["TorchScript, ms", fmt(WRITEUP["torchscript_ms"]), p50("torchscript"), ""],
        ["ONNX Runtime fp32, ms", fmt(WRITEUP["ort_fp32_ms"]), p50("ort_fp32"), ""],
        [
            "int8 (write-up: dynamic quantization), ms",
            fmt(WRITEUP["int8_ms"]),
            p50("ort_int8_dynamic"),
            f"ours: static U8S8 {p50('ort_int8_static')}; on OpenVINO {p50('openvino_int8')}",
        ],
        [
            "model size fp32 -> int8, MB",
            f"{WRITEUP['size_fp32_mb']} -> {WRITEUP['size_int8_mb']}",
            f"{fmt(value('ort_fp32', 'file_mb'))} -> {fmt(value('ort_int8_dynamic', 'file_mb'))}",
            f"ours (static): {fmt(value('ort_int8_static', 'file_mb'))}",
        ],
        [
            "memory (peak RSS) eager -> int8, MB",
            f"{WRITEUP['rss_before_mb']:.0f} -> {WRITEUP['rss_after_mb']:.0f}",
            f"{fmt(value('torch_eager', 'peak_rss_batch1_mb'), 0)} -> "
            f"{fmt(value('ort_int8_dynamic', 'peak_rss_batch1_mb'), 0)}",
            f"ours, engine alone: {fmt(value('ort_int8_static', 'peak_rss_batch1_mb'), 0)}",
        ],
        [
            "first request: cold -> preloaded, ms",
            f"~{WRITEUP['cold_first_ms']:.0f} -> ~{WRITEUP['warm_first_ms']:.0f}",
            f"{fmt(lazy)} -> {fmt(warm)}",
            f"ours (service): {fmt(ours_first)}",
        ],
    ]


def build_summary(sections: dict[str, dict[str, Any]]) -> Section:
    section = Section("summary", "Summary")
    section.add(
        "### The write-up's table, reproduced here (ResNet-18 batch 1, median ms; "
        "'a / b' = 1 / 2 threads)"
    )
    section.add(
        table(
            ["row", "write-up", "measured here (same recipe)", "past it"], _writeup_rows(sections)
        )
    )
    peers = sections.get("peers")
    if peers and peers.get("targets"):
        section.add("### Issue 4 targets (service vs peers, same harness and run)")
        section.add(table(["target", "wanted", "measured", "verdict"], peers["targets"]))
    http = sections.get("http")
    if http and http.get("targets"):
        section.add("### Issue 3 targets (service vs in-process decode + inference)")
        section.add(table(http["target_headers"], http["targets"]))
    return section
