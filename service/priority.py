"""Worker threads yield the CPU to the event loop.

On 2 cores the decode workers and ONNX Runtime's threads can keep both cores busy, while the
event loop's share of a request is small but on the critical path of every caller: reading
uploads, answering, and above all refusing at the door under overload. With equal priority the
scheduler makes the loop wait its turn behind them, so a refused caller waits for its 503 as
long as an admitted one waits for its answer. Raising the workers' nice value (per thread on
Linux) lets the loop run as soon as it is ready; when the loop is idle the workers still get
every core, so throughput is unchanged.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)


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
