"""``python -m bench.loadgen``: load steps against a running service's POST /v1/classify, real
JPEGs cycled; closed loop at each concurrency, then open loop at each rate, after an unrecorded
warm-up. A table, or JSON (``--json``; bench.servers reads it from a child process).

    python -m bench.loadgen --url http://127.0.0.1:8000 --concurrency 1 4 16 64 --duration 10
    python -m bench.loadgen --url http://127.0.0.1:8000 --rate 50 100 200 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict
from pathlib import Path

from bench.config import load_jpegs
from bench.loadgen.http1 import CLASSIFY_PATH, SENDERS
from bench.loadgen.loops import closed_loop, open_loop
from bench.loadgen.outcomes import STEP_HEADERS, StepResult, measure_step, step_row
from bench.report import table
from service import paths


async def run_steps(args: argparse.Namespace, max_outstanding: int = 512) -> list[StepResult]:
    """The steps the command line asks for: closed loop at each concurrency, then open loop at
    each rate, after an unrecorded warm-up."""
    bodies = bodies_in(args.bodies) if args.bodies else load_jpegs(args.data_dir, args.images)
    concurrencies: list[int] = args.concurrency or ([] if args.rate else [1, 4, 16, 64])
    url = args.url.rstrip("/") + CLASSIFY_PATH
    connections = max([max_outstanding if args.rate else 1, *concurrencies])
    sender = SENDERS[args.client](url, connections, content_type=args.content_type)
    try:
        if args.warmup > 0:  # not recorded: connections, caches, the server's first batches
            await closed_loop(sender.post, bodies, max([4, *concurrencies][:2]), args.warmup)
        results = []
        for c in concurrencies:
            step = closed_loop(sender.post, bodies, c, args.duration)
            results.append(await measure_step(step, "closed", concurrency=c))
        for rate in args.rate:
            step = open_loop(sender.post, bodies, rate, args.duration, max_outstanding)
            results.append(await measure_step(step, "open", rate=rate))
        return results
    finally:
        await sender.aclose()


def bodies_in(folder: Path) -> list[bytes]:
    """Every file of ``folder``, in name order, sent as it is (bench.phone's photos)."""
    return [path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()]


def main() -> None:
    parser = argparse.ArgumentParser(description="HTTP load generator for POST /v1/classify")
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--concurrency", type=int, nargs="*", default=[])
    parser.add_argument("--rate", type=float, nargs="*", default=[], help="offered req/s")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per step")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds, not recorded")
    parser.add_argument("--images", type=int, default=64, help="distinct JPEGs to cycle")
    parser.add_argument("--data-dir", type=Path, default=paths.data_dir(), help=paths.DATA_DIR_ENV)
    parser.add_argument("--bodies", type=Path, help="send these files instead (a folder)")
    parser.add_argument("--content-type", default="image/jpeg", help="of every request")
    parser.add_argument("--client", choices=sorted(SENDERS), default="httpx")
    parser.add_argument("--json", type=Path, help="write the results here ('-' for stdout)")
    args = parser.parse_args()
    results = asyncio.run(run_steps(args))
    payload = json.dumps([asdict(r) for r in results], indent=2) + "\n"
    if str(args.json) == "-":
        sys.stdout.write(payload)
        return
    if args.json:
        args.json.write_text(payload)
    print(table(STEP_HEADERS, [step_row(args.url, r) for r in results]))


if __name__ == "__main__":
    main()
