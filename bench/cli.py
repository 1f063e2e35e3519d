"""The command line every single benchmark shares: `python -m bench.<name> [common options]`."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from bench.config import BenchConfig, add_common_args, config_from_args
from bench.report import Section, save_section_data, write_report


def run_benchmark(
    description: str, run: Callable[[BenchConfig], Section], argv: list[str] | None = None
) -> None:
    """Parse the common options, run one benchmark, save its data and write its report."""
    parser = argparse.ArgumentParser(description=description)
    add_common_args(parser)
    cfg = config_from_args(parser.parse_args(argv))
    section = run(cfg)
    save_section_data(cfg.out_dir, section)
    print(write_report(cfg.out_dir, [section], cfg.quick))
