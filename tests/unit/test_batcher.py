"""The micro-batcher with a fake run_batch that records what it saw. Batch formation is proven
without timing: a gate holds the inference thread while items queue, and a huge max wait means
"only a full batch may run". Short sleeps appear only where a test asserts that something has
NOT happened; they can never make a test pass that should fail."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence

import pytest

from service.errors import DeadlineExceeded, Draining, InferenceFailed, Overloaded
from service.inference.batcher import Done, DrainRate, MicroBatcher
from service.observability.logs import request_id_var
from service.observability.metrics import Metrics

pytestmark = pytest.mark.anyio
FAR = 1e6  # a deadline nobody reaches
HUGE_WAIT_S = 1e6


class FakeModel:
    """run_batch that records each batch and the thread it ran on, optionally held at a gate.
    Payload "boom" raises; payload "short" returns one output too few."""

    def __init__(self, gated: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.alone: list[bool] = []  # per batch: ran with nothing else in flight or queued
        self.threads: set[int] = set()
        self.entered = threading.Event()
        self.gate = threading.Event()
        if not gated:
            self.gate.set()

    def __call__(self, payloads: list[str], alone: bool = True) -> Sequence[str]:
        self.threads.add(threading.get_ident())
        self.batches.append(list(payloads))
        self.alone.append(alone)
        self.entered.set()
        self.gate.wait(timeout=30)
        if "boom" in payloads:
            raise ValueError("kaboom")
        outputs = [p.upper() for p in payloads]
        return outputs[:-1] if "short" in payloads else outputs

    @property
    def sizes(self) -> list[int]:
        return [len(b) for b in self.batches]

    @property
    def ran(self) -> set[str]:
        return {p for b in self.batches for p in b}

    async def wait_entered(self) -> None:
        await asyncio.to_thread(self.entered.wait, 10)
        self.entered.clear()


def make_batcher(
    model: FakeModel,
    max_batch_size: int = 4,
    max_wait_s: float = 0.0,
    capacity: int = 16,
    rate: float = 100.0,
    metrics: Metrics | None = None,
    streams: int = 1,
) -> MicroBatcher[str, str]:
    return MicroBatcher(
        model,
        max_batch_size=max_batch_size,
        max_wait_s=max_wait_s,
        capacity=capacity,
        metrics=metrics or Metrics(),
        initial_rate_per_s=rate,
        streams=streams,
    )


@pytest.fixture
async def gated() -> AsyncIterator[tuple[FakeModel, MicroBatcher[str, str]]]:
    model = FakeModel(gated=True)
    batcher = make_batcher(model)
    batcher.start()
    yield model, batcher
    model.gate.set()
    await batcher.stop()


def submit(
    batcher: MicroBatcher[str, str], payload: str, deadline: float = FAR
) -> asyncio.Task[Done[str]]:
    return asyncio.create_task(batcher.submit(payload, time.monotonic() + deadline))


def submit_as(
    batcher: MicroBatcher[str, str], payload: str, request_id: str
) -> asyncio.Task[Done[str]]:
    """submit, from a task whose request id (as the HTTP middleware sets it) is ``request_id``."""

    async def run() -> Done[str]:
        request_id_var.set(request_id)  # the task's own copy of the context
        return await batcher.submit(payload, time.monotonic() + FAR)

    return asyncio.create_task(run())


async def settle() -> None:
    """Let every ready task run up to its next suspension point."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_each_caller_gets_its_own_output_in_order() -> None:
    model = FakeModel()
    batcher = make_batcher(model, max_batch_size=8, capacity=32)
    batcher.start()
    results = await asyncio.gather(*(submit(batcher, f"p{i}") for i in range(20)))
    assert [r.output for r in results] == [f"P{i}" for i in range(20)]
    assert all(1 <= r.batch_size <= 8 for r in results)
    assert sum(model.sizes) == 20
    await batcher.stop()


async def test_with_a_huge_wait_a_batch_runs_only_when_full() -> None:
    model = FakeModel()
    batcher = make_batcher(model, max_batch_size=4, max_wait_s=HUGE_WAIT_S)
    batcher.start()
    first = [submit(batcher, f"p{i}") for i in range(3)]
    await asyncio.sleep(0.05)
    assert not any(t.done() for t in first)
    assert model.batches == []
    last = submit(batcher, "p3")
    results = await asyncio.gather(*first, last)
    assert model.batches == [["p0", "p1", "p2", "p3"]]
    assert {r.batch_size for r in results} == {4}
    await batcher.stop()


