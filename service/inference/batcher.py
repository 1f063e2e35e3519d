"""The micro-batcher: a bounded asyncio queue, one loop that forms batches, and dedicated
inference threads that run them: ``streams`` of them, one batch each in flight (an engine with
several streams, OpenVINO's THROUGHPUT configuration, runs them side by side at less CPU per
image than one batch spread over every core). It knows nothing about images or models: it
batches payloads for a plain ``run_batch(payloads) -> outputs`` callable, which must be safe to
call from ``streams`` threads at once.

Batch formation (Ray Serve's rule): block until a stream is free and the first item arrives,
then take more until the batch is full or ``max_wait_s`` has passed since that first item; with
``max_wait_s == 0`` take only what is already queued (opportunistic: no stream is kept waiting).
What is queued is shared between the free streams, so two free streams run two half batches
side by side rather than one full batch while the other idles.

Guarantees, each tested:
- an item whose caller went away (its future is cancelled) or whose deadline passed is dropped
  before it runs, and never costs inference time;
- a future is resolved only if it is not done, so a late result never overwrites a cancellation;
- ``run_batch`` must return one output per payload, in order; anything else fails that batch;
- an exception in ``run_batch`` fails only that batch's callers, and the loop goes on; it is
  logged once, with its traceback and the request ids of the batch, and its text never reaches
  a caller (it may name model nodes, shapes and paths): they get a fixed InferenceFailed;
- a full queue refuses at once (Overloaded) with a Retry-After from the measured drain rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from service.errors import (
    DeadlineExceeded,
    Draining,
    ImgclsError,
    InferenceFailed,
    NotReady,
    Overloaded,
)
from service.observability.logs import request_id_var
from service.observability.metrics import Metrics
from service.observability.tracing import RequestSpan, Served, record_batch
from service.observability.tracing import current as current_span

log = logging.getLogger(__name__)

P = TypeVar("P")  # payload
R = TypeVar("R")  # one output
# run_batch(payloads, alone): ``alone`` is True when no other batch runs or waits, so the
# engine may give this one every thread.
RunBatch = Callable[[list[P], bool], Sequence[R]]

# Weight of the newest batch in the drain-rate average: about the last 10 batches count.
_EWMA_ALPHA = 0.2


# Why a batcher can no longer serve (fault()): fixed, public strings (readiness, liveness).
LOOP_ENDED = "failed: the batcher stopped"
INFERENCE_STALLED = "failed: inference stalled"


@dataclass(frozen=True, slots=True)
class Done(Generic[R]):
    """One item's output and where its time went."""

    output: R
    queue_s: float  # enqueued -> its batch started
    inference_s: float  # run time of its batch
    batch_size: int


@dataclass(slots=True, eq=False)  # identity equality: deque.remove must not compare arrays
class _Item(Generic[P, R]):
    payload: P
    future: asyncio.Future[Done[R]]
    deadline: float  # time.monotonic() seconds
    request_id: str | None = None  # the submitter's, for the log line of a failed batch
    enqueued_at: float = field(default_factory=time.monotonic)
    request_span: RequestSpan | None = field(default_factory=current_span)  # when traced


class DrainRate:
    """EWMA of images per second of inference, to tell a refused caller when to come back."""

    def __init__(self, initial_per_s: float) -> None:
        self.per_s = max(initial_per_s, 1e-3)

    def observe(self, images: int, seconds: float) -> None:
        if seconds > 0:
            self.per_s += _EWMA_ALPHA * (images / seconds - self.per_s)

    def retry_after_s(self, queued: int) -> int:
        """Seconds until ``queued`` images are drained, rounded up, at least 1."""
        return max(1, math.ceil(queued / self.per_s))


