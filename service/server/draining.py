"""The uvicorn server this service runs on: one worker, httptools and uvloop where installed,
the HTTP protocol with the connection clocks, head bounds and early door
(service/server/protocol.py), and a graceful drain on SIGTERM.

SIGTERM/SIGINT drains first: readiness turns 503 and new requests get 503 "draining" at once,
admitted requests finish (up to IMGCLS_DRAIN_TIMEOUT_S), every response says ``Connection:
close``; then new handshakes are stopped, the port closes, open connections end (at most the
keep-alive timeout), and only then is uvicorn told to exit (exit code 0). A second signal skips
the drain. A model that fails to start makes the process exit 1.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import signal
import socket
import time
from types import FrameType

import uvicorn
from fastapi import FastAPI

from service.app import create_app, drain
from service.http.state import service_state
from service.server.syn_filter import stop_new_handshakes
from service.settings import Settings

log = logging.getLogger(__name__)

_ACCEPT_QUEUE_GRACE_S = 0.2


def http_stack() -> tuple[str, str]:
    """uvicorn's (http, loop): httptools and uvloop where installed (both dependencies), else
    the pure-Python h11 and asyncio's own loop. Named, not left to uvicorn's "auto", so the
    start-up log says which one serves.

    uvloop shortens the wait a request has for the event loop, the largest part of a refused
    request's time under overload; the drain keeps every accepted connection on it because new
    handshakes are stopped by a socket filter (service/server/syn_filter.py). Measured effect:
    docs/decisions/uvloop-and-syn-filter.md."""
    http = "httptools" if importlib.util.find_spec("httptools") is not None else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    return http, loop


def _protocol(http: str, app: FastAPI) -> str | type[asyncio.Protocol]:
    """On httptools, uvicorn's protocol with the clocks, the head bounds and the early door
    (service/server/protocol.py). On h11 (httptools missing), uvicorn's own: no head clock or
    head bounds beyond h11's, plain-text parse errors; the app's body clock still applies."""
    if http != "httptools":
        return http
    from service.server.protocol import Wiring, service_protocol  # imports httptools

    state = service_state(app)
    return service_protocol(Wiring(app, state.metrics, state.settings, state.early_door))


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI, drain_timeout_s: float) -> None:
        super().__init__(config)
        self._app = app
        self._drain_timeout_s = drain_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self.exit_code = 0

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is None or self._drain_task is not None or self.should_exit:
            super().handle_exit(sig, frame)  # not serving yet, or a second signal: no drain
            return
        log.info("signal %s: draining before exit", signal.Signals(sig).name)
        # A signal handler runs between two bytecodes of whatever the loop was doing: hand the
        # work to the loop instead of touching its structures from here.
        self._loop.call_soon_threadsafe(self._begin_drain, sig, frame)

    def _begin_drain(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_task is None:
            self._drain_task = asyncio.create_task(self._drain_then_exit(sig, frame))

    async def _drain_then_exit(self, sig: int, frame: FrameType | None) -> None:
        try:
            await drain(self._app, self._drain_timeout_s)
            await self._close_connections()
        finally:
            super().handle_exit(sig, frame)
            # uvicorn re-raises captured signals after shutdown, which would end the process
            # "killed by SIGTERM"; a completed graceful stop is a normal exit.
            self._captured_signals.clear()

    async def _close_connections(self) -> None:
        """Stop listening, then let open connections end on their own before uvicorn closes
        what is left. Uvicorn's own shutdown closes idle keep-alive connections at once, and
        a request already on its way over one is lost: measured with 32 looping callers,
        5 of httpx's and every raw keep-alive client's last request got no answer. Here,
        while draining, every response says ``Connection: close`` and the client reconnects;
        with the port closed it finds nothing listening (its request never sent, safe to send
        elsewhere). An idle connection ends at its keep-alive timeout, so this waits at most
        that long."""
        # Connections the kernel has completed or is completing, but nobody accepted yet, are
        # reset when the port closes, their requests unread. Stop new handshakes first and
        # give the loop a moment to accept (and answer) the ones under way: a new caller's
        # SYN goes unanswered, and once the port is closed its retry is refused.
        for listener in self.servers:
            for sock in listener.sockets:
                with socket.fromfd(sock.fileno(), sock.family, sock.type) as same_socket:
                    if not stop_new_handshakes(same_socket):
                        same_socket.listen(0)  # no filter here: a shorter queue, a narrower window
        await asyncio.sleep(_ACCEPT_QUEUE_GRACE_S)
        for listener in self.servers:
            listener.close()
        deadline = time.monotonic() + self.config.timeout_keep_alive + 0.5
        while self.server_state.connections and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # uvicorn signals no event when a connection ends

    def fail(self, exc: BaseException) -> None:
        """The model could not start: stop serving and exit non-zero."""
        self.exit_code = 1
        self.should_exit = True


def build_server(settings: Settings) -> DrainingServer:
    holder: list[DrainingServer] = []
    app = create_app(settings, on_start_failure=lambda exc: holder[0].fail(exc))
    http, loop = http_stack()
    protocol = _protocol(http, app)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol,
        loop=loop,
        workers=1,
        lifespan="on",
        log_config=None,  # keep our logging setup (JSON, request ids)
        access_log=False,  # our middleware writes the access log, with route and request id
        # Our protocol applies the cap itself (probes pass, a JSON 503 for the rest).
        limit_concurrency=settings.http_limit_concurrency if isinstance(protocol, str) else None,
        backlog=settings.http_backlog,
        timeout_keep_alive=int(max(1, settings.http_keep_alive_s)),
        timeout_graceful_shutdown=int(max(1, settings.drain_timeout_s)),
        server_header=False,
    )
    server = DrainingServer(config, app, settings.drain_timeout_s)
    holder.append(server)
    connections = server.server_state.connections
    service_state(app).metrics.open_connections.set_function(lambda: len(connections))
    return server
