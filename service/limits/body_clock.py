"""How long a request body may take to arrive: the clock that keeps a slow or stalled upload
from holding a connection and its bytes forever.

    deadline = min(last byte + idle_s,  started + idle_s + received / min_rate)

No byte for ``idle_s``, or, once ``idle_s`` has passed, an average rate below ``min_rate`` (each
byte received buys 1/min_rate s, as Apache's mod_reqtimeout MinRate does), and the deadline has
passed. A steady upload at any rate above ``min_rate`` never meets it. Pure arithmetic on the
caller's clock (the event loop's): the body reader (service/http/uploads.py) and the HTTP
protocol (service/server/protocol.py) each keep one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class BodyClock:
    idle_s: float
    min_rate_bytes_per_s: float
    started: float
    last: float
    received: int = 0

    @classmethod
    def start(cls, idle_s: float, min_rate_bytes_per_s: float, now: float) -> BodyClock:
        return cls(idle_s, min_rate_bytes_per_s, now, now)

    def arrived(self, nbytes: int, now: float) -> None:
        self.received += nbytes
        self.last = now

    def deadline(self) -> float:
        paced = self.started + self.idle_s + self.received / self.min_rate_bytes_per_s
        return min(self.last + self.idle_s, paced)
