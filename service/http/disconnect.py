"""Stop work for a caller who has gone away.

Once the body is read, the next ASGI message a server sends is ``http.disconnect``, and only
when the client really closed the connection (or after the response). So the route's work
races a task that awaits that message: whichever finishes first wins, the other is cancelled.
Cancelling a classify call drops its image from the queue before it runs (Classifier contract),
so a disconnected caller costs no inference. No polling.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

from starlette.types import Receive

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The caller closed the connection while its images waited."""


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(receive: Receive, work: Coroutine[Any, Any, T]) -> T:
    """``await work``, unless the client disconnects first: then cancel it and raise
    ClientDisconnected. Call only after the request body has been read."""
    # A Task, not any awaitable: only a Task reports cancelled() once its work was cancelled
    # (a cancelled gather() future reports a CancelledError *result* instead).
    work_task = asyncio.create_task(work)
    watcher = asyncio.create_task(_wait_for_disconnect(receive))
    try:
        await asyncio.wait({work_task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        # Also reached when this route itself is cancelled: leave no orphan task behind.
        for task in (watcher, work_task):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    if work_task.cancelled():
        raise ClientDisconnected("the client disconnected before its answer was ready")
    return work_task.result()
