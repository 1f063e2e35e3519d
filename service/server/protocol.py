"""The door in the HTTP protocol: under overload, an inference request is refused by uvicorn's
httptools protocol itself, in the callback that parsed its head, before any ASGI task exists.

Why here and not only in the ASGI door (service/http/door.py): under overload, most of a
refused caller's wait was for the event loop to start its ASGI task. The protocol schedules the
task and the task's first step waits behind everything else ready on the loop: measured at 4x
capacity, p99 5.7 ms from the head parsed to the app called, the largest part of a 503's p99.
Answered in the parser's callback, a refusal waits for nothing but the read itself, and costs no
task, no middleware stack and no Starlette response cycle: loop time the admitted requests get.

The decision is binding both ways (EarlyDoor in service/http/door.py): a request let in holds a
reserved admission slot while its task starts and its upload arrives, and its admission takes
the slot over. Without that, every request arriving while one slot was free passed here, and all
but one were refused later by the app, after their own wait for the loop: 7 % of the 503s at 4x
capacity, with a p99 of ~20 ms. Only the overload refusal is answered here, and only for a POST
to an inference route with a valid token (when tokens are configured) and no CORS Origin;
everything else goes to the app as before. The answer is the ASGI door's, byte for byte in its
body, with the headers the request middleware adds (request id, Server-Timing, nosniff),
counted in the same metrics and written to the same access log. The upload that follows the
head is read and discarded by the protocol (uvicorn drops body bytes once a response is
complete), and the connection stays open; a client that asked ``Expect: 100-continue`` never
sends it, and its connection is closed instead.

It subclasses uvicorn's protocol and overrides one private method, ``_start_asgi_task``: the
point where a parsed request becomes a task. tests/api/test_protocol_door.py runs it in a real
uvicorn server and fails if a refusal reaches the app, so an uvicorn release that moves that
point is caught there.
"""

from __future__ import annotations

import time
from typing import Any, cast

from starlette.datastructures import MutableHeaders
from starlette.types import Scope
from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from service.http.door import EarlyDoor, Refusal, RouteTemplate
from service.http.middleware import record, stamp
from service.limits.lifecycle import Reservation, holding
from service.observability.request_id import request_id_from
from service.observability.timing import server_timing


def door_protocol(door: EarlyDoor) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with the door in it (pass as ``uvicorn.Config(http=...)``)."""

    class DoorProtocol(HttpToolsProtocol):
        def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
            scope = cast(Scope, cycle.scope)
            # ``app`` is something else when uvicorn itself refuses (limit_concurrency).
            decision = door.decide(scope) if app is self.app else None
            if isinstance(decision, Refusal):
                self._refuse(cycle, scope, decision)
                return
            super()._start_asgi_task(cycle, _holding(decision, app))

        def _refuse(self, cycle: RequestResponseCycle, scope: Scope, refused: Refusal) -> None:
            started = time.perf_counter()
            request_id = request_id_from(scope["headers"])
            rendered = refused.rendered()
            headers = MutableHeaders(raw=[*cycle.default_headers, *rendered.headers])
            stamp(headers, request_id, server_timing(None, time.perf_counter() - started))
            if cycle.waiting_for_100_continue:
                # The client holds its upload back until told to send it, and now never will
                # be: the connection cannot carry a next request after an unsent body, so it
                # ends here (as Go's net/http does). The refusal cost no upload at all.
                cycle.keep_alive = False
            if not cycle.keep_alive:
                headers["connection"] = "close"
            head = b"".join(name + b": " + value + b"\r\n" for name, value in headers.raw)
            self.transport.write(STATUS_LINE[503] + head + b"\r\n" + rendered.body)
            # As uvicorn's own send() ends a response: the rest of the upload is dropped as it
            # arrives, and the connection goes on to its next request (or closes).
            cycle.response_started = cycle.response_complete = True
            if not cycle.keep_alive:
                self.transport.close()
            scope["route"] = RouteTemplate(refused.template)
            door.metrics.rejections.labels(reason=refused.error.code).inc()
            record(door.metrics, scope, 503, time.perf_counter() - started, request_id)
            cycle.on_response()

    return DoorProtocol


def _holding(reservation: Reservation | None, app: ASGI3Application) -> ASGI3Application:
    """The request's task runs inside its reservation (or explicitly none: a pipelined request's
    task is created in the context of the one before it)."""

    async def run(scope: Any, receive: Any, send: Any) -> None:
        with holding(reservation):
            await app(scope, receive, send)

    return run
