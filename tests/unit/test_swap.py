"""The swap slot (service/inference/swap.py): a lease keeps its model open across swaps; a
swapped-out model closes after its last lease, at once when it has none."""

from __future__ import annotations

import pytest

from service.errors import NotReady
from service.inference.swap import Slot

pytestmark = pytest.mark.anyio


class Model:
    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False

    async def close(self) -> None:
        self.closed = True


async def test_a_lease_keeps_its_model_across_a_swap_until_it_ends() -> None:
    slot: Slot[Model] = Slot()
    one, two = Model("1"), Model("2")
    slot.swap(one)
    with slot.lease() as leased:
        assert slot.swap(two) is one
        with slot.lease() as newer:
            assert newer is two  # leases taken after the swap get the new model
        with slot.lease(leased) as same:
            assert same is one  # a request's further images stay on its model
        await slot.settled()
        assert not one.closed
        assert slot.retiring == 1
    await slot.settled()
    assert one.closed
    assert not two.closed
    assert slot.retiring == 0


async def test_a_model_without_leases_closes_at_once_and_none_serving_is_not_ready() -> None:
    slot: Slot[Model] = Slot()
    one = Model("1")
    with pytest.raises(NotReady, match="no model version is loaded"), slot.lease():
        pass
    slot.swap(one)
    slot.swap(None)
    await slot.settled()
    assert one.closed
    with pytest.raises(NotReady), slot.lease():
        pass


async def test_close_closes_the_serving_and_the_still_leased_models() -> None:
    slot: Slot[Model] = Slot()
    one, two = Model("1"), Model("2")
    slot.swap(one)
    with slot.lease():
        slot.swap(two)
        await slot.close()
        assert one.closed
        assert two.closed
