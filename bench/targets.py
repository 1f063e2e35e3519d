"""The targets and the write-up's figures, read once from bench/targets.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path

TARGETS: dict[str, dict[str, float]] = tomllib.loads(
    (Path(__file__).parent / "targets.toml").read_text()
)
WRITEUP = TARGETS["writeup"]
HTTP = TARGETS["http"]
PEERS = TARGETS["peers"]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"
