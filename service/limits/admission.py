"""Admission: may this request take a place in the queue? Decided here, and only here.

Invariant: a place is held by work, not by a promise of work. Only a request that is admitted
(decoding, queued or running, until answered) or whose whole body has arrived (a Ticket taken
when its last byte was parsed, until its route admits it or it ends) holds a place, and together
they never exceed the capacity. A caller still sending its head or its upload holds nothing:
the early refusals (service/http/door.py) only ``check``, and a body still arriving costs its
connection and its bytes in the body budget (service/limits/body_budget.py), for as long as
its clock allows (service/limits/body_clock.py).

The batcher's own queue bound (service/inference/batcher.py) has the same capacity, so an
admitted image always finds room there: it is a safety net, never a second decision. Used from
the event loop only: the check and the count happen with no await between them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar

from service.errors import Overloaded

__all__ = ["Admission", "RetryAfter", "Ticket", "holding"]

RetryAfter = Callable[[int], int]  # places taken -> seconds until there is room


class Ticket:
    """One request's claim to a place once its body is complete. The request's task runs inside
    it (``holding``); ``take`` holds a place when the last byte arrives, if there is room; the
    request's admission then takes that place over, or, if the request ends first (a 4xx, a
    disconnect), the place is given back. A ticket whose task has ended takes nothing."""

    __slots__ = ("_admission", "closed", "held")

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self.held = False
        self.closed = False

    def take(self) -> bool:
        """Hold a place now if the request's task may still use it and there is room."""
        if not (self.held or self.closed) and self._admission.has_room():
            self._admission.reserved += 1
            self.held = True
        return self.held

    def release(self) -> None:
        if self.held:
            self.held = False
            self._admission.reserved -= 1


_holding: ContextVar[Ticket | None] = ContextVar("imgcls_ticket", default=None)


@contextlib.contextmanager
def holding(ticket: Ticket | None) -> Iterator[None]:
    """Run a request's task inside this: its admission finds the ticket (None: it has none,
    whatever the context it was created in held), and a place it still holds when the task
    ends is given back. A context variable, because admission runs several layers below."""
    token = _holding.set(ticket)
    try:
        yield
    finally:
        _holding.reset(token)
        if ticket is not None:
            ticket.closed = True
            ticket.release()


class Admission:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity  # images admitted at once
        self.in_flight = 0
        self.reserved = 0  # places held by tickets: complete requests not admitted yet
        self.retry_after_s: RetryAfter = lambda taken: 1
        self.idle = asyncio.Event()  # set while nothing is in flight (what a drain waits for)
        self.idle.set()

    def ticket(self) -> Ticket:
        return Ticket(self)

    def has_room(self) -> bool:
        return self.in_flight + self.reserved < self.capacity

    def check(self) -> None:
        """Raise Overloaded if the current request could not take a place now; count nothing.
        A request whose ticket holds a place has one."""
        if self._ticket() is None and not self.has_room():
            taken = self.in_flight + self.reserved
            raise Overloaded(
                f"{taken} images in flight, the limit is {self.capacity}",
                retry_after_s=self.retry_after_s(taken),
            )

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Take a place (the ticket's, if the request holds one) until the block exits:
        answered, failed or cancelled. Raises Overloaded when there is none."""
        self.check()
        if (ticket := self._ticket()) is not None:
            ticket.release()  # the place moves from the ticket to the admitted request
        self.in_flight += 1
        self.idle.clear()
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self.idle.set()

    def _ticket(self) -> Ticket | None:
        """The current request's ticket on this admission, if it holds a place."""
        ticket = _holding.get()
        return ticket if ticket is not None and ticket.held and ticket._admission is self else None
