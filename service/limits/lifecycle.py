"""The service's life as one state machine, and the state half of every admission.

    LOADING -> WARMING_UP -> READY -> DRAINING -> STOPPED        (or FAILED, when loading raised)

``begin_drain`` and ``stop`` may come at any time (a SIGTERM during start-up): a load that
finishes afterwards must not undo them, so ``ready`` moves only from LOADING or WARMING_UP.

``admit()`` refuses by state (Draining, NotReady, each with a Retry-After), then asks the one
admission decision (service/limits/admission.py) for a place, held until the call is answered;
``drain`` waits for every admitted call. Nothing here knows about models or images; the
classifier and the API's test double share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from service.errors import Draining, NotReady
from service.limits.admission import Admission, RetryAfter, Ticket
from service.observability.metrics import Metrics

__all__ = ["Lifecycle", "Readiness", "RetryAfter", "State"]

log = logging.getLogger(__name__)


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
        self._admission = Admission(capacity)
        metrics.ready.set(0)

    @property
    def state(self) -> State:
        return self._state

    @property
    def reserved(self) -> int:
        """Places held by tickets: complete requests not admitted yet."""
        return self._admission.reserved

    @property
    def in_flight(self) -> int:
        return self._admission.in_flight

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
        self._admission.retry_after_s = retry_after_s
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
        log.info("draining: %d requests in flight", self.in_flight)

    def stop(self) -> None:
        self.begin_drain()
        self._state = State.STOPPED

    async def drain(self, timeout_s: float) -> None:
        """Wait until every admitted call has been answered, or ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._admission.idle.wait()
        except TimeoutError:
            log.warning("drain timed out after %.1f s with %d in flight", timeout_s, self.in_flight)

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
        """Refuse (by state, then Overloaded), or count the call in flight until the block
        exits (answered, failed or cancelled). A plain, not an async, context manager: no other
        task can be admitted between the check and the count and overshoot the capacity."""
        self._check_state()
        with self._admission.admit():
            yield

    def check_admission(self) -> None:
        """Raise what admit() would raise now, counting nothing: the early refusals ask this."""
        self._check_state()
        self._admission.check()

    def ticket(self) -> Ticket:
        """A claim the HTTP protocol takes for a request it lets in; it holds a place only once
        the request's body is complete (service/limits/admission.py)."""
        return self._admission.ticket()

    def _check_state(self) -> None:
        if self._state in _SHUTTING_DOWN:
            raise Draining("the server is shutting down", retry_after_s=1)
        if self._state is not State.READY:
            raise NotReady(f"the model is not ready ({self._state.value})", retry_after_s=1)