async def test_opportunistic_batches_take_what_queued_while_the_worker_was_busy(
    gated: tuple[FakeModel, MicroBatcher[str, str]],
) -> None:
    model, batcher = gated
    head = submit(batcher, "head")
    await model.wait_entered()  # the worker is busy with a batch of one
    rest = [submit(batcher, f"p{i}") for i in range(5)]
    await settle()
    assert batcher.depth == 5
    model.gate.set()
    await asyncio.gather(head, *rest)
    assert model.sizes == [1, 4, 1]  # max_batch_size 4: the 5 queued split 4 + 1
    assert model.batches[1] == ["p0", "p1", "p2", "p3"]  # FIFO


async def test_only_the_allowed_batch_sizes_run_largest_first() -> None:
    model = FakeModel(gated=True)
    batcher = MicroBatcher(
        model, max_batch_size=4, max_wait_s=0, capacity=16, metrics=Metrics(), batch_sizes=[1, 2, 4]
    )
    batcher.start()
    head = submit(batcher, "head")
    await model.wait_entered()
    rest = [submit(batcher, f"p{i}") for i in range(7)]
    await settle()
    model.gate.set()
    await asyncio.gather(head, *rest)
    assert model.sizes == [1, 4, 2, 1]  # 7 queued: 4, then 3 -> 2, then 1
    await batcher.stop()


def test_batch_sizes_must_include_one_and_the_maximum() -> None:
    with pytest.raises(ValueError, match="from 1 to max_batch_size"):
        MicroBatcher(
            FakeModel(),
            max_batch_size=4,
            max_wait_s=0,
            capacity=4,
            metrics=Metrics(),
            batch_sizes=[2, 4],
        )


async def test_all_batches_run_on_one_dedicated_thread() -> None:
    model = FakeModel()
    batcher = make_batcher(model, max_batch_size=2)
    batcher.start()
    for i in range(5):
        await submit(batcher, f"p{i}")
    assert len(model.threads) == 1
    assert threading.get_ident() not in model.threads
    await batcher.stop()


class MeetingModel(FakeModel):
    """run_batch that returns only once ``parties`` batches are inside it at the same time: with
    fewer streams than parties it times out and fails, so passing proves batches ran together."""

    def __init__(self, parties: int, timeout_s: float = 5.0) -> None:
        super().__init__()
        self.barrier = threading.Barrier(parties, timeout=timeout_s)

    def __call__(self, payloads: list[str], alone: bool = True) -> Sequence[str]:
        outputs = super().__call__(payloads, alone)
        self.barrier.wait()
        return outputs


async def test_with_two_streams_two_batches_run_at_once_on_two_threads() -> None:
    model = MeetingModel(parties=2)
    batcher = make_batcher(model, streams=2)
    batcher.start()
    results = await asyncio.gather(submit(batcher, "a"), submit(batcher, "b"))
    assert [r.output for r in results] == ["A", "B"]
    assert len(model.threads) == 2
    await batcher.stop()


async def test_with_one_stream_batches_never_overlap() -> None:
    model = MeetingModel(parties=2, timeout_s=0.5)  # passes only two batches at once
    batcher = make_batcher(model, max_batch_size=1, streams=1)
    batcher.start()
    # Two batches of one: with two streams both would meet and succeed (the test above); with
    # one, the first waits alone until the barrier breaks and the second finds it broken.
    results = await asyncio.gather(
        submit(batcher, "a"), submit(batcher, "b"), return_exceptions=True
    )
    assert [type(r) for r in results] == [InferenceFailed, InferenceFailed]
    assert model.sizes == [1, 1]
    await batcher.stop()


def _wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


async def test_a_batch_runs_alone_only_when_nothing_else_runs_or_waits() -> None:
    model = FakeModel()
    batcher = make_batcher(model, max_batch_size=4, streams=2)
    batcher.start()
    await submit(batcher, "lone")
    # Four at once: the first stream takes two while two still wait, the second starts while
    # the first runs: neither has the machine to itself.
    await asyncio.gather(*(submit(batcher, f"p{i}") for i in range(4)))
    assert model.alone == [True, False, False]
    await batcher.stop()


