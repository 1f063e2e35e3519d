"""The service's life as one state machine, and the door every request goes through.

    LOADING -> WARMING_UP -> READY -> DRAINING -> STOPPED        (or FAILED, when loading raised)

``begin_drain`` and ``stop`` may come at any time (a SIGTERM during start-up): a load that
finishes afterwards must not undo them, so ``ready`` moves only from LOADING or WARMING_UP.

Admission lives here too, because it is a question about the state: ``admit()`` refuses
(Draining, NotReady, Overloaded, each with a Retry-After) or counts the request in flight until
it is answered, and ``drain`` waits for that count to reach zero. Nothing here knows about
models or images; the classifier and the API's test double share it.

A request can also be admitted at the door, before its task exists: ``reserve()`` takes a slot
for it (service/server/protocol.py), the request's task holds the Reservation while it
reads its upload, and its first ``admit()`` takes the slot over. Without that, every request
arriving while a slot is free would pass the door, and all but one be refused later, after
waiting for the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from service.errors import Draining, NotReady, Overloaded
from service.observability.metrics import Metrics

__all__ = ["Lifecycle", "Readiness", "Reservation", "RetryAfter", "State", "holding"]

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


class Reservation:
    """One admission slot taken at the door for one request. Its task holds it (``holding``):
    the request's first admit() takes the slot over; if the request ends before that (a 4xx, a
    disconnect), the slot is given back."""

    __slots__ = ("_lifecycle", "held")

    def __init__(self, lifecycle: Lifecycle) -> None:
        self._lifecycle = lifecycle
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self._lifecycle._reserved -= 1


_holding: ContextVar[Reservation | None] = ContextVar("imgcls_reservation", default=None)


@contextlib.contextmanager
def holding(reservation: Reservation | None) -> Iterator[None]:
    """Run a request's task inside this: its admit() finds the reservation (None: it has
    none, whatever the context it was created in held) and, if the request ends before being
    admitted, the slot is given back. A context variable, because admit() runs several layers
    below the door, in the task's own context."""
    token = _holding.set(reservation)
    try:
        yield
    finally:
        _holding.reset(token)
        if reservation is not None:
            reservation.release()


class Lifecycle:
    def __init__(self, metrics: Metrics, capacity: int) -> None:
        self._metrics = metrics
        self._capacity = capacity  # images admitted at once
        self._state = State.LOADING
        self._retry_after_s: RetryAfter = lambda in_flight: 1
        self._in_flight = 0
        self._reserved = 0  # slots taken at the door by requests not admitted yet
        self._idle = asyncio.Event()
        self._idle.set()
        metrics.ready.set(0)

    @property
    def state(self) -> State:
        return self._state

    @property
    def reserved(self) -> int:
        """Slots taken at the door for requests not admitted yet."""
        return self._reserved

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
        capacity. A request that holds a reservation takes its slot over (the state is still
        checked: a drain that began meanwhile refuses it)."""
        if (reservation := self._reservation()) is None:
            self.check_admission()
        else:
            self._check_state()
            reservation.release()
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
        self._check_state()
        if self._reservation() is None:  # (else this request's slot is taken for it already)
            self._check_room()

    def reserve(self) -> Reservation:
        """Take a slot for a request the door lets in, or raise what check_admission would."""
        self._check_state()
        self._check_room()
        self._reserved += 1
        return Reservation(self)

    def _check_room(self) -> None:
        # Refuse at the door, before any decoding: the capacity bounds every image admitted
        # (decoding, queued or running), so an admitted image always finds room in the queue.
        taken = self._in_flight + self._reserved
        if taken >= self._capacity:
            raise Overloaded(
                f"{taken} images in flight, the limit is {self._capacity}",
                retry_after_s=self._retry_after_s(taken),
            )

    def _check_state(self) -> None:
        if self._state in _SHUTTING_DOWN:
            raise Draining("the server is shutting down", retry_after_s=1)
        if self._state is not State.READY:
            raise NotReady(f"the model is not ready ({self._state.value})", retry_after_s=1)

    def _reservation(self) -> Reservation | None:
        """The reservation the current request holds on this lifecycle, if any."""
        held = _holding.get()
        return held if held is not None and held.held and held._lifecycle is self else None
