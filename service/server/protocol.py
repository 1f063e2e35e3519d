"""uvicorn's httptools protocol with a clock and bounds on every connection, and the early door.

- Head clock: a complete request head within IMGCLS_HTTP_HEAD_TIMEOUT_S of the connection
  opening (or of a kept-alive request's first byte); else closed, with 408 if part came.
- Body clock: a body the app reads is timed by its reader (service/http/uploads.py); one the
  app left unread (answered early) is timed here by the same BodyClock, else closed.
- Bounded heads: target bytes (414), head bytes and header count (431). A request llhttp
  rejects gets JSON too: 405 with Allow for an unknown method, else 400. Each of these answers
  closes the connection after a short linger, so that the client can read it.
- Over IMGCLS_HTTP_LIMIT_CONCURRENCY, probes are still answered; the rest get a JSON 503.
- The early door (service/http/door.py): an overload refusal is written in the callback that
  parsed the head; a request let in runs with a Ticket that takes a place when its body is
  complete (on_message_complete), never while it uploads.

Private API: it overrides HttpToolsProtocol's data_received, parser callbacks,
_start_asgi_task and on_response_complete (uvicorn is pinned in pyproject.toml); the tests in
tests/api/test_protocol_door.py and test_connection_clocks.py run it in a real uvicorn server.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, cast

import httptools
from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.types import Scope
from uvicorn._types import ASGI3Application, HTTPScope
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from service.errors import (
    HeadersTooLarge,
    ImgclsError,
    MalformedRequest,
    Overloaded,
    RequestTimeout,
    URITooLong,
)
from service.http.door import EarlyDoor, Refusal, RouteTemplate
from service.http.middleware import record, stamp
from service.limits.admission import Ticket, holding
from service.limits.body_clock import BodyClock
from service.observability.metrics import Metrics
from service.observability.request_id import request_id_from
from service.observability.timing import server_timing
from service.server.answers import OTHER_METHOD, count, request_target, scope_of, wire
from service.settings import Settings

log = logging.getLogger(__name__)

# Probes stay answerable over the connection cap: a kubelet must not restart a busy pod.
PROBES = frozenset({"/livez", "/readyz", "/v2/health/live", "/v2/health/ready"})
# After a closing answer, keep reading (and dropping) for this long or this many bytes, so that
# a client still sending reads the answer instead of a reset (nginx's lingering close).
_LINGER_S = 2.0
_LINGER_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Wiring:
    """What every connection's protocol shares."""

    app: FastAPI
    metrics: Metrics
    settings: Settings
    door: EarlyDoor | None  # None: IMGCLS_EARLY_REFUSAL is off


def service_protocol(wiring: Wiring) -> type[HttpToolsProtocol]:
    """The protocol class to pass as ``uvicorn.Config(http=...)``, with uvicorn's own
    ``limit_concurrency`` off (this protocol applies the cap)."""
    return type("ServiceProtocol", (_Protocol,), {"wiring": wiring})