async def test_what_is_queued_is_shared_between_the_free_streams() -> None:
    model = FakeModel()
    batcher = make_batcher(model, max_batch_size=4, streams=2)
    batcher.start()
    # All four are queued before the loop runs: two free streams take two each, side by side,
    # rather than one batch of four while the other stream idles.
    results = await asyncio.gather(*(submit(batcher, f"p{i}") for i in range(4)))
    assert sorted(model.sizes) == [2, 2]
    assert [r.output for r in results] == ["P0", "P1", "P2", "P3"]
    await batcher.stop()


async def test_stop_fails_the_callers_of_every_batch_in_flight() -> None:
    model = FakeModel(gated=True)
    batcher = make_batcher(model, max_batch_size=1, streams=2)
    batcher.start()
    first, second = submit(batcher, "first"), submit(batcher, "second")
    await asyncio.to_thread(_wait_for, lambda: len(model.batches) == 2)  # both held at the gate
    stopping = asyncio.create_task(batcher.stop())
    await settle()
    model.gate.set()
    await stopping
    for task in (first, second):
        with pytest.raises(Draining):
            await task
    assert len(model.threads) == 2


async def test_an_expired_item_raises_504_and_never_runs(
    gated: tuple[FakeModel, MicroBatcher[str, str]],
) -> None:
    model, batcher = gated
    head = submit(batcher, "head")
    await model.wait_entered()
    with pytest.raises(DeadlineExceeded):
        await batcher.submit("late", time.monotonic() + 0.05)
    assert batcher.depth == 0  # its slot is freed at once
    model.gate.set()
    await head
    after = await submit(batcher, "after")
    assert after.output == "AFTER"
    assert "late" not in model.ran


async def test_an_item_submitted_past_its_deadline_is_refused_and_never_runs() -> None:
    model = FakeModel()
    batcher = make_batcher(model)
    batcher.start()
    with pytest.raises(DeadlineExceeded):
        await batcher.submit("stale", time.monotonic() - 1.0)
    await submit(batcher, "fresh")
    assert model.ran == {"fresh"}
    await batcher.stop()


async def test_a_cancelled_caller_is_dropped_before_its_item_runs(
    gated: tuple[FakeModel, MicroBatcher[str, str]],
) -> None:
    model, batcher = gated
    head = submit(batcher, "head")
    await model.wait_entered()
    gone = submit(batcher, "gone")
    stays = submit(batcher, "stays")
    await settle()
    assert batcher.depth == 2
    gone.cancel()
    await settle()
    assert gone.cancelled()
    assert batcher.depth == 1  # left the queue at once, not when its batch would have formed
    model.gate.set()
    assert (await stays).output == "STAYS"
    await head
    assert model.batches == [["head"], ["stays"]]


async def test_a_full_queue_refuses_with_retry_after_from_the_drain_rate() -> None:
    model = FakeModel(gated=True)
    batcher = make_batcher(model, capacity=3, rate=2.0)  # 2 images/s before any measurement
    batcher.start()
    head = submit(batcher, "head")
    await model.wait_entered()
    queued = [submit(batcher, f"q{i}") for i in range(3)]
    await settle()
    with pytest.raises(Overloaded) as refused:
        await batcher.submit("extra", time.monotonic() + FAR)
    assert refused.value.status == 503
    assert refused.value.retry_after_s == 2  # ceil(3 queued / 2 per s)
    assert refused.value.headers() == {"Retry-After": "2"}
    model.gate.set()
    await asyncio.gather(head, *queued)
    assert "extra" not in model.ran
    await batcher.stop()


async def test_a_failing_batch_fails_only_its_callers_and_the_loop_goes_on(
    gated: tuple[FakeModel, MicroBatcher[str, str]],
) -> None:
    model, batcher = gated
    head = submit(batcher, "head")
    await model.wait_entered()
    doomed = [submit(batcher, "a"), submit(batcher, "boom")]
    await settle()
    model.gate.set()
    await head
    for task in doomed:
        with pytest.raises(InferenceFailed) as failed:
            await task
        assert failed.value.message == "inference failed"
    later = await asyncio.gather(submit(batcher, "x"), submit(batcher, "y"))
    assert [d.output for d in later] == ["X", "Y"]
    assert batcher.alive


