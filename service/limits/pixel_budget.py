"""A budget of pixels being decoded at once, shared by the decode workers.

Decoding is where a request's memory goes: a 40-megapixel PNG is a 120-320 MB array for the
moment it is resized, however small its upload. Without a budget, N such images arriving
together cost N times that, and the pod's memory limit is crossed by a handful of valid
requests. With it, peak decode memory is bounded by the budget whatever arrives: small photos
still decode side by side, a large one waits until the pixels in flight leave it room.

A budget pixel is BYTES_PER_BUDGET_PIXEL bytes of decode memory: an 8-bit RGBA PNG's pixel.
Callers charge each image what its format and mode cost (service.inference.decode_cost): a JPEG
pixel about half of one, a WebP pixel about 2.3. Waiters are served first come, first served,
so a large image is not starved by a stream of small ones slipping past it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

BYTES_PER_BUDGET_PIXEL = 8


class PixelBudget:
    def __init__(self, capacity_pixels: int) -> None:
        if capacity_pixels < 1:
            raise ValueError("the pixel budget must be positive")
        self.capacity = capacity_pixels
        self._free = capacity_pixels
        self._queue: deque[object] = deque()
        self._changed = threading.Condition()

    @property
    def in_use(self) -> int:
        with self._changed:
            return self.capacity - self._free

    @contextmanager
    def reserve(self, pixels: int) -> Iterator[None]:
        """Block (in a decode worker thread) until ``pixels`` fit, hold them for the block.
        A charge larger than the whole budget waits for all of it, then runs alone (the
        service refuses such images before they get here: preprocess)."""
        need = min(max(pixels, 1), self.capacity)
        ticket = object()
        with self._changed:
            self._queue.append(ticket)
            self._changed.wait_for(lambda: self._queue[0] is ticket and self._free >= need)
            self._queue.popleft()
            self._free -= need
            self._changed.notify_all()  # the next in line may fit beside us
        try:
            yield
        finally:
            with self._changed:
                self._free += need
                self._changed.notify_all()
