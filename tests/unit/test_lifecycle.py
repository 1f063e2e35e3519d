"""The Lifecycle alone: its transitions (and the ones a late load must not undo), the fixed
readiness reasons, admission's three refusals with their Retry-After, the in-flight count and
drain. No model, no timing: held requests wait on events the test sets."""

from __future__ import annotations

import asyncio
import logging

import pytest

from service.errors import Draining, NotReady, Overloaded, Unavailable
from service.limits.admission import Ticket, holding
from service.limits.lifecycle import Lifecycle, State
from service.observability.metrics import Metrics

pytestmark = pytest.mark.anyio


def ready_gauge(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("imgcls_ready")


def refusal(life: Lifecycle) -> Unavailable:
    with pytest.raises(Unavailable) as refused, life.admit():
        pytest.fail("admitted")
    return refused.value


def test_the_happy_path_loading_warming_up_ready_draining_stopped() -> None:
    metrics = Metrics()
    life = Lifecycle(metrics, capacity=4)
    seen = [(life.state, life.reason(), ready_gauge(metrics))]
    life.warming_up()
    seen.append((life.state, life.reason(), ready_gauge(metrics)))
    assert life.ready(retry_after_s=lambda n: 1) is True
    seen.append((life.state, life.reason(), ready_gauge(metrics)))
    life.begin_drain()
    seen.append((life.state, life.reason(), ready_gauge(metrics)))
    life.stop()
    seen.append((life.state, life.reason(), ready_gauge(metrics)))
    assert seen == [
        (State.LOADING, "loading", 0),
        (State.WARMING_UP, "warming_up", 0),
        (State.READY, None, 1),
        (State.DRAINING, "draining", 0),
        (State.STOPPED, "stopped", 0),
    ]


def test_readiness_carries_the_reason_and_the_callers_details() -> None:
    life = Lifecycle(Metrics(), capacity=4)
    loading = life.readiness({"in_flight": 0})
    assert (loading.ready, loading.reason, loading.details) == (False, "loading", {"in_flight": 0})
    life.ready(retry_after_s=lambda n: 1)
    assert life.readiness({}).ready is True
    # Ready but the batcher is dead: readiness must not lie.
    dead = life.readiness({}, fault="failed: the batcher stopped")
    assert (dead.ready, dead.reason) == (False, "failed: the batcher stopped")


def test_a_failed_load_is_final_and_says_so_in_a_fixed_string() -> None:
    metrics = Metrics()
    life = Lifecycle(metrics, capacity=4)
    life.warming_up()
    life.failed()
    life.begin_drain()  # a SIGTERM after the failure does not hide it
    assert life.ready(retry_after_s=lambda n: 1) is False
    assert (life.state, life.reason(), ready_gauge(metrics)) == (
        State.FAILED,
        "model failed to load",
        0,
    )
    refused = refusal(life)
    assert (type(refused), refused.message) == (NotReady, "the model is not ready (failed)")


@pytest.mark.parametrize("during", [State.LOADING, State.WARMING_UP])
def test_a_drain_begun_during_start_up_is_not_undone_by_the_load(during: State) -> None:
    metrics = Metrics()
    life = Lifecycle(metrics, capacity=4)
    if during is State.WARMING_UP:
        life.warming_up()
    life.begin_drain()  # SIGTERM while the model loads
    life.warming_up()  # the load carries on...
    assert life.ready(retry_after_s=lambda n: 1) is False  # ...and finishes
    assert (life.state, life.reason(), ready_gauge(metrics)) == (State.DRAINING, "draining", 0)
    assert isinstance(refusal(life), Draining)


def test_stop_during_load_stays_stopped() -> None:
    metrics = Metrics()
    life = Lifecycle(metrics, capacity=4)
    life.stop()  # the lifespan ended before start() returned
    life.warming_up()
    assert life.ready(retry_after_s=lambda n: 1) is False
    assert (life.state, life.reason(), ready_gauge(metrics)) == (State.STOPPED, "stopped", 0)
    refused = refusal(life)
    assert (type(refused), refused.message) == (Draining, "the server is shutting down")


@pytest.mark.parametrize("state", [State.LOADING, State.WARMING_UP])
def test_not_ready_refuses_with_the_state_and_retry_after_1(state: State) -> None:
    life = Lifecycle(Metrics(), capacity=4)
    if state is State.WARMING_UP:
        life.warming_up()
    refused = refusal(life)
    assert type(refused) is NotReady
    assert refused.message == f"the model is not ready ({state.value})"
    assert refused.headers() == {"Retry-After": "1"}
    assert life.in_flight == 0  # a refusal is never counted


@pytest.mark.parametrize("stop", [False, True])
def test_draining_and_stopped_refuse_with_draining_and_retry_after_1(stop: bool) -> None:
    life = Lifecycle(Metrics(), capacity=4)
    life.ready(retry_after_s=lambda n: 99)
    if stop:
        life.stop()
    else:
        life.begin_drain()
    refused = refusal(life)
    assert type(refused) is Draining
    assert refused.message == "the server is shutting down"
    assert refused.headers() == {"Retry-After": "1"}


def test_over_capacity_is_overloaded_with_the_retry_after_of_the_ready_callback() -> None:
    life = Lifecycle(Metrics(), capacity=2)
    asked: list[int] = []

    def retry_after_s(in_flight: int) -> int:
        asked.append(in_flight)
        return 7

    life.ready(retry_after_s)
    with life.admit(), life.admit():
        assert life.in_flight == 2
        refused = refusal(life)
        assert life.in_flight == 2
    assert type(refused) is Overloaded
    assert refused.message == "2 images in flight, the limit is 2"
    assert refused.headers() == {"Retry-After": "7"}
    assert asked == [2]
    with life.admit():  # room again once they are answered
        assert life.in_flight == 1


def test_in_flight_is_released_when_the_call_fails() -> None:
    life = Lifecycle(Metrics(), capacity=2)
    life.ready(retry_after_s=lambda n: 1)
    with pytest.raises(ValueError, match="the call failed"), life.admit():
        raise ValueError("the call failed")
    assert life.in_flight == 0


async def drain_returns_at_once(life: Lifecycle) -> bool:
    """Whether drain() finds nothing in flight: then it completes within its task's first step,
    without waiting for its timeout."""
    draining = asyncio.create_task(life.drain(timeout_s=30))
    await asyncio.sleep(0)
    done = draining.done()
    draining.cancel()
    return done


async def test_a_cancelled_call_leaves_nothing_in_flight() -> None:
    life = Lifecycle(Metrics(), capacity=2)
    life.ready(retry_after_s=lambda n: 1)
    admitted = asyncio.Event()

    async def call() -> None:
        with life.admit():
            admitted.set()
            await asyncio.Event().wait()  # never answered: the caller goes away

    task = asyncio.create_task(call())
    await admitted.wait()
    assert life.in_flight == 1
    assert not await drain_returns_at_once(life)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert life.in_flight == 0
    assert await drain_returns_at_once(life)


async def test_drain_waits_for_every_admitted_call_and_refuses_new_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    life = Lifecycle(Metrics(), capacity=4)
    life.ready(retry_after_s=lambda n: 1)
    releases = [asyncio.Event() for _ in range(3)]

    async def call(release: asyncio.Event) -> None:
        with life.admit():
            await release.wait()

    calls = [asyncio.create_task(call(release)) for release in releases]
    await asyncio.sleep(0)  # each task runs to its first await: all three are admitted
    assert life.in_flight == 3
    life.begin_drain()
    draining = asyncio.create_task(life.drain(timeout_s=30))
    for release, held in zip(releases, calls, strict=True):
        await asyncio.sleep(0)
        assert not draining.done(), f"drain returned with {life.in_flight} calls in flight"
        assert isinstance(refusal(life), Draining)
        release.set()
        await held
    with caplog.at_level(logging.WARNING, logger="service.limits.lifecycle"):
        await draining
    assert life.in_flight == 0
    assert "drain timed out" not in caplog.text  # it returned because the last call ended


async def test_drain_gives_up_at_its_timeout_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    life = Lifecycle(Metrics(), capacity=4)
    life.ready(retry_after_s=lambda n: 1)
    with caplog.at_level(logging.WARNING, logger="service.limits.lifecycle"), life.admit():
        await life.drain(timeout_s=0)  # one call never answered
    assert "drain timed out after 0.0 s with 1 in flight" in caplog.text


# -- tickets: a place held by a complete request not admitted yet (service/limits/admission.py)


def ready_life(capacity: int) -> Lifecycle:
    life = Lifecycle(Metrics(), capacity=capacity)
    life.ready(retry_after_s=lambda n: n)
    return life


def taken(life: Lifecycle) -> Ticket:
    ticket = life.ticket()
    assert ticket.take()
    return ticket


def test_a_ticket_holds_a_place_once_taken_until_its_request_is_admitted() -> None:
    life = ready_life(capacity=2)
    first, _ = taken(life), taken(life)
    assert not life.ticket().take()  # no room: taking fails quietly, the route's admission refuses
    with pytest.raises(Overloaded) as full:
        life.check_admission()
    assert (full.value.message, full.value.retry_after_s) == (
        "2 images in flight, the limit is 2",
        2,
    )
    with holding(first):
        life.check_admission()  # its own place: not refused
        with life.admit():
            assert (life.in_flight, life.reserved) == (1, 1)  # taken over: 2 places, not 3
            assert isinstance(refusal(life), Overloaded)
    assert life.in_flight == 0
    assert taken(life)  # the place the admitted request left is free again


def test_a_request_that_ends_before_admission_gives_its_place_back() -> None:
    life = ready_life(capacity=1)
    ticket = taken(life)
    with holding(ticket):
        pass  # a 4xx, a disconnect: never admitted
    assert life.reserved == 0
    assert not ticket.take()  # its task has ended: a body completing later takes nothing
    with holding(taken(life)), life.admit():
        assert life.in_flight == 1


def test_a_task_holding_none_does_not_inherit_a_ticket() -> None:
    """A pipelined request's task is created in the context of the one before it."""
    life = ready_life(capacity=1)
    with holding(taken(life)), holding(None), pytest.raises(Overloaded):
        life.check_admission()


def test_a_drain_refuses_a_request_with_a_ticket_and_frees_its_place() -> None:
    life = ready_life(capacity=1)
    ticket = taken(life)
    life.begin_drain()
    with holding(ticket):
        assert isinstance(refusal(life), Draining)
    assert (life.in_flight, life.reserved) == (0, 0)
    assert not ticket.held
