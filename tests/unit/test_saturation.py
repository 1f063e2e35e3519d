"""The saturation signal: the gauge reads what admission compares, and the counter adds each
admitted call's seconds in flight (on a fake clock: no wall time is asserted)."""

from __future__ import annotations

import pytest

from service.errors import Overloaded
from service.limits import saturation
from service.limits.lifecycle import Lifecycle
from service.limits.saturation import export_saturation, timed_admission
from service.observability.metrics import Metrics


def gauges(metrics: Metrics) -> tuple[float | None, ...]:
    names = ("imgcls_in_flight_images", "imgcls_capacity_images", "imgcls_saturation")
    return tuple(metrics.registry.get_sample_value(name) for name in names)


def test_the_gauge_counts_admitted_and_ticketed_against_the_capacity() -> None:
    metrics = Metrics()
    lifecycle = Lifecycle(metrics, capacity=4)
    lifecycle.ready(lambda in_flight: 1)
    export_saturation(metrics, lifecycle, capacity=4)
    assert gauges(metrics) == (0, 4, 0)

    ticket = lifecycle.ticket()  # a complete request whose route has not admitted it yet
    assert ticket.take()
    with lifecycle.admit():
        assert gauges(metrics) == (2, 4, 0.5)
        with lifecycle.admit(), lifecycle.admit():
            assert gauges(metrics) == (4, 4, 1.0)
            with pytest.raises(Overloaded), lifecycle.admit():  # at 1.0 the next is refused
                pass
    ticket.release()
    assert gauges(metrics) == (0, 4, 0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


def test_the_counter_adds_each_calls_seconds_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(saturation, "time", clock)
    metrics = Metrics()
    lifecycle = Lifecycle(metrics, capacity=4)
    lifecycle.ready(lambda in_flight: 1)

    with timed_admission(lifecycle, metrics):
        with timed_admission(lifecycle, metrics):  # two in flight for 2 s ...
            clock.now += 2.0
        clock.now += 1.0  # ... then one for 1 s: a mean of 5/3 images over those 3 s
    with pytest.raises(RuntimeError, match="counts too"):
        failing_call(lifecycle, metrics, clock)

    total = metrics.registry.get_sample_value("imgcls_in_flight_image_seconds_total")
    assert total == pytest.approx(2.0 + 3.0 + 0.5)
    assert lifecycle.in_flight == 0


def failing_call(lifecycle: Lifecycle, metrics: Metrics, clock: FakeClock) -> None:
    with timed_admission(lifecycle, metrics):
        clock.now += 0.5
        raise RuntimeError("a failed call counts too")
