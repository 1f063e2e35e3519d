"""The gate gRPC messages are received through (service/grpc/receive.py), alone: a call waits
its turn at most the timeout (then Overloaded: RESOURCE_EXHAUSTED), a message must arrive
within it once the turn comes (then DeadlineExceeded), and a turn is given back either way.
The context is a stand-in whose read() is as slow as the test says: the real read is grpcio's,
exercised by tests/e2e/test_grpc_limits.py."""

from __future__ import annotations

import asyncio

import pytest

from service.errors import DeadlineExceeded, InvalidParameter, Overloaded
from service.grpc.receive import MessageGate

pytestmark = pytest.mark.anyio


class Context:
    def __init__(self, message: object = b"message") -> None:
        self.message = message
        self.arrived = asyncio.Event()

    async def read(self) -> object:
        await self.arrived.wait()
        return self.message


async def receive(gate: MessageGate, context: Context) -> bytes:
    async with gate.turn():
        return await gate.read(context)


async def test_a_message_that_does_not_arrive_in_time_gives_its_turn_back() -> None:
    gate = MessageGate(1, timeout_s=0.05)
    with pytest.raises(DeadlineExceeded, match=r"did not arrive within 0\.05 s"):
        await receive(gate, Context())
    on_time = Context()
    on_time.arrived.set()
    assert await receive(gate, on_time) == b"message"


async def test_a_call_waits_for_a_turn_at_most_the_timeout() -> None:
    gate = MessageGate(1, timeout_s=0.05)
    async with gate.turn():  # another call's message is being received
        with pytest.raises(Overloaded, match=r"none could start within 0\.05 s"):
            await receive(gate, Context())
    arrived = Context()
    arrived.arrived.set()
    assert await receive(gate, arrived) == b"message"


async def test_turns_are_given_in_arrival_order() -> None:
    gate = MessageGate(1, timeout_s=60)
    contexts = [Context(f"m{i}".encode()) for i in range(3)]
    calls = [asyncio.ensure_future(receive(gate, c)) for c in contexts]
    await asyncio.sleep(0)
    for context in reversed(contexts):  # arrive in reverse: only the first holds the turn
        context.arrived.set()
    assert [await call for call in calls] == [b"m0", b"m1", b"m2"]


async def test_a_call_that_ends_without_its_message_is_invalid() -> None:
    ended = Context(message=object())  # grpc.aio.EOF is such a sentinel
    ended.arrived.set()
    with pytest.raises(InvalidParameter, match="without its request message"):
        await receive(MessageGate(1, 1), ended)
