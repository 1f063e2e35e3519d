"""A budget of request-body bytes held in memory at once, across every request.

A body that would not fit is refused (503 ``overloaded``, Retry-After) before any of it is read
when it declares its length, else at the first chunk that would not fit. A request's bytes stay
counted until its route returns. Before refusing, declared bodies still arriving that are
projected (bytes to come / average rate since their first byte, after ``_GRACE_S``) to finish
more than ``contended_finish_s`` from now are evicted: furthest first, only as many as make
room, none if that would not; their bytes are given back at once and their reader answers 408
(docs/decisions/body-budget.md). A complete body is never evicted. Event loop only: no lock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from types import TracebackType

from service.errors import Overloaded

# Bodies drain at the service's pace, a few hundred a second: a second is enough to find room.
_RETRY_AFTER_S = 1
# A body's rate is not judged before this: its first second says little (TCP slow start, a
# client that paused), and a body refused this early could be retried instead at once.
_GRACE_S = 2.0

Evict = Callable[[], None]  # tells a body's reader that it was evicted


class BodyBudget:
    def __init__(
        self,
        capacity_bytes: int,
        contended_finish_s: float = math.inf,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity_bytes < 1:
            raise ValueError("the body budget must be positive")
        self.capacity = capacity_bytes
        self.in_use = 0
        self.contended_finish_s = contended_finish_s
        self.clock = clock
        self.arriving: set[BodyHold] = set()  # declared bodies still arriving: evictable

    def hold(self) -> BodyHold:
        """One request's account: what it takes is given back by ``release``, or on leaving
        ``with budget.hold() as hold:``."""
        return BodyHold(self)

    def _make_room(self, nbytes: int, taker: BodyHold) -> None:
        """Evict the bodies ``victims`` chooses so that ``nbytes`` more fit, if that can be done."""
        short = self.in_use + nbytes - self.capacity
        others = (hold for hold in self.arriving if hold is not taker)
        for victim in victims(others, short, self.clock(), self.contended_finish_s):
            victim._evicted()


def victims(arriving: Iterable[BodyHold], short: int, now: float, bound_s: float) -> list[BodyHold]:
    """The bodies to evict so that ``short`` more bytes fit: those projected to finish more than
    ``bound_s`` from ``now``, furthest first, only as many as needed; none if even all of them
    would not free enough (an eviction that lets nobody in only loses a request)."""
    if short <= 0:
        return []
    late = [(finish, hold) for hold in arriving if (finish := hold.finish_in(now)) > bound_s]
    late.sort(key=lambda pair: pair[0], reverse=True)
    chosen: list[BodyHold] = []
    for _, hold in late:
        chosen.append(hold)
        short -= hold.held
        if short <= 0:
            return chosen
    return []


class BodyHold:
    def __init__(self, budget: BodyBudget) -> None:
        self._budget = budget
        self.held = 0
        self.declared = 0  # the declared length taken by ``expect``; 0: none
        self.received = 0  # of it, the bytes that have arrived
        self._since = 0.0  # when it was taken, then when its first byte arrived
        self._first_byte = False
        self._evict: Evict | None = None

    def __enter__(self) -> BodyHold:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def take(self, nbytes: int) -> None:
        """Count ``nbytes`` more of this request's body, or refuse it (Overloaded) if they do
        not fit beside what every request holds now, even with slow bodies evicted."""
        budget = self._budget
        if budget.in_use + nbytes > budget.capacity:
            budget._make_room(nbytes, self)
        if budget.in_use + nbytes > budget.capacity:
            raise Overloaded(
                f"request bodies held in memory are at their budget ({budget.in_use} of "
                f"{budget.capacity} bytes); this one needs {self.held + nbytes}",
                retry_after_s=_RETRY_AFTER_S,
            )
        budget.in_use += nbytes
        self.held += nbytes

    def expect(self, declared: int, evict: Evict) -> None:
        """Take a declared length before its body arrives (as ``take``). Until ``arrived_all``,
        the body may be evicted when the budget is contended: ``evict`` is then called once,
        after its bytes are given back, and its reader must stop reading and answer 408."""
        self.take(declared)
        self.declared, self.received = declared, 0
        self._since, self._first_byte = self._budget.clock(), False
        self._evict = evict
        self._budget.arriving.add(self)

    def arrived(self, nbytes: int) -> None:
        """``nbytes`` more of the declared body have arrived."""
        if nbytes and not self._first_byte:
            self._since, self._first_byte = self._budget.clock(), True
        self.received += nbytes

    def arrived_all(self) -> None:
        """The body is complete: it can no longer be evicted."""
        self._budget.arriving.discard(self)
        self._evict = None

    def finish_in(self, now: float) -> float:
        """Seconds until the whole declared body has arrived at its average rate since its first
        byte; 0 while it is too early to judge (within the grace), inf if no byte came in it."""
        elapsed = now - self._since
        if elapsed < _GRACE_S:
            return 0.0
        if not self._first_byte:
            return math.inf
        return (self.declared - self.received) * elapsed / self.received

    def release(self) -> None:
        self._budget.arriving.discard(self)
        self._evict = None
        self._budget.in_use -= self.held
        self.held = 0

    def _evicted(self) -> None:
        evict = self._evict
        self.release()
        if evict is not None:
            evict()
