"""The suite: every section of `make bench`, one results folder, one report, with a progress
bar each. The report opens with a summary: the write-up's table beside our measurements of the
same rows (cells each section puts in its Section.writeup; a dash where its section did not
run), how far past it we go, then what the sections add for it (the issue targets).

    python -m bench.run_all [--quick] [--out DIR] [--only http,peers,...] [--all]

A section is a function ``run(cfg) -> Section``, listed in SUITE (what `make bench` runs, in
order) or in EXPERIMENTS (sections of bench/experiments/ a report can include: --only NAME, or
--all). A new workload (a phone-size photo set, a cache benchmark) is a new module whose run()
is added to SUITE here.

Full suite: about 10 minutes on the 2-core machine; --quick: under 2 minutes, checks only.
Exit status 1 when any section failed (it says why; the others still run).
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable, Sequence

from bench import cache, coldstart, overload, phone, soak
from bench.config import BenchConfig, config_from_args, parser
from bench.experiments import accuracy, engines, http, image_blocks, inprocess, tracing, v2
from bench.peers import benchmark as peers
from bench.report import TARGETS, Section, fmt, machine_info, save_section_data, table, write_report

Run = Callable[[BenchConfig], Section]
SUITE: dict[str, Run] = {
    # The engines in-process give the write-up table its rows (eager, TorchScript, ORT, int8).
    "engines": engines.run,
    "peers": peers.run,
    "phone": phone.run,  # phone-size photos (12 MP, 3 MP, HEIC) beside the 500x375 peers
    "coldstart": coldstart.run,
    "overload": overload.run,
    "soak": soak.run,
    "cache": cache.run,  # the response cache at 0/50/90 % repeated images (issue 21)
}
EXPERIMENTS: dict[str, Run] = {
    "http": http.run,  # the service against its own pieces in-process, by batching and provider
    "v2": v2.run,  # the Open Inference Protocol's transports at saturation
    "accuracy": accuracy.run,  # the quantized variants' top-1
    "inprocess": inprocess.run,  # the Classifier without HTTP, by settings
    "tracing": tracing.run,  # OpenTelemetry off, on, sampled (issue 21)
    "image_blocks": image_blocks.run,  # Pillow's kept image blocks, phone photos and small
}
BENCHMARKS: dict[str, Run] = {**SUITE, **EXPERIMENTS}


W = TARGETS["writeup"]
# Row key (as benchmarks fill Section.writeup) -> (row, the write-up's figure).
ROWS = {
    "eager": ("PyTorch eager, ms", fmt(W["eager_ms"])),
    "torchscript": ("TorchScript, ms", fmt(W["torchscript_ms"])),
    "ort_fp32": ("ONNX Runtime fp32, ms", fmt(W["ort_fp32_ms"])),
    "int8": ("int8 (write-up: dynamic quantization), ms", fmt(W["int8_ms"])),
    "size": ("model size fp32 -> int8, MB", f"{W['size_fp32_mb']} -> {W['size_int8_mb']}"),
    "rss": (
        "memory (peak RSS) eager -> int8, MB",
        f"{W['rss_before_mb']:.0f} -> {W['rss_after_mb']:.0f}",
    ),
    "first": (
        "first request: cold -> preloaded, ms",
        f"~{W['cold_first_ms']:.0f} -> ~{W['warm_first_ms']:.0f}",
    ),
}


def build_summary(sections: Sequence[Section]) -> Section:
    cells = {key: cell for s in sections for key, cell in s.writeup.items()}
    rows = [[row, figure, *cells.get(key, ("-", ""))] for key, (row, figure) in ROWS.items()]
    section = Section("summary", "Summary")
    section.add(
        "### The write-up's table, reproduced here (ResNet-18 batch 1, median ms; "
        "'a / b' = 1 / 2 threads)"
    )
    section.add(table(["row", "write-up", "measured here (same recipe)", "past it"], rows))
    section.body += [block for s in sections for block in s.summary]
    return section


def run_one(cfg: BenchConfig, name: str) -> tuple[Section, bool]:
    started = time.monotonic()
    try:
        section, ok = BENCHMARKS[name](cfg), True
    except Exception:  # one broken benchmark must not hide the others' results
        section, ok = Section(name, f"{name}: FAILED"), False
        section.add("```\n" + traceback.format_exc()[-3000:] + "\n```")
    elapsed = time.monotonic() - started
    section.data["seconds"] = elapsed
    section.add(f"_{name}: {elapsed:.0f} s_")
    save_section_data(cfg.out_dir, section)
    print(f"{name}: {'done' if ok else 'FAILED'} in {elapsed:.0f} s", file=sys.stderr)
    return section, ok


def main() -> int:
    args_parser = parser("The benchmark suite, one report")
    args_parser.add_argument("--only", default=",".join(SUITE), help="comma-separated sections")
    args_parser.add_argument("--all", action="store_true", help="the suite and the experiments")
    args = args_parser.parse_args()
    names = list(BENCHMARKS) if args.all else [n for n in args.only.split(",") if n]
    if unknown := set(names) - set(BENCHMARKS):
        args_parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    cfg = config_from_args(args)
    machine = machine_info()  # the load average BEFORE we add our own
    started = time.monotonic()
    results = [run_one(cfg, name) for name in names]
    sections = [section for section, _ in results]
    summary = build_summary(sections)
    summary.add(f"_total: {time.monotonic() - started:.0f} s_")
    print(write_report(cfg.out_dir, [summary, *sections], cfg.quick, machine))
    return 0 if all(ok for _, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