class _Protocol(HttpToolsProtocol):
    wiring: Wiring

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = self.wiring.settings  # read per header and per read: kept at hand
        self._max_head, self._max_headers = limits.http_max_head_bytes, limits.http_max_headers
        self._max_url = limits.http_max_url_bytes
        self._head_fed: int | None = 0  # bytes fed to the current head; None: not in a head
        self._head_began = False  # a byte of the current head has arrived
        self._header_count = 0
        self._messages = 0  # messages completed on this connection
        self._head_timer: asyncio.TimerHandle | None = None
        self._discard: BodyClock | None = None  # the clock of a body nobody reads
        self._discard_timer: asyncio.TimerHandle | None = None
        self._tickets: dict[RequestResponseCycle, Ticket] = {}  # let in, body still arriving
        self._lingering = -1  # bytes dropped since a closing answer; -1: not lingering
        self._answering: RequestResponseCycle | None = None  # the request whose task runs
        self._feeding = False  # inside data_received

    # -- connection --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._discard_timer):
            if timer is not None:
                timer.cancel()
        self._tickets.clear()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering >= 0:
            self._linger(len(data))
            return
        self._unset_keepalive_if_required()
        if self._discard is not None:
            self._discard.arrived(len(data), self.loop.time())
        self._feeding = True
        try:
            self._feed(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserCallbackError as exc:
            self._answer_and_close(_callback_error(exc.__context__))
        except httptools.HttpParserInvalidMethodError:
            self._answer_unknown_method(data)
        except httptools.HttpParserError as exc:
            self._answer_and_close(MalformedRequest(f"invalid HTTP request: {exc}"))
        except HeadersTooLarge as refused:
            self._answer_and_close(refused)
        finally:
            self._feeding = False
        self._arm_what_waits_on_the_client()

    def _arm_what_waits_on_the_client(self) -> None:
        """After a read, the clocks of what is left waiting on the client: a head begun but not
        complete, a body answered but not complete. Armed here rather than per message, so
        that a request whose head and body come in one read costs no timer at all."""
        if self.transport.is_closing() or self._lingering >= 0:
            return
        if self._head_began and self._head_timer is None:
            self._arm_head_clock()
        cycle = self.cycle
        answered = cycle is not None and cycle.response_complete and cycle.more_body
        if answered and self._discard is None:
            self._start_discard_clock()

    def _feed(self, data: bytes) -> None:
        """Feed the parser in pieces no larger than what the current head may still take, so
        that a head over the limit is refused before more of it is buffered (by httptools, as a
        header value in the making). A head that begins inside a piece is counted from the next
        one: a pipelined head can reach at most twice the limit."""
        limit = self._max_head
        view = memoryview(data)
        while view and not self.transport.is_closing():
            fed, messages = self._head_fed, self._messages
            piece, view = view[: limit - (fed or 0)], view[limit - (fed or 0) :]
            self.parser.feed_data(piece)
            if fed is not None and self._head_fed is not None and self._messages == messages:
                self._head_fed += len(piece)
                if self._head_fed >= limit:
                    raise HeadersTooLarge(f"the request head exceeds {limit} bytes")

    # -- parser callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_began = True  # its clock is armed after the read, if it is still incomplete
        self._header_count = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > (limit := self._max_url):
            raise URITooLong(f"the request target exceeds {limit} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > (limit := self._max_headers):
            raise HeadersTooLarge(f"the request has more than {limit} header fields")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._head_fed = None
        self._head_began = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._messages += 1
        self._head_fed = 0
        cycle = self.cycle
        if (ticket := self._tickets.pop(cycle, None)) is not None and not cycle.response_complete:
            ticket.take()  # complete now: the request may hold a place
        if self._discard is not None:  # the last of a body nobody read: idle until the next
            self._stop_discard_clock()
            self._arm_keep_alive()
        super().on_message_complete()

    # -- requests ----------------------------------------------------------------------------

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        scope = cast(Scope, cycle.scope)
        if self._over_cap() and scope["path"] not in PROBES:
            self._answer_over_cap(cycle, scope)
            return
        door = self.wiring.door
        decision = door.decide(scope) if door is not None else None
        if isinstance(decision, Refusal):
            self._refuse(cycle, scope, decision)
            return
        if decision is not None:
            if cycle.more_body:
                self._tickets[cycle] = decision
            else:  # a pipelined request, complete before its turn
                decision.take()
        self._answering = cycle
        super()._start_asgi_task(cycle, _holding(decision, self.app))

    def _busy(self) -> bool:
        """A request's answer is under way (or queued behind one): nothing else may be written."""
        answering = self._answering
        return bool(self.pipeline) or (answering is not None and not answering.response_complete)

    def _over_cap(self) -> bool:
        cap = self.wiring.settings.http_limit_concurrency
        return cap is not None and (len(self.connections) >= cap or len(self.tasks) >= cap)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self._feeding:  # (during a read: once it is done)
            self._arm_what_waits_on_the_client()  # answered before its body came?

    # -- answers -----------------------------------------------------------------------------

    def _refuse(self, cycle: RequestResponseCycle, scope: Scope, refused: Refusal) -> None:
        """The early door's overload 503, rendered once per distinct refusal (door.py)."""
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
        self.wiring.metrics.rejections.labels(reason=refused.error.code).inc()
        record(self.wiring.metrics, scope, 503, time.perf_counter() - started, request_id)
        cycle.on_response()

    def _answer_over_cap(self, cycle: RequestResponseCycle, scope: Scope) -> None:
        cap = self.wiring.settings.http_limit_concurrency
        error = Overloaded(f"more than {cap} connections or requests open", retry_after_s=1)
        cycle.response_started = cycle.response_complete = True
        self.pipeline.clear()  # the connection closes after this answer: none comes after it
        self._answer_and_close(error, scope["method"], scope["path"], scope["headers"])

    def _answer_unknown_method(self, data: bytes) -> None:
        """llhttp refuses a method it does not know (``FOO /v1/classify``) before it reads the
        target. The app answers it, from the request line read back, as it answers any method
        a route does not take (405 with Allow, or 404), under one method label; then the
        connection closes, its parser being in error."""
        target = request_target(data)
        if target is None or self._busy():
            self._answer_and_close(MalformedRequest("invalid HTTP request: invalid method"))
            return
        self._lingering = 0  # drop what follows; the answer closes the connection
        self.cycle = self._answering = cycle = self._last_cycle(self._scope_for(target))
        super()._start_asgi_task(cycle, self.app)

    def _scope_for(self, target: bytes) -> dict[str, Any]:
        """The scope uvicorn would have built for ``target``, without headers, under the one
        label for methods llhttp does not know."""
        url = httptools.parse_url(target)  # request_target took only printable ASCII
        return {
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "root_path": self.root_path,
            "method": OTHER_METHOD,
            "path": urllib.parse.unquote(url.path.decode("ascii")),
            "raw_path": url.path,
            "query_string": url.query or b"",
            "headers": [],
            "state": self.app_state.copy(),
        }

    def _last_cycle(self, scope: dict[str, Any]) -> RequestResponseCycle:
        """A request/response cycle with its body complete, whose answer closes the connection."""
        cycle = RequestResponseCycle(
            scope=cast(HTTPScope, scope),
            transport=self.transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=False,
            keep_alive=False,
            on_response=self.on_response_complete,
        )
        cycle.more_body = False
        return cycle

    def _answer_and_close(
        self,
        error: ImgclsError,
        method: str | None = None,
        path: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """Write ``error`` as the request's answer, then close the connection gently; or, when
        an earlier request's answer is under way, let that one be the last. What the request
        was is read from the parser's state where not given."""
        started = time.perf_counter()
        if self.transport.is_closing():
            return
        if self._busy():  # a response is on its way: it is the connection's last
            self.cycle.keep_alive = False
            if self._answering is not None:
                self._answering.keep_alive = False
            self._lingering = 0  # what follows is dropped
            return
        if path is None:
            path = self.url.split(b"?", 1)[0].decode("latin-1") if self.url else ""
        if method is None:  # llhttp has parsed the method once the target has begun
            method = self.parser.get_method().decode("ascii") if self.url else OTHER_METHOD
        request_id = request_id_from(headers if headers is not None else (self.headers or ()))
        elapsed = time.perf_counter() - started
        status, answer = wire(error, path, request_id, self.server_state.default_headers, elapsed)
        if method == "HEAD":  # the answer to a HEAD has no body, whatever its Content-Length
            answer = answer[: answer.index(b"\r\n\r\n") + 4]
        self.transport.write(answer)
        scope = scope_of(method, path, self.client, request_id)
        count(self.wiring.metrics, scope, status, error, elapsed)
        self._close_gently()

    # -- clocks ------------------------------------------------------------------------------

    def _arm_head_clock(self) -> None:
        timeout = self.wiring.settings.http_head_timeout_s
        self._head_timer = self.loop.call_later(timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._busy():
            self._arm_head_clock()  # the server is working on a request: not the client's wait
            return
        if self._head_began:
            timeout = self.wiring.settings.http_head_timeout_s
            self._answer_and_close(
                RequestTimeout(f"the request head did not arrive within {timeout:g} s")
            )
        else:
            self._closed_by("head_timeout")

    def _start_discard_clock(self) -> None:
        settings = self.wiring.settings
        self._discard = BodyClock.start(
            settings.body_idle_timeout_s, settings.body_min_rate_bytes_per_s, self.loop.time()
        )
        self._discard_timer = self.loop.call_at(self._discard.deadline(), self._discard_due)

    def _discard_due(self) -> None:
        """Re-armed here rather than on every read: one timer per deadline actually reached."""
        if self._discard is None or self.transport.is_closing():
            return
        if (deadline := self._discard.deadline()) > self.loop.time():
            self._discard_timer = self.loop.call_at(deadline, self._discard_due)
        else:
            self._closed_by("body_timeout")

    def _stop_discard_clock(self) -> None:
        if self._discard_timer is not None:
            self._discard_timer.cancel()
        self._discard = self._discard_timer = None

    def _arm_keep_alive(self) -> None:
        if self.timeout_keep_alive_task is None and not self.pipeline:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def _closed_by(self, reason: str) -> None:
        self.wiring.metrics.connections_closed.labels(reason=reason).inc()
        self.transport.close()

    # -- lingering close ---------------------------------------------------------------------

    def _close_gently(self) -> None:
        """Stop reading requests, tell the client we are done (FIN after the answer), and drop
        what it still sends for a moment: closing at once with its bytes unread would reset
        the connection, and the client would likely never read the answer."""
        self._lingering = 0
        self._unset_keepalive_if_required()
        for timer in (self._head_timer, self._discard_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._discard_timer = None
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(_LINGER_S, self.transport.close)

    def _linger(self, nbytes: int) -> None:
        self._lingering += nbytes
        if self._lingering > _LINGER_BYTES:
            self.transport.close()


def _callback_error(raised: BaseException | None) -> ImgclsError:
    """What a parser callback raised, as the answer: a limit's refusal, a malformed request
    (the target, parsed when the head completes), or our own failure (a 500 hiding its text)."""
    if isinstance(raised, ImgclsError):
        return raised
    if isinstance(raised, httptools.HttpParserError):
        return MalformedRequest(f"invalid HTTP request: {raised}")
    log.error("unhandled error in the HTTP protocol", exc_info=raised)
    return ImgclsError("unhandled error in the HTTP protocol")


def _holding(ticket: Ticket | None, app: ASGI3Application) -> ASGI3Application:
    """The request's task runs inside its ticket (or explicitly none: a pipelined request's
    task is created in the context of the one before it)."""

    async def run(scope: Any, receive: Any, send: Any) -> None:
        with holding(ticket):
            await app(scope, receive, send)

    return run
