"""Bearer tokens, shared by the HTTP and gRPC transports: the accepted tokens (from
IMGCLS_API_TOKENS and IMGCLS_API_TOKENS_FILE, the file re-read when it changes) and the one
parser of an ``Authorization: Bearer <token>`` value. A presented token is compared with every
configured one in constant time (hmac.compare_digest, no early exit)."""

from __future__ import annotations

import hmac
import logging
import time
from pathlib import Path

from service.settings import Settings

log = logging.getLogger(__name__)

_RELOAD_EVERY_S = 5.0


def bearer_token(value: bytes) -> bytes | None:
    """The token of an ``Authorization`` value of the Bearer scheme, else None."""
    scheme, _, token = value.partition(b" ")
    if scheme.lower() == b"bearer" and token.strip():
        return bytes(token.strip())
    return None


class Tokens:
    """The accepted tokens: the setting's, plus the file's as it is now."""

    def __init__(self, fixed: list[str], file: Path | None) -> None:
        self._fixed = [t.encode() for t in fixed]
        self._file = file
        self._from_file: list[bytes] = []
        self._checked = float("-inf")
        self._mtime: float | None = None
        self.reload()

    @classmethod
    def from_settings(cls, settings: Settings) -> Tokens | None:
        fixed = settings.api_tokens.get_secret_value() if settings.api_tokens else ""
        tokens = cls([t.strip() for t in fixed.split(",") if t.strip()], settings.api_tokens_file)
        return tokens if tokens.configured else None

    @property
    def configured(self) -> bool:
        return bool(self._fixed or self._file is not None)

    def reload(self) -> None:
        """Read the file again if it changed. A missing or unreadable file keeps the tokens
        read last (a rotation half done must not lock everyone out), and says so."""
        self._checked = time.monotonic()
        if self._file is None:
            return
        try:
            mtime = self._file.stat().st_mtime
            if mtime == self._mtime:
                return
            lines = self._file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            log.warning("cannot read the API tokens file %s: %s", self._file, exc)
            return
        self._mtime = mtime
        self._from_file = [
            line.strip().encode() for line in lines if line.strip() and not line.startswith("#")
        ]
        log.info("API tokens file read: %d tokens", len(self._from_file))

    def accepts(self, presented: bytes) -> bool:
        if time.monotonic() - self._checked > _RELOAD_EVERY_S:
            self.reload()
        found = False
        for token in self._fixed + self._from_file:
            found |= hmac.compare_digest(presented, token)
        return found
