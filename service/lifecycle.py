"""The service's life as one state machine, and the door every request goes through.

    LOADING -> WARMING_UP -> READY -> DRAINING -> STOPPED        (or FAILED, when loading raised)

``begin_drain`` and ``stop`` may come at any time (a SIGTERM during start-up): a load that
finishes afterwards must not undo them, so ``ready`` moves only from LOADING or WARMING_UP.

Admission lives here too, because it is a question about the state: ``admit()`` refuses
(Draining, NotReady, Overloaded, each with a Retry-After) or counts the request in flight until
it is answered, and ``drain`` waits for that count to reach zero. Nothing here knows about
models or images; the classifier and the API's test double share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from service.errors import Draining, NotReady, Overloaded
from service.metrics import Metrics

__all__ = ["Lifecycle", "Readiness", "RetryAfter", "State"]

log = logging.getLogger(__name__)

RetryAfter = Callable[[int], int]  # images in flight -> seconds until there is room


class State(enum.Enum):
    LOADING = "loading"
    WARMING_UP = "warming_up"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"  # start() raised


# Readiness reasons are fixed, public strings (the README and the probes' callers match on them):
# an exception's text is for the log only.
_REASONS: dict[State, str] = {
    State.LOADING: "loading",
    State.WARMING_UP: "warming_up",
    State.DRAINING: "draining",
    State.STOPPED: "stopped",
    State.FAILED: "model failed to load",
}
_STARTING = (State.LOADING, State.WARMING_UP)
_SHUTTING_DOWN = (State.DRAINING, State.STOPPED)


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    # None when ready; else loading | warming_up | draining | stopped | model failed to load |
    # failed: the batcher stopped | failed: inference stalled.
    reason: str | None
    details: dict[str, object]  # JSON-able


class Lifecycle:
    def __init__(self, metrics: Metrics, capacity: int) -> None:
        self._metrics = metrics
        self._capacity = capacity  # images admitted at once
        self._state = State.LOADING
        self._retry_after_s: RetryAfter = lambda in_flight: 1
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        metrics.ready.set(0)

    @property
    def state(self) -> State:
        return self._state

    @property
    def in_flight(self) -> int:
        return self._in_flight

    # -- transitions -------------------------------------------------------------------------

    def warming_up(self) -> None:
        """The model file is verified; the session is being built and warmed."""
        if self._state is State.LOADING:
            self._state = State.WARMING_UP

    def ready(self, retry_after_s: RetryAfter) -> bool:
        """Admit work from now on, unless a drain or stop came first; True if now READY.
        ``retry_after_s`` tells a caller refused for capacity when to come back: it comes from
        the batcher, which exists only once the model is loaded."""
        if self._state not in _STARTING:
            return False
        self._retry_after_s = retry_after_s
        self._state = State.READY
        self._metrics.ready.set(1)
        return True

    def failed(self) -> None:
        """Loading raised. Final: the process is expected to exit."""
        self._state = State.FAILED
        self._metrics.ready.set(0)

    def begin_drain(self) -> None:
        """At once: readiness turns 503 "draining" and admit() refuses. Calls already admitted
        carry on (see drain). A failed or stopped service stays so."""
        if self._state is State.READY or self._state in _STARTING:
            self._state = State.DRAINING
        self._metrics.ready.set(0)
        log.info("draining: %d requests in flight", self._in_flight)

    def stop(self) -> None:
        self.begin_drain()
        self._state = State.STOPPED

    async def drain(self, timeout_s: float) -> None:
        """Wait until every admitted call has been answered, or ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            log.warning(
                "drain timed out after %.1f s with %d in flight", timeout_s, self._in_flight
            )

    # -- state -------------------------------------------------------------------------------

    def reason(self, *, fault: str | None = None) -> str | None:
        """Why traffic should not come here, or None. ``fault``: the batcher's (a dead loop or
        a stalled inference thread), never expected, but readiness must not lie about it."""
        if self._state is State.READY:
            return fault
        return _REASONS[self._state]

    def readiness(self, details: dict[str, object], *, fault: str | None = None) -> Readiness:
        reason = self.reason(fault=fault)
        return Readiness(ready=reason is None, reason=reason, details=details)

    # -- admission ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Refuse, or count the call in flight until the block exits (answered, failed or
        cancelled). A plain, not an async, context manager: the check and the count happen with
        no await between them, so no other task can be admitted in the gap and overshoot the
        capacity."""
        self.check_admission()
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    def check_admission(self) -> None:
        """Raise what admit() would raise now, counting nothing. The HTTP layer asks before it
        reads a body: under overload a refusal then costs no upload read, no parsing and no
        queueing behind the uploads of requests that will be refused too."""
        if self._state in _SHUTTING_DOWN:
            raise Draining("the server is shutting down", retry_after_s=1)
        if self._state is not State.READY:
            raise NotReady(f"the model is not ready ({self._state.value})", retry_after_s=1)
        # Refuse at the door, before any decoding: the capacity bounds every image admitted
        # (decoding, queued or running), so an admitted image always finds room in the queue.
        if self._in_flight >= self._capacity:
            raise Overloaded(
                f"{self._in_flight} images in flight, the limit is {self._capacity}",
                retry_after_s=self._retry_after_s(self._in_flight),
            )
