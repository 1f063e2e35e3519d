"""Process tuning, each measured where it was decided (docs/decisions/):

- ``available_cpus``: the CPUs this process may really use, the smaller of its affinity mask and
  its cgroup CPU quota (ONNX Runtime sizes its pool from the host's cores otherwise).
- ``lower_thread_priority``: decode workers and inference threads run nicer than the event loop,
  so the loop answers (and refuses) at once however busy they are.
- ``return_large_frees_to_os``: glibc's mmap threshold fixed at 1 MB, so the memory of a large
  image goes back to the OS after it is decoded.
- ``keep_image_blocks``: optionally, Pillow keeps a bounded number of freed 2 MiB image blocks
  for the next decode, so a large image's pixels are not mapped and zero-filled afresh.
- ``freeze_startup_objects``: start-up's long-lived objects moved out of the garbage
  collector's walks, so a full collection does not stall the loop.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import math
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

_CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
_CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
_CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")

_M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
MMAP_THRESHOLD_BYTES = 1 << 20


def cgroup_cpu_limit(
    v2: Path = _CGROUP_V2, v1_quota: Path = _CGROUP_V1_QUOTA, v1_period: Path = _CGROUP_V1_PERIOD
) -> float | None:
    """CPUs allowed by the cgroup quota, or None when there is no quota."""
    try:
        quota, period = v2.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(v1_quota.read_text())
        period_us = int(v1_period.read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 else quota_us / period_us


def available_cpus() -> int:
    """Whole CPUs this process can use (at least 1)."""
    affinity = len(os.sched_getaffinity(0))
    limit = cgroup_cpu_limit()
    if limit is None:
        return max(1, affinity)
    return max(1, min(affinity, math.ceil(limit)))


def lower_thread_priority(niceness: int) -> None:
    """Add ``niceness`` to the calling thread's nice value (0: leave it). Threads it creates
    afterwards inherit the value: ONNX Runtime's intra-op pool does, if the session is created
    here. Where the platform cannot (not Linux, or a sandbox refuses), logs and goes on."""
    if niceness <= 0:
        return
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + niceness))
    except (OSError, AttributeError) as exc:
        log.info("worker threads keep the loop's priority: %s", exc)


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


IMAGE_BLOCK_BYTES = 2 << 20  # above the mmap threshold: a block beyond the cache goes back
PILLOW_BLOCK_BYTES = 16 << 20  # Pillow's own block size, kept when no block is kept
_PILLOW_BLOCK_ENV = ("PILLOW_BLOCK_SIZE", "PILLOW_BLOCKS_MAX")


def keep_image_blocks(cache_bytes: int) -> int:
    """Let Pillow keep up to ``cache_bytes`` of freed image memory, in 2 MiB blocks, for the
    next image; 0 keeps none, with Pillow's own 16 MiB blocks (its defaults). Unless the
    operator set PILLOW_BLOCK_SIZE or PILLOW_BLOCKS_MAX themselves. Returns how many blocks
    may be kept (-1: left to those variables).

    At most ``cache_bytes`` more stays resident between images; at the peak the kept blocks
    are the ones in use, so the peak does not grow (docs/decisions/image-block-cache.md)."""
    if any(name in os.environ for name in _PILLOW_BLOCK_ENV):
        return -1
    # Pillow's C core (PIL.Image.core), whose block pool PILLOW_BLOCK_SIZE/BLOCKS_MAX set
    from PIL import _imaging as pillow_core

    blocks = cache_bytes // IMAGE_BLOCK_BYTES
    pillow_core.set_blocks_max(0)  # frees what was kept, before the block size changes
    pillow_core.set_block_size(IMAGE_BLOCK_BYTES if blocks else PILLOW_BLOCK_BYTES)
    pillow_core.set_blocks_max(blocks)
    return blocks


def freeze_startup_objects() -> int:
    """Collect what start-up left as garbage, then freeze the rest (gc.freeze). Returns how
    many objects the collector will no longer walk."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("garbage collector: %d start-up objects frozen", frozen)
    return frozen
