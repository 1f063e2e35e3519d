"""The C load generator (loadgen.c beside this file), driven from Python: compiled with the
system's C compiler, run as a child process for each step, its lines read back as Outcomes.

Why a second generator: on this 2-core machine the load generator takes CPU from the server it
measures. At 4x capacity the Python one (RawSender on asyncio) used ~0.10 cores, about 60 % of
it the interpreter and its event loop (perf); the C one sends the same requests, on the same
keep-alive connections, timed the same way, for ~0.05 cores, 0.043 of them system time (its
rusage): the kernel's TCP work for the uploads. bench.overload uses it when a C compiler is
there (IMGCLS_BENCH_LOADGEN=python chooses the Python one: bench.loadgen.loops.generator).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import resource
import shutil
import subprocess
import tempfile
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from bench.loadgen.outcomes import Mode, Outcome, Step

SOURCE = Path(__file__).parent / "loadgen.c"
# The generator's negative statuses, named as the Python sender names its exceptions.
ERRORS = {-1: "ConnectError", -2: "ConnectionClosed", -3: "BadResponse", -4: "NoAnswer"}


def build(build_dir: Path) -> Path | None:
    """The compiled generator in ``build_dir`` (built once per version of its source), or None
    where no C compiler is found."""
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        return None
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    exe = build_dir / f"loadgen-{digest}"
    if not exe.exists():
        build_dir.mkdir(parents=True, exist_ok=True)
        partial = exe.with_suffix(".partial")
        command = [compiler, "-O2", "-Wall", "-o", str(partial), str(SOURCE), "-lm"]
        subprocess.run(command, check=True, capture_output=True)
        partial.rename(exe)
    return exe


def parse(output: str) -> Step:
    """The generator's output: a line per request, then ``# elapsed_us dropped``."""
    *lines, last = output.splitlines() or [""]
    if not last.startswith("# "):
        raise ValueError(f"the load generator's output ended without its summary: {last!r}")
    elapsed_us, dropped = last[2:].split()
    outcomes = []
    for line in lines:
        status, latency_us, late_us, server_us = map(int, line.split())
        phases = {"total": server_us / 1000} if server_us >= 0 else {}
        named: int | str = status if status > 0 else ERRORS.get(status, f"error {status}")
        outcomes.append(Outcome(latency_us / 1000, named, phases, late_us / 1000))
    return outcomes, int(elapsed_us) / 1e6, int(dropped)


class NativeGenerator:
    """Steps against one URL with one set of bodies (written once to files for the child)."""

    about = "the C load generator (bench/loadgen/loadgen.c), HTTP/1.1 keep-alive"

    def __init__(self, exe: Path, url: str, bodies: Sequence[bytes]) -> None:
        parts = urllib.parse.urlsplit(url)
        self.exe = exe
        self.target = [parts.hostname or "127.0.0.1", str(parts.port or 80), parts.path or "/"]
        self._dir = tempfile.TemporaryDirectory(prefix="imgcls-loadgen-")
        self.files = []
        for index, body in enumerate(bodies):
            path = Path(self._dir.name) / f"{index}.jpg"
            path.write_bytes(body)
            self.files.append(str(path))
        self.cpu_s = 0.0  # the generator's CPU over every step so far

    async def step(
        self,
        mode: Mode,
        amount: float,  # arrivals per second (open) or users (closed)
        duration_s: float,
        max_outstanding: int,
        seed: int = 0,
    ) -> Step:
        args = [mode, repr(amount), repr(duration_s), str(seed), str(max_outstanding)]
        before = _children_cpu_s()
        proc = await asyncio.create_subprocess_exec(
            str(self.exe), *self.target, *args, *self.files,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        self.cpu_s += _children_cpu_s() - before
        if proc.returncode != 0:
            raise RuntimeError(f"the load generator failed ({proc.returncode}): {err.decode()}")
        return parse(out.decode())

    async def aclose(self) -> None:
        self._dir.cleanup()


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # of the children waited for
    return usage.ru_utime + usage.ru_stime
