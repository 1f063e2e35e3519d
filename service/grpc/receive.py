"""Receiving a gRPC request message: nothing before a call is authenticated, and a bounded
number of messages at once after.

grpcio reads a message whole (up to its size limit) as soon as a handler asks for it, and says
nothing of its size before; what can be bounded is when, and how many at once, are read.

- Every handler takes its request as a stream (``handler``), so grpcio reads nothing until
  asked. A call refused before its handler (no token: service/grpc/auth.py), or answered
  without its request (ServerLive, ...) never has its message read; with HTTP/2 BDP probing
  off (server.py) it holds one 64 KiB flow-control window of it at most.
- ``MessageGate``: at most ``slots`` messages are received and decoded at once. A call waits
  its turn (first come, first served) for at most ``timeout_s``, then RESOURCE_EXHAUSTED as
  any overload; its message must then arrive within ``timeout_s``, then DEADLINE_EXCEEDED, so
  a slow sender cannot keep its turn.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from service.errors import DeadlineExceeded, InvalidParameter, Overloaded

Answer = Callable[[Any], Awaitable[Any]]  # (context) -> response
Serializer = Callable[[Any], bytes] | None


class MessageGate:
    def __init__(self, slots: int, timeout_s: float) -> None:
        self.slots = slots
        self._turns = asyncio.Semaphore(slots)
        self._timeout_s = timeout_s

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """A turn to receive (and decode) one message; waited for first come, first served."""
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._turns.acquire()
        except TimeoutError:
            raise Overloaded(
                f"the server is receiving other calls' messages; none could start within "
                f"{self._timeout_s:g} s",
                retry_after_s=1,
            ) from None
        try:
            yield
        finally:
            self._turns.release()

    async def read(self, context: Any) -> bytes:
        """The call's one request message, as bytes (in a turn). ``context.read()``, not the
        request iterator: that one's generator keeps the last message it yielded for as long
        as the call lives."""
        try:
            async with asyncio.timeout(self._timeout_s):
                message = await context.read()
        except TimeoutError:
            raise DeadlineExceeded(
                f"the request message did not arrive within {self._timeout_s:g} s"
            ) from None
        if not isinstance(message, bytes):  # grpc.aio.EOF
            raise InvalidParameter("the call ended without its request message")
        return message


def handler(answer: Answer, serializer: Serializer) -> grpc.RpcMethodHandler:
    """A unary method that reads its request itself (through a gate), or not at all: grpcio
    reads a stream-request call's messages only when asked, and as bytes."""

    async def behavior(requests: AsyncIterator[bytes], context: Any) -> Any:
        return await answer(context)

    return grpc.stream_unary_rpc_method_handler(behavior, response_serializer=serializer)
