"""The v2 tests reuse tests/api's in-process app on the real model (``real``) and
tests/e2e's real server (``run_service``); the wire helpers are in tests/v2/wire.py."""

from __future__ import annotations

from tests.api.conftest import anyio_backend, real, real_settings

__all__ = ["anyio_backend", "real", "real_settings"]
