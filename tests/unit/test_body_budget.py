"""BodyBudget's arithmetic: what one request takes, every other request sees; a refused take
leaves the budget as it was; a release gives back exactly what the request held, once."""

from __future__ import annotations

import pytest

from service.errors import Overloaded
from service.limits.body_budget import BodyBudget


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
