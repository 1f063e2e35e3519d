"""What the protocol needs from the data plane: the Classifier's logits entry points, and the
serving version to hold for a request.

Every image of a request is its own call, so a request of N images puts N items through the
same admission, micro-batcher, deadline and cancellation as N /v1 images would."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Protocol

from service.inference.classifier import Scores, Serving
from service.inference.preprocess import Pixels
from service.inference.repository import VersionState
from service.limits.lifecycle import Readiness
from service.model.loading import ModelMeta

__all__ = ["Plane", "Scores", "Serving"]


class Plane(Protocol):
    @property
    def meta(self) -> ModelMeta: ...

    @property
    def labels(self) -> Sequence[str]: ...

    def readiness(self) -> Readiness: ...

    def hold(self) -> contextlib.AbstractContextManager[Serving]:
        """The serving version, kept until the block exits (every image of a request runs on
        it: pass it as ``on``)."""
        ...

    def versions(self) -> list[VersionState]: ...

    def liveness(self) -> str | None: ...

    async def logits(
        self, data: bytes, *, timeout_s: float | None = None, on: Serving | None = None
    ) -> Scores:
        """An encoded image (JPEG, PNG, ...), decoded with /v1's preprocessing."""
        ...

    async def logits_of_pixels(
        self, pixels: Pixels, *, timeout_s: float | None = None, on: Serving | None = None
    ) -> Scores:
        """Pixels already decoded by the caller: uint8 [H, W, 3] of the model's input size."""
        ...
