"""BodyBudget's arithmetic: what one request takes, every other request sees; a refused take
leaves the budget as it was; a release gives back exactly what the request held, once. And its
eviction choice when contended: slowest first, only as many as make room, none if that would
not; never a body within its grace, complete, or taken whole; the default bound spares a phone."""

from __future__ import annotations

import pytest

from service.errors import Overloaded
from service.limits.body_budget import BodyBudget, BodyHold
from service.settings import Settings


def test_holds_share_one_budget_and_give_back_what_they_took() -> None:
    budget = BodyBudget(100)
    first, second = budget.hold(), budget.hold()
    first.take(60)
    second.take(30)
    second.take(10)  # a chunked body, chunk by chunk: exactly full
    assert (budget.in_use, first.held, second.held) == (100, 60, 40)
    second.release()
    assert (budget.in_use, second.held) == (60, 0)
    second.release()  # twice is harmless
    first.release()
    assert budget.in_use == 0


def test_a_take_that_does_not_fit_is_refused_and_changes_nothing() -> None:
    budget = BodyBudget(100)
    holder, late = budget.hold(), budget.hold()
    holder.take(60)
    late.take(30)
    with pytest.raises(Overloaded) as refused:
        late.take(11)
    assert refused.value.message == (
        "request bodies held in memory are at their budget (90 of 100 bytes); this one needs 41"
    )
    assert refused.value.headers() == {"Retry-After": "1"}
    assert (budget.in_use, late.held) == (90, 30)


def test_the_budget_is_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        BodyBudget(0)


# -- eviction of bodies still arriving when the budget is contended ---------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def arriving(
    budget: BodyBudget, declared: int, received: int, evicted: list[str], name: str
) -> BodyHold:
    """A declared body of which ``received`` bytes have come, its first byte at the clock's now."""
    hold = budget.hold()
    hold.expect(declared, lambda: evicted.append(name))
    hold.arrived(received)
    return hold


def test_a_newcomer_evicts_the_slowest_bodies_first_and_only_as_many_as_it_needs() -> None:
    clock, evicted = Clock(), list[str]()
    budget = BodyBudget(1000, contended_finish_s=60, clock=clock)
    slow = arriving(budget, 400, 10, evicted, "slow")  # 10 of 400 in 10 s: 390 s to go
    slower = arriving(budget, 300, 5, evicted, "slower")  # 5 of 300 in 10 s: 590 s to go
    phone = arriving(budget, 300, 150, evicted, "phone")  # 150 of 300 in 10 s: 10 s to go
    clock.now = 10.0
    assert [h.finish_in(clock.now) for h in (slow, slower, phone)] == [390, 590, 10]
    newcomer = budget.hold()
    newcomer.take(250)  # the slowest (300 bytes) is enough
    assert evicted == ["slower"]
    assert (budget.in_use, slower.held, newcomer.held) == (950, 0, 250)
    slower.release()  # its reader's route ends later: nothing more is given back
    assert budget.in_use == 950
    budget.hold().take(400)  # the next slowest goes; the phone, 10 s from done, stays
    assert evicted == ["slower", "slow"]
    assert phone.held == 300


def test_nothing_is_evicted_when_eviction_would_not_make_room() -> None:
    clock, evicted = Clock(), list[str]()
    budget = BodyBudget(1000, contended_finish_s=60, clock=clock)
    arriving(budget, 400, 10, evicted, "slow")
    arriving(budget, 600, 300, evicted, "fast")  # 10 s to go: not evictable
    clock.now = 10.0
    with pytest.raises(Overloaded):
        budget.hold().take(500)  # evicting "slow" frees 400: not enough, so it keeps them
    assert (evicted, budget.in_use) == ([], 1000)


def test_bodies_within_their_grace_complete_or_taken_whole_are_never_evicted() -> None:
    clock, evicted = Clock(), list[str]()
    budget = BodyBudget(1000, contended_finish_s=60, clock=clock)
    complete = arriving(budget, 300, 1, evicted, "complete")
    complete.arrived(299)
    complete.arrived_all()  # admitted or about to be: its bytes are all here
    budget.hold().take(300)  # a chunked body or a gRPC message: nothing to wait for
    clock.now = 1.9
    fresh = arriving(budget, 400, 0, evicted, "fresh")  # no byte yet, but only just taken
    with pytest.raises(Overloaded):
        budget.hold().take(1)
    assert evicted == []
    clock.now = 1.9 + 2.0  # its grace is over and not a byte came: the first to go
    assert fresh.finish_in(clock.now) == float("inf")
    budget.hold().take(1)
    assert evicted == ["fresh"]


def test_a_body_that_does_not_fit_never_evicts_itself() -> None:
    clock, evicted = Clock(), list[str]()
    budget = BodyBudget(1000, contended_finish_s=60, clock=clock)
    chunked = budget.hold()
    chunked.take(900)
    own = arriving(budget, 100, 1, evicted, "own")
    clock.now = 10.0
    with pytest.raises(Overloaded):
        own.take(1)
    assert evicted == []


def test_without_a_bound_nothing_is_evicted() -> None:
    clock, evicted = Clock(), list[str]()
    budget = BodyBudget(1000, clock=clock)  # contended_finish_s: inf
    arriving(budget, 1000, 1, evicted, "slow")
    clock.now = 1000.0
    with pytest.raises(Overloaded):
        budget.hold().take(1)
    assert evicted == []


@pytest.mark.parametrize(
    ("declared", "rate", "evictable"),
    [
        (3_000_000, 50_000, False),  # a phone on 3G at its slowest: 60 s in all
        (3_000_000, 64_000, False),  # 47 s in all
        (64 * 2**20, 4200, True),  # a batch body trickled just above the body clock's minimum
        (64 * 2**20, 1_000_000, True),  # a minute and more to go: evictable while contended
        (64 * 2**20, 1_200_000, False),  # under a minute to go
    ],
)
def test_the_default_bound_spares_a_phone_and_not_a_trickle(
    declared: int, rate: int, evictable: bool
) -> None:
    """Judged as early as it can be (its grace just over), at the default bound."""
    clock = Clock()
    budget = BodyBudget(declared, Settings().body_contended_finish_s, clock)
    hold = budget.hold()
    hold.expect(declared, lambda: None)
    hold.arrived(1)
    clock.now = 2.0
    hold.arrived(2 * rate - 1)
    assert (hold.finish_in(clock.now) > budget.contended_finish_s) is evictable