class MicroBatcher(Generic[P, R]):
    def __init__(
        self,
        run_batch: RunBatch[P, R],
        *,
        max_batch_size: int,
        max_wait_s: float,
        capacity: int,
        metrics: Metrics,
        initial_rate_per_s: float = 100.0,
        batch_sizes: Sequence[int] | None = None,
        thread_initializer: Callable[[], None] | None = None,
        streams: int = 1,
    ) -> None:
        """``batch_sizes``: the only sizes run (the warmed ones); a batch takes the largest that
        fits what is queued, the rest waits for the next batch. None: every size 1..max.
        ``streams``: batches in flight at once, each on its own inference thread."""
        if max_batch_size < 1 or capacity < 1 or max_wait_s < 0 or streams < 1:
            raise ValueError("max_batch_size, capacity, streams must be >= 1, max_wait_s >= 0")
        sizes = sorted(set(batch_sizes or range(1, max_batch_size + 1)))
        if sizes[0] != 1 or sizes[-1] != max_batch_size:
            raise ValueError(f"batch_sizes must run from 1 to max_batch_size, got {sizes}")
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self._sizes = sizes
        self._max_wait_s = max_wait_s
        self._capacity = capacity
        self._metrics = metrics
        self.drain_rate = DrainRate(initial_rate_per_s)
        self._queue: deque[_Item[P, R]] = deque()
        self._arrived = asyncio.Event()  # set whenever an item is appended
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self.streams = streams
        self._free = asyncio.Semaphore(streams)  # streams without a batch
        self._in_flight: dict[asyncio.Task[None], float] = {}  # running batch -> its start
        # One thread per stream, for the life of the batcher: a thread per batch in flight
        # and no more keeps the CPU budget predictable.
        self._executor = ThreadPoolExecutor(
            max_workers=streams,
            thread_name_prefix="imgcls-inference",
            initializer=thread_initializer,
        )
        metrics.queue_depth.set_function(lambda: len(self._queue))
        metrics.oldest_queued_age.set_function(self._oldest_age_s)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")
            self._task.add_done_callback(self._ended)

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    def fault(self, stall_limit_s: float) -> str | None:
        """Why this batcher can no longer serve, or None: its loop has ended without stop(),
        or an inference thread has been inside one batch for more than ``stall_limit_s``
        (a hung runtime never returns, and a thread cannot be killed: only a restart helps).
        Fixed strings, for readiness and liveness."""
        if self._task is not None and self._task.done() and not self._closed:
            return LOOP_ENDED
        started = min(self._in_flight.values(), default=None)
        if started is not None and time.monotonic() - started > stall_limit_s:
            return INFERENCE_STALLED
        return None

    def _ended(self, task: asyncio.Task[None]) -> None:
        """The loop ended. After stop() that is the plan; otherwise it is a bug, and nobody
        would ever run what is queued: answer those callers now rather than at their deadline."""
        if self._closed:
            return
        log.critical("the batcher loop ended unexpectedly; failing %d queued", len(self._queue))
        while self._queue:
            _fail(self._queue.popleft(), InferenceFailed("the inference loop has stopped"))

    async def stop(self) -> None:
        """Refuse new items, fail what is still queued (Draining), end the loop, join the thread.
        Idempotent. Call after draining: whatever is still queued now would otherwise hang."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        running = list(self._in_flight)  # each fails its callers with Draining when cancelled
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        while self._queue:
            _fail(self._queue.popleft(), Draining("the server stopped before this image ran"))
        # shutdown(wait=True) blocks until a running batch returns: not on the event loop.
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    # -- callers -----------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        return len(self._queue)

    async def submit(self, payload: P, deadline: float) -> Done[R]:
        """Queue ``payload`` and wait for its output until ``deadline`` (time.monotonic()).
        Raises Overloaded, Draining, DeadlineExceeded or the batch's InferenceFailed. If the
        caller is cancelled, the item leaves the queue at once and is never run."""
        if self._closed:
            raise Draining("the batcher is stopped")
        if not self.alive:  # readiness and liveness say so too: the pod is being replaced
            raise NotReady("the inference loop has stopped", retry_after_s=1)
        if len(self._queue) >= self._capacity:
            raise Overloaded(
                f"the queue is full ({self._capacity} images)",
                retry_after_s=self.drain_rate.retry_after_s(len(self._queue)),
            )
        future: asyncio.Future[Done[R]] = asyncio.get_running_loop().create_future()
        item: _Item[P, R] = _Item(payload, future, deadline, request_id_var.get())
        self._queue.append(item)
        self._arrived.set()
        try:
            # On timeout and on cancellation of this task the future is cancelled, so the loop
            # skips the item. asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a
            # cancellation that races with the future's completion.
            async with asyncio.timeout(deadline - time.monotonic()):
                return await item.future
        except TimeoutError:
            raise DeadlineExceeded(
                "the request timed out before its image was classified"
            ) from None
        finally:
            self._discard(item)

    def _discard(self, item: _Item[P, R]) -> None:
        """Free the queue slot of an item whose caller stopped waiting (cancelled or timed out)."""
        if item.future.done() and not _succeeded(item):
            with contextlib.suppress(ValueError):
                self._queue.remove(item)

    def _oldest_age_s(self) -> float:
        try:
            return time.monotonic() - self._queue[0].enqueued_at
        except IndexError:
            return 0.0

    # -- the loop ----------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            await self._free.acquire()
            started = False
            items: list[_Item[P, R]] = []
            try:
                items = await self._next_batch()
                live = self._admit(items)
                if live:
                    self._start(live, alone=not self._in_flight and not self._queue)
                    started = True
            except Exception:  # a bug here must not kill the loop and strand every caller
                log.exception("batcher loop error; failing this batch and going on")
                for item in items:
                    _fail(item, InferenceFailed("internal error while batching"))
            finally:
                if not started:
                    self._free.release()

    def _start(self, items: list[_Item[P, R]], alone: bool) -> None:
        """Run ``items`` on a free stream; the stream is freed when the batch is over."""
        task = asyncio.get_running_loop().create_task(self._run(items, alone), name="batch")
        self._in_flight[task] = time.monotonic()
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        del self._in_flight[task]
        self._free.release()

    async def _next_batch(self) -> list[_Item[P, R]]:
        """Block for the first item, then fill until full or the wait from the first is over.
        Take this stream's share of what is queued: all of it when it is the only free one."""
        while not self._queue:
            self._arrived.clear()
            await self._arrived.wait()
        fill_until = time.monotonic() + self._max_wait_s
        while len(self._queue) < self.max_batch_size and self._max_wait_s > 0:
            remaining = fill_until - time.monotonic()
            if remaining <= 0:
                break
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()
        free = self.streams - len(self._in_flight)  # this one included
        share = max(1, -(-len(self._queue) // free))  # ceil(queued / free streams)
        count = max(n for n in self._sizes if n <= min(share, len(self._queue)))
        return [self._queue.popleft() for _ in range(count)]

    def _admit(self, items: list[_Item[P, R]]) -> list[_Item[P, R]]:
        """Drop items nobody waits for any more, and expired ones, BEFORE they cost a run."""
        now = time.monotonic()
        live = []
        for item in items:
            if item.future.done():
                continue
            if now >= item.deadline:
                _fail(item, DeadlineExceeded("the request timed out while queued"))
                continue
            live.append(item)
        return live

    async def _run(self, items: list[_Item[P, R]], alone: bool) -> None:
        started = time.monotonic()
        for item in items:
            self._metrics.queue_wait.observe(started - item.enqueued_at)
        payloads = [item.payload for item in items]
        loop = asyncio.get_running_loop()
        try:
            outputs = await loop.run_in_executor(self._executor, self._run_batch, payloads, alone)
            _check_outputs(outputs, len(items))
        except asyncio.CancelledError:  # stop(): the batch's callers hear why, at once
            for item in items:
                _fail(item, Draining("the server stopped while this image was running"))
            raise
        except Exception as exc:
            # The one place the detail goes: type, message and traceback, with the requests
            # it failed. The callers get only a fixed message (their request ids are added by
            # the HTTP layer), never the exception's text.
            requests = ", ".join(item.request_id or "-" for item in items)
            log.exception("batch of %d failed; requests: %s", len(items), requests)
            error = exc if isinstance(exc, ImgclsError) else InferenceFailed("inference failed")
            for item in items:
                _fail(item, error)
            _trace(items, started, time.monotonic(), exc)
            return
        inference_s = time.monotonic() - started
        self._observe(len(items), inference_s)
        for item, output in zip(items, outputs, strict=True):
            done = Done(output, started - item.enqueued_at, inference_s, len(items))
            _resolve(item, done)
        _trace(items, started, started + inference_s)

    def _observe(self, size: int, inference_s: float) -> None:
        # Streams drain side by side: when callers are refused every stream is busy, so the
        # rate that matters for their Retry-After is one batch's rate times the streams.
        self.drain_rate.observe(size * self.streams, inference_s)
        self._metrics.batch_size.observe(size)
        self._metrics.inference_duration.observe(inference_s)


def _trace(
    items: list[_Item[P, R]], started: float, ended: float, error: Exception | None = None
) -> None:
    """The batch's spans, when any of its requests is traced (service/observability/tracing.py)."""
    if any(item.request_span is not None for item in items):
        served = [Served(item.request_span, item.enqueued_at) for item in items]
        record_batch(served, started, ended, error)


def _check_outputs(outputs: Sequence[object], expected: int) -> None:
    """The worker contract (mosec): one output per input, in order. A short or long answer
    would hand one caller another caller's result."""
    if len(outputs) != expected:
        raise InferenceFailed(f"the model returned {len(outputs)} outputs for {expected} inputs")


def _succeeded(item: _Item[P, R]) -> bool:
    return not item.future.cancelled() and item.future.exception() is None


def _resolve(item: _Item[P, R], done: Done[R]) -> None:
    if not item.future.done():
        item.future.set_result(done)


def _fail(item: _Item[P, R], error: BaseException) -> None:
    if not item.future.done():
        item.future.set_exception(error)
