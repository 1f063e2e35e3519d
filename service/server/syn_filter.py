"""Close a listening socket without resetting a connection whose request is already on its way.

Closing a listener resets every connection the kernel holds for it: those completed but not
yet accepted, and those whose handshake is under way. Their clients have already sent their
requests, which nobody reads: a request lost without an answer. No delay before the close
avoids it, since new handshakes keep arriving until the very last instant.

What does: tell the kernel to stop starting handshakes first. A socket filter on the listener
that drops every new SYN (SYN without ACK) leaves the packets of handshakes already under way
untouched, so they complete into the accept queue and the loop accepts and answers them. A
new caller's SYN goes unanswered; its retry, a second later, finds the port closed and is
refused: nothing sent, safe to send elsewhere.
"""

from __future__ import annotations

import ctypes
import logging
import socket
import struct

log = logging.getLogger(__name__)

_SO_ATTACH_FILTER = 26  # Linux, <asm-generic/socket.h>; Python's socket module does not name it

# A classic BPF program. A TCP socket filter sees the packet from its TCP header on; byte 13
# holds the flags. Drop (return 0) when SYN is set and ACK is not; keep the rest whole.
_TCP_FLAGS, _SYN, _ACK = 13, 0x02, 0x10
_DROP_NEW_SYN = (
    (0x30, 0, 0, _TCP_FLAGS),  # ldb [13]
    (0x54, 0, 0, _SYN | _ACK),  # and #(SYN|ACK)
    (0x15, 0, 1, _SYN),  # jeq #SYN: next, else skip one
    (0x06, 0, 0, 0),  # ret #0: drop
    (0x06, 0, 0, 0xFFFFFFFF),  # ret #-1: keep the whole packet
)


def stop_new_handshakes(sock: socket.socket) -> bool:
    """Drop new SYNs on this listening TCP socket from now on. False where the platform has no
    such filter (not Linux) or refuses it; the caller then falls back to a shorter accept
    queue, which narrows the window without closing it."""
    program = ctypes.create_string_buffer(
        b"".join(struct.pack("HBBI", *instruction) for instruction in _DROP_NEW_SYN)
    )
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }, native alignment.
    fprog = struct.pack("HP", len(_DROP_NEW_SYN), ctypes.addressof(program))
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
    except OSError as exc:
        log.info("cannot stop new handshakes before closing the port: %s", exc)
        return False
    return True  # the kernel copied the program: the buffer may go
