"""How load is offered. Closed loop: N users, each sending its next request when its last one
is answered (throughput and latency against concurrency). Open loop: Poisson arrivals at a
fixed rate, each request timed from its SCHEDULED send, so a slow server cannot hide its queue
(latency against offered load). Both in this process on a ``Post``; or, for the benchmarks
whose figures the generator's own CPU would spoil, the C generator in a child process
(``generator``)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

from bench.loadgen.http1 import RawSender
from bench.loadgen.native import NativeGenerator, build
from bench.loadgen.outcomes import Mode, Outcome, Post, Step, StepResult, measure_step


@contextlib.contextmanager
def no_collector_pauses() -> Iterator[None]:
    """No cyclic garbage collection during a step: a full collection of the client's heap
    takes ~53-80 ms (measured in bench.overload's client), and a request scheduled meanwhile
    would be charged to the server. A step's garbage is mostly freed by reference
    counting; the cycles it leaves wait until the step ends."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


async def closed_loop(post: Post, bodies: Sequence[bytes], users: int, duration_s: float) -> Step:
    """``users`` concurrent users, each sending its next body when its last one is answered."""
    outcomes: list[Outcome] = []
    start = time.perf_counter()
    stop = start + duration_s

    async def user(index: int) -> None:
        while time.perf_counter() < stop:
            body = bodies[index % len(bodies)]
            index += users
            outcomes.append(await post(body, time.perf_counter()))

    with no_collector_pauses():
        await asyncio.gather(*(user(i) for i in range(users)))
    return outcomes, time.perf_counter() - start, 0


def closed_step(url: str, bodies: Sequence[bytes], users: int, duration_s: float) -> StepResult:
    """One measured closed-loop step from this process: ``users`` users POSTing ``bodies`` as
    raw HTTP/1.1 to ``url`` for ``duration_s``, on a sender of their own."""

    async def step() -> StepResult:
        sender = RawSender(url, users)
        try:
            run = closed_loop(sender.post, bodies, users, duration_s)
            return await measure_step(run, "closed", concurrency=users)
        finally:
            await sender.aclose()

    return asyncio.run(step())


async def open_loop(
    post: Post,
    bodies: Sequence[bytes],
    rate: float,
    duration_s: float,
    max_outstanding: int,
    seed: int = 0,
) -> Step:
    """Poisson arrivals (seeded), each request timed from its scheduled send time."""
    arrivals = random.Random(seed)
    outcomes: list[Outcome] = []
    dropped = 0
    in_flight: set[asyncio.Task[None]] = set()

    async def send(body: bytes, scheduled: float) -> None:
        outcomes.append(await post(body, scheduled))

    with no_collector_pauses():
        start = time.perf_counter()
        scheduled, index = start, 0
        while scheduled < start + duration_s:
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(in_flight) >= max_outstanding:
                dropped += 1
            else:
                task = asyncio.create_task(send(bodies[index % len(bodies)], scheduled))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            index += 1
            scheduled += arrivals.expovariate(rate)
        await asyncio.gather(*in_flight)
    return outcomes, time.perf_counter() - start, dropped


class Generator(Protocol):
    """Steps against one URL with one set of bodies, in either loop; ``cpu_s`` is its own CPU
    over every step so far."""

    about: str
    cpu_s: float

    async def step(
        self, mode: Mode, amount: float, duration_s: float, max_outstanding: int
    ) -> Step: ...

    async def aclose(self) -> None: ...


class PythonGenerator:
    """RawSender with the closed and open loops above, in this process."""

    about = RawSender.about

    def __init__(self, url: str, bodies: list[bytes]) -> None:
        self.sender = RawSender(url, 512)
        self.bodies = bodies
        self.cpu_s = 0.0

    async def step(
        self, mode: Mode, amount: float, duration_s: float, max_outstanding: int
    ) -> Step:
        started = time.process_time()
        try:
            if mode == "closed":
                return await closed_loop(self.sender.post, self.bodies, int(amount), duration_s)
            return await open_loop(
                self.sender.post, self.bodies, amount, duration_s, max_outstanding
            )
        finally:
            self.cpu_s += time.process_time() - started

    async def aclose(self) -> None:
        await self.sender.aclose()


def generator(build_dir: Path, url: str, bodies: list[bytes]) -> Generator:
    """The C generator where a C compiler builds it (into ``build_dir``), unless
    IMGCLS_BENCH_LOADGEN=python; the Python one otherwise."""
    if os.environ.get("IMGCLS_BENCH_LOADGEN", "native") != "python":
        exe = build(build_dir)
        if exe is not None:
            return NativeGenerator(exe, url, bodies)
    return PythonGenerator(url, bodies)