async def test_the_exception_text_goes_to_the_log_once_and_never_to_the_callers(
    gated: tuple[FakeModel, MicroBatcher[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    model, batcher = gated
    head = submit(batcher, "head")
    await model.wait_entered()
    doomed = [submit_as(batcher, "a", "req-a"), submit_as(batcher, "boom", "req-b")]
    await settle()
    with caplog.at_level(logging.ERROR, logger="service.inference.batcher"):
        model.gate.set()
        await head
        errors = await asyncio.gather(*doomed, return_exceptions=True)
    for error in errors:
        assert isinstance(error, InferenceFailed)
        assert (error.code, error.message) == ("inference_failed", "inference failed")
        assert "kaboom" not in str(error)
        assert "ValueError" not in str(error)
    [record] = [r for r in caplog.records if r.name == "service.inference.batcher"]  # logged once
    assert record.getMessage() == "batch of 2 failed; requests: req-a, req-b"
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ValueError)
    assert "ValueError: kaboom" in caplog.text  # type, message and traceback
    assert "Traceback" in caplog.text


async def test_outputs_of_the_wrong_length_fail_the_batch_not_the_loop(
    gated: tuple[FakeModel, MicroBatcher[str, str]],
) -> None:
    model, batcher = gated
    head = submit(batcher, "head")
    await model.wait_entered()
    doomed = [submit(batcher, "a"), submit(batcher, "short")]
    await settle()
    model.gate.set()
    await head
    for task in doomed:
        with pytest.raises(InferenceFailed, match="1 outputs for 2 inputs"):
            await task
    assert (await submit(batcher, "z")).output == "Z"


async def test_stop_fails_what_is_queued_joins_the_thread_and_refuses_new_items() -> None:
    model = FakeModel(gated=True)
    batcher = make_batcher(model)
    batcher.start()
    head = submit(batcher, "head")
    await model.wait_entered()
    queued = submit(batcher, "queued")
    await settle()
    stopping = asyncio.create_task(batcher.stop())
    await settle()
    model.gate.set()  # stop() waits for the running batch's thread to return
    await stopping
    for task in (head, queued):
        with pytest.raises(Draining):
            await task
    assert "queued" not in model.ran
    with pytest.raises(Draining):
        await batcher.submit("late", time.monotonic() + FAR)
    await batcher.stop()  # idempotent
    assert not batcher.alive


async def test_metrics_report_depth_age_and_batch_sizes() -> None:
    model = FakeModel(gated=True)
    metrics = Metrics()
    batcher = make_batcher(model, metrics=metrics)
    batcher.start()
    head = submit(batcher, "head")
    await model.wait_entered()
    queued = [submit(batcher, "a"), submit(batcher, "b")]
    await settle()
    registry = metrics.registry
    assert registry.get_sample_value("imgcls_queue_depth") == 2
    age = registry.get_sample_value("imgcls_queue_oldest_age_seconds")
    assert age is not None
    assert age > 0
    model.gate.set()
    await asyncio.gather(head, *queued)
    assert registry.get_sample_value("imgcls_queue_depth") == 0
    assert registry.get_sample_value("imgcls_queue_oldest_age_seconds") == 0
    assert registry.get_sample_value("imgcls_batch_size_count") == 2
    assert registry.get_sample_value("imgcls_batch_size_sum") == 3
    assert registry.get_sample_value("imgcls_queue_wait_seconds_count") == 3
    await batcher.stop()


def test_drain_rate_retry_after_is_ceil_and_at_least_one() -> None:
    rate = DrainRate(initial_per_s=10.0)
    assert rate.retry_after_s(0) == 1
    assert rate.retry_after_s(10) == 1
    assert rate.retry_after_s(11) == 2
    rate.observe(images=1, seconds=1.0)  # 1/s pulls the average down by 20 % of the gap
    assert rate.per_s == pytest.approx(8.2)
    assert rate.retry_after_s(64) == 8


def test_invalid_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        make_batcher(FakeModel(), max_batch_size=0)
