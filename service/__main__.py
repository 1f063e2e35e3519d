"""``python -m service`` (console script ``imgcls-serve``): settings from IMGCLS_* variables,
JSON logs, and ONE uvicorn worker serving create_app(settings) (service/server/draining.py).

One worker, always: a second worker would load a second model, split the batches and break
the per-process Prometheus registry. Scale with replicas.
"""

from __future__ import annotations

import logging
import sys

from service.observability.logs import setup_logging
from service.process import keep_image_blocks, return_large_frees_to_os
from service.server.draining import build_server, http_stack
from service.settings import Settings

log = logging.getLogger("service")


def main() -> None:
    settings = Settings()
    setup_logging(settings.log_format, settings.log_level)
    return_large_frees_to_os()  # decode memory must fall back after each large image
    keep_image_blocks(settings.image_block_cache_bytes)  # or, opted in, a bounded part reused
    log.info(
        "starting on http://%s:%d (one worker, %s on %s)",
        settings.host,
        settings.port,
        *http_stack(),
        extra={"settings": settings.model_dump(mode="json")},
    )
    server = build_server(settings)
    server.run()
    sys.exit(server.exit_code)


if __name__ == "__main__":
    main()
