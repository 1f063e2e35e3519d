"""Keep the garbage collector's pauses short: freeze what start-up built.

CPython's cyclic collector walks every tracked object of a generation, on the thread that
happened to allocate, holding the GIL: the event loop stops for as long as it takes. After
start-up the heap holds ~80,000 long-lived objects (FastAPI, pydantic, ONNX Runtime's
bindings, numpy, the loaded model's metadata) that never become garbage, and a full
collection walks them all. Measured in the server (gc callbacks, bench.overload, AVX2
machine): full collections of this heap took 69-102 ms. Both seen in a 70 s run may have
fallen in start-up rather than under load (the collector does not say); a long-running
server still pays one whenever enough survivors pile up, stalling every request meanwhile.

gc.freeze() moves every object alive at that moment into a permanent generation that the
collector never walks again; what requests allocate is collected as before. Done once the
model is loaded and warmed up, just before readiness, so warm-up's own objects are frozen too.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


def freeze_startup_objects() -> int:
    """Collect what start-up left as garbage, then freeze the rest. Returns how many objects
    the collector will no longer walk."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("garbage collector: %d start-up objects frozen", frozen)
    return frozen
