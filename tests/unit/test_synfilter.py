"""The drain's last step: a listener that stops new handshakes still hands over the connections
already made, with the request bytes their clients sent, and lets no new one in."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator

import pytest

from service.server.syn_filter import stop_new_handshakes

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="a Linux socket filter")


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock


def test_connections_made_before_are_accepted_with_their_request(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    with socket.create_connection(("127.0.0.1", port)) as early:
        early.sendall(b"POST / HTTP/1.1\r\n")
        assert stop_new_handshakes(listener)
        accepted, _ = listener.accept()
        with accepted:
            accepted.settimeout(5)
            assert accepted.recv(64) == b"POST / HTTP/1.1\r\n"


def test_a_new_caller_gets_no_answer_and_never_reaches_the_accept_queue(
    listener: socket.socket,
) -> None:
    port = listener.getsockname()[1]
    assert stop_new_handshakes(listener)
    with pytest.raises(TimeoutError):  # the SYN is dropped: no connection, nothing sent
        socket.create_connection(("127.0.0.1", port), timeout=0.3)
    listener.settimeout(0.1)
    with pytest.raises(TimeoutError):  # and nothing reached the accept queue
        listener.accept()
    # Without the filter the same call connects at once (the test would fail above).
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        socket.create_connection(other.getsockname(), timeout=0.3).close()
