"""The admission invariant (service/limits/admission.py): a place is held by work, not by a
promise of work. Requests still uploading hold nothing, whatever their number; complete ones
(tickets taken) and admitted ones never exceed the capacity together; every place comes back
when its request ends, however it ends. Checked over random interleavings by hypothesis."""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.errors import Overloaded
from service.limits.admission import Admission, Ticket, holding

CAPACITY = 3


@dataclass
class Request:
    """One request's life: let in (ticket), body complete (take), admitted, ended; in a
    context of its own, as each request's task has."""

    ticket: Ticket
    task: contextvars.Context = field(default_factory=contextvars.Context)
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    admitted: bool = False

    def __post_init__(self) -> None:
        self.task.run(self.stack.enter_context, holding(self.ticket))

    def admit(self, admission: Admission) -> None:
        self.task.run(self.stack.enter_context, admission.admit())
        self.admitted = True

    def end(self) -> None:
        self.task.run(self.stack.close)


def test_any_number_of_uploads_in_progress_leaves_every_place_free() -> None:
    admission = Admission(CAPACITY)
    uploading = [Request(admission.ticket()) for _ in range(100)]
    admission.check()  # not refused
    complete = [Request(admission.ticket()) for _ in range(CAPACITY)]
    assert all(r.ticket.take() for r in complete)  # the complete ones get every place
    with pytest.raises(Overloaded):
        admission.check()
    assert not uploading[0].ticket.take()  # an upload completing now finds no room
    for request in (*uploading, *complete):
        request.end()
    assert (admission.in_flight, admission.reserved) == (0, 0)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["arrive", "complete", "admit", "end"]), st.integers(0, 20)),
        max_size=80,
    )
)
def test_places_never_exceed_the_capacity_and_all_come_back(
    steps: list[tuple[str, int]],
) -> None:
    admission = Admission(CAPACITY)
    live: list[Request] = []
    for action, pick in steps:
        if action == "arrive":
            live.append(Request(admission.ticket()))
        elif live:
            request = live[pick % len(live)]
            _step(admission, request, action, live)
        assert admission.in_flight + admission.reserved <= CAPACITY
        assert admission.reserved == sum(r.ticket.held for r in live)
    for request in live:
        request.end()
    assert (admission.in_flight, admission.reserved) == (0, 0)
    assert admission.idle.is_set()


def _step(admission: Admission, request: Request, action: str, live: list[Request]) -> None:
    if action == "complete":
        had_room = admission.has_room()
        assert request.ticket.take() == (request.ticket.held or had_room)
    elif action == "admit" and not request.admitted:
        with contextlib.suppress(Overloaded):
            request.admit(admission)
            assert not request.ticket.held  # its place moved to the admitted request
    elif action == "end":
        request.end()
        live.remove(request)
