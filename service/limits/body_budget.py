"""A budget of request-body bytes held in memory at once, across every request.

The admission queue bounds images, not bytes: 64 admitted uploads of up to 20 MB each, or a few
batch bodies of up to 64 MB, are gigabytes, and the pod's memory limit is 1 GiB. Measured with
30 callers each sending all but the last byte of a 20 MB upload: the service held 870 MB of
bodies (peak 1.1 GB), enough to be killed, losing every caller's request with it. With the
budget, the bytes held are bounded whatever arrives: a body that would not fit is refused with
503 ``overloaded`` and Retry-After, before any of it is read when it declares its length (a
chunked one is refused at the first chunk that would not fit).

A request's bytes stay counted until its route returns (the upload is referenced until its
image is decoded and answered). Used from the event loop only: no lock.
"""

from __future__ import annotations

from types import TracebackType

from service.errors import Overloaded

# Bodies drain at the service's pace, a few hundred a second: a second is enough to find room.
_RETRY_AFTER_S = 1


class BodyBudget:
    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes < 1:
            raise ValueError("the body budget must be positive")
        self.capacity = capacity_bytes
        self.in_use = 0

    def hold(self) -> BodyHold:
        """One request's account: what it takes is given back by ``release``, or on leaving
        ``with budget.hold() as hold:``."""
        return BodyHold(self)


class BodyHold:
    def __init__(self, budget: BodyBudget) -> None:
        self._budget = budget
        self.held = 0

    def __enter__(self) -> BodyHold:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def take(self, nbytes: int) -> None:
        """Count ``nbytes`` more of this request's body, or refuse it (Overloaded) if they do
        not fit beside what every request holds now."""
        budget = self._budget
        if budget.in_use + nbytes > budget.capacity:
            raise Overloaded(
                f"request bodies held in memory are at their budget ({budget.in_use} of "
                f"{budget.capacity} bytes); this one needs {self.held + nbytes}",
                retry_after_s=_RETRY_AFTER_S,
            )
        budget.in_use += nbytes
        self.held += nbytes

    def release(self) -> None:
        self._budget.in_use -= self.held
        self.held = 0
