"""Hand large freed buffers back to the OS at once (glibc's malloc).

glibc serves an allocation above its mmap threshold with a mapping of its own, unmapped on
free. By default the threshold is dynamic: each time such a block is freed it rises to that
block's size (up to 32 MB), so from then on Pillow's 16 MB image blocks come from per-thread
heaps, which glibc seldom trims. Measured in the server (efficientnet_lite0, two decode
workers, 6300x6300 RGBA PNGs): after two decodes one after the other RSS stayed 170 MB up, and
four at once peaked at 810 MB although the decode budget lets only one decode at a time. With
the threshold fixed at 1 MB (fixing it also stops the raising) RSS returns to its level at
ready after each, and four at once peak at 554 MB, one decode's worth above it. Allocations
under 1 MB (a 500x375 photo, a batch of pixels) are unaffected.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
MMAP_THRESHOLD_BYTES = 1 << 20


def return_large_frees_to_os() -> bool:
    """Fix glibc's mmap threshold, unless the operator set MALLOC_MMAP_THRESHOLD_ themselves.
    False (and nothing changed) where the C library is not glibc."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.info("not glibc: large freed buffers are left to the C library's own policy")
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
