"""Bearer tokens, shared by the HTTP and gRPC transports: the accepted tokens (from
IMGCLS_API_TOKENS and IMGCLS_API_TOKENS_FILE) and the one parser of an ``Authorization: Bearer
<token>`` value. A presented token is compared with every configured one in constant time
(hmac.compare_digest, no early exit).

The file is UTF-8 text, one token per line; ``#`` starts a comment that runs to the end of
the line (a bearer token, RFC 6750's b64token, holds no ``#`` and no space); blank lines are
ignored; a line that is not a valid token is skipped with a warning naming its line number,
never its text. The file is read again every few seconds and a change is seen by its content,
not its modification time. A file that cannot be read, is not UTF-8, is larger than 1 MiB or
holds no token keeps the tokens read last (a rotation half done must not lock everyone out),
and the log says why."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from pathlib import Path

from service.settings import Settings

log = logging.getLogger(__name__)

_RELOAD_EVERY_S = 5.0
_MAX_FILE_BYTES = 1 << 20
# RFC 6750 section 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def bearer_token(value: bytes) -> bytes | None:
    """The token of an ``Authorization`` value of the Bearer scheme, else None."""
    scheme, _, token = value.partition(b" ")
    if scheme.lower() == b"bearer" and token.strip():
        return bytes(token.strip())
    return None


def parse_tokens(text: str, source: str) -> list[bytes]:
    """The tokens of a tokens file's text (see the module's docstring for the rules)."""
    tokens = []
    for number, line in enumerate(text.splitlines(), start=1):
        token = line.split("#", 1)[0].strip()
        if not token:
            continue
        if _B64TOKEN.fullmatch(token):
            tokens.append(token.encode())
        else:
            log.warning(
                "%s line %d is not a bearer token (RFC 6750 b64token): skipped", source, number
            )
    return tokens


class Tokens:
    """The accepted tokens: the setting's, plus the file's as it is now."""

    def __init__(self, fixed: list[str], file: Path | None) -> None:
        self._fixed = [t.encode() for t in fixed]
        self._file = file
        self._from_file: list[bytes] = []
        self._checked = float("-inf")
        self._digest: bytes | None = None  # of the file's content last seen
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
        """Read the file again; take its tokens if its content changed and is usable."""
        self._checked = time.monotonic()
        if self._file is None:
            return
        content = self._read(self._file)
        if content is None:
            return
        digest = hashlib.sha256(content).digest()
        if digest == self._digest:
            return
        self._digest = digest  # a bad content is reported once, not every few seconds
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError as exc:
            self._keep(f"it is not UTF-8 (byte {exc.start})")
            return
        tokens = parse_tokens(text, str(self._file))
        if not tokens:
            self._keep("it holds no token")
            return
        self._from_file = tokens
        log.info("API tokens file %s read: %d tokens", self._file, len(tokens))

    def accepts(self, presented: bytes) -> bool:
        if time.monotonic() - self._checked > _RELOAD_EVERY_S:
            self.reload()
        found = False
        for token in self._fixed + self._from_file:
            found |= hmac.compare_digest(presented, token)
        return found

    def _read(self, file: Path) -> bytes | None:
        try:
            with file.open("rb") as stream:
                content = stream.read(_MAX_FILE_BYTES + 1)
        except OSError as exc:
            self._keep(f"it cannot be read ({exc.strerror or exc})")
            return None
        if len(content) > _MAX_FILE_BYTES:
            self._keep(f"it is larger than {_MAX_FILE_BYTES} bytes")
            return None
        return content

    def _keep(self, why: str) -> None:
        log.warning(
            "API tokens file %s: %s; keeping the %d tokens read before",
            self._file,
            why,
            len(self._from_file),
        )
