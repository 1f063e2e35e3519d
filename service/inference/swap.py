"""The one serving model, swapped atomically, and released only after its last request.

Invariants, each tested (tests/unit/test_swap.py):
- ``lease()`` hands a request the model serving at that instant, and that one stays open until
  the lease ends, whatever swaps happen meanwhile: a request never changes model half-way;
- ``swap(new)`` is one assignment on the event loop: every lease taken after it gets ``new``;
- the model swapped out is closed as soon as its last lease ends (at once when it has none),
  in a task of its own, so the caller of swap never waits for another caller's request;
- ``close()`` (service stop) closes the serving one and waits for every retired one to close.
Nothing here knows what a model is: anything with ``async close()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

from service.errors import NotReady

__all__ = ["Slot"]

log = logging.getLogger(__name__)


class Closable(Protocol):
    async def close(self) -> None: ...


S = TypeVar("S", bound=Closable)


class Slot(Generic[S]):
    def __init__(self) -> None:
        self._current: S | None = None
        self._leases: dict[int, int] = {}  # id(model) -> leases held on it
        self._retired: dict[int, S] = {}  # swapped out, still leased
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def current(self) -> S | None:
        return self._current

    @property
    def retiring(self) -> int:
        """Models swapped out and not closed yet (still leased, or closing)."""
        return len(self._retired) + len(self._closing)

    @contextlib.contextmanager
    def lease(self, held: S | None = None) -> Iterator[S]:
        """The serving model (or ``held``, one the caller already leases, so a request's
        images share it), kept open until the block exits. NotReady if none serves."""
        model = held if held is not None else self._current
        if model is None:
            raise NotReady("no model version is loaded", retry_after_s=1)
        key = id(model)
        self._leases[key] = self._leases.get(key, 0) + 1
        try:
            yield model
        finally:
            self._leases[key] -= 1
            if self._leases[key] == 0:
                del self._leases[key]
                if key in self._retired:
                    self._close(self._retired.pop(key))

    def swap(self, new: S | None) -> S | None:
        """Serve ``new`` (None: nothing) from now on; the old one closes after its last lease."""
        old, self._current = self._current, new
        if old is not None and old is not new:
            if id(old) in self._leases:
                self._retired[id(old)] = old
            else:
                self._close(old)
        return old

    async def settled(self) -> None:
        """Wait until every retired model whose leases have ended is closed."""
        while self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def close(self) -> None:
        """Close every model, leased or not (after a drain, a lease left is a request the
        drain gave up on: its model fails it with Draining)."""
        self.swap(None)
        for key, model in list(self._retired.items()):
            del self._retired[key]
            self._close(model)
        await self.settled()

    def _close(self, model: S) -> None:
        task = asyncio.get_running_loop().create_task(_closed(model), name="close-model")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


async def _closed(model: Closable) -> None:
    try:
        await model.close()
    except Exception:  # a stop that fails must not leave the close task's error unretrieved
        log.exception("closing a retired model failed")
