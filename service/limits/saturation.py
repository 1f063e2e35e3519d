"""The saturation signal, for autoscalers (deploy/k8s/autoscaling/): how much of the admission
capacity is taken, now and on average.

- ``imgcls_saturation`` = (images admitted + places held by tickets, i.e. complete requests
  not admitted yet) / capacity, read at scrape time: 1 means the next image is refused (the
  same sum Lifecycle compares).
- ``imgcls_in_flight_image_seconds_total`` grows by each admitted image's seconds in flight
  when it is answered, so its rate over a window is the window's mean in flight, exactly
  (Little's law), where sampling the gauge every scrape would miss bursts between scrapes.
Queue wait, the other half of the signal, is the batcher's ``imgcls_queue_wait_seconds``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from service.limits.lifecycle import Lifecycle
from service.observability.metrics import Metrics

__all__ = ["export_saturation", "timed_admission"]


def export_saturation(metrics: Metrics, lifecycle: Lifecycle, capacity: int) -> None:
    def taken() -> int:
        return lifecycle.in_flight + lifecycle.reserved

    metrics.capacity.set(capacity)
    metrics.in_flight.set_function(taken)
    metrics.saturation.set_function(lambda: taken() / capacity)


@contextlib.contextmanager
def timed_admission(lifecycle: Lifecycle, metrics: Metrics) -> Iterator[None]:
    """``lifecycle.admit()``, adding the seconds the call stayed admitted to the counter."""
    with lifecycle.admit():
        admitted = time.monotonic()
        try:
            yield
        finally:
            metrics.in_flight_seconds.inc(time.monotonic() - admitted)
