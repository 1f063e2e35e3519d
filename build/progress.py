"""Progress bars for the build's long loops, on stderr, off with ``python -m build -q``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
_enabled = True


def quiet() -> None:
    global _enabled
    _enabled = False


def bar(items: Iterable[T], desc: str, unit: str) -> Iterator[T]:
    """``items`` with a bar that disappears when done (leave=False)."""
    return iter(tqdm(items, desc=desc, unit=unit, leave=False, disable=not _enabled))
