"""Every benchmark, one results folder, one report (summary first), with a progress bar each.

    python -m bench.run_all [--quick] [--out DIR] [--only engines,http,...]

Full run: about 10 minutes on the 2-core machine; --quick: under 2 minutes, checks only.
Exit status 1 when any benchmark failed (its section says why; the others still run).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable

from bench import accuracy, coldstart, engines, http, inprocess
from bench.config import BenchConfig, add_common_args, config_from_args
from bench.machine import machine_info
from bench.peers import compare
from bench.report import Section, save_section_data, write_report
from bench.summary import build_summary

BENCHMARKS: dict[str, Callable[[BenchConfig], Section]] = {
    "engines": engines.run,
    "accuracy": accuracy.run,
    "inprocess": inprocess.run,
    "http": http.run,
    "peers": compare.run,
    "coldstart": coldstart.run,
}


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="All benchmarks, one report")
    add_common_args(parser)
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    names = [n for n in args.only.split(",") if n]
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    machine = machine_info()  # the load average BEFORE we add our own
    started = time.monotonic()
    results = [run_one(cfg, name) for name in names]
    sections = [section for section, _ in results]
    summary = build_summary({s.name: s.data for s in sections})
    summary.add(f"_total: {time.monotonic() - started:.0f} s_")
    report = write_report(cfg.out_dir, [summary, *sections], cfg.quick, machine)
    print(report)
    return 0 if all(ok for _, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
