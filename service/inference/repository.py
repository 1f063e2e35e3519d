"""The model repository: which versions are on disk, which serves, which were refused and why,
and the one way a version gets loaded (at start-up, by the API, on SIGHUP).

- Loads are serialized (one lock): two asked at once run one after the other, the last wins.
- A load verifies (manifest, sha256), opens and warms the version entirely beside the serving
  one; only then is ``install`` called, on the event loop, which swaps it in atomically.
- Without a version named: the newest valid one (service/model/versions.py), or the pinned one
  (IMGCLS_MODEL_VERSION). Versions are tried newest first, and the search stops at the one
  already serving: a SIGHUP with nothing newer on disk changes nothing.
- A refusal (ModelLoadFailed) is logged, counted (imgcls_model_loads_total{outcome="refused"})
  and kept as that version's state in the index until it loads; the serving version serves on.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from service.errors import ImgclsError, ModelLoadFailed
from service.model.loading import LoadedModel, ModelMeta, load_model, model_root
from service.model.manifest import ManifestError
from service.model.versions import Version, candidates, discover
from service.observability.metrics import Metrics
from service.settings import Settings

__all__ = ["Repository", "Trigger", "VersionState"]

log = logging.getLogger(__name__)

Install = Callable[[LoadedModel], None]
_REASON_CHARS = 300  # an ONNX Runtime error can run to pages; its first line says what failed


class Trigger(enum.Enum):
    STARTUP = "startup"
    API = "api"
    SIGNAL = "signal"


@dataclass(frozen=True, slots=True)
class VersionState:
    """One version as the index reports it (Triton's states)."""

    version: str
    state: str  # READY | LOADING | UNAVAILABLE
    reason: str  # "" when READY


class Repository:
    def __init__(self, settings: Settings, metrics: Metrics, install: Install) -> None:
        self._settings = settings
        self._metrics = metrics
        self._install = install
        self._lock = asyncio.Lock()
        self._serving: ModelMeta | None = None
        self._name: str | None = None  # the model's, once a version has loaded (kept on unload)
        self._loading: str | None = None
        self._refused: dict[str, str] = {}  # version -> why, until it loads
        self._root: Path | None = None

    @property
    def serving(self) -> ModelMeta | None:
        return self._serving

    @property
    def model_name(self) -> str | None:
        return self._name

    async def load(
        self,
        wanted: str | None,
        trigger: Trigger,
        warming_up: Callable[[], None] = lambda: None,
    ) -> ModelMeta:
        """Load ``wanted`` (None: the pinned or newest valid version) and swap it in; a version
        named explicitly is loaded again even if it serves (its files may have been replaced).
        Raises ModelNotFound (no such version on disk) or ModelLoadFailed (every candidate
        refused)."""
        async with self._lock:
            named = bool(wanted)
            versions = self._discover(trigger)
            refused: ModelLoadFailed | None = None
            for version in candidates(versions, wanted or self._settings.model_version):
                if not named and (serving := self._is_serving(version)) is not None:
                    return serving  # the newest valid one serves already: nothing to do
                try:
                    loaded = await self._load_one(version, trigger, warming_up)
                except ModelLoadFailed as exc:
                    refused = exc
                    continue
                self._install(loaded)
                self._serving = loaded.meta
                self._name = loaded.meta.name
                return loaded.meta
            assert refused is not None  # candidates() returns at least one version
            raise refused

    def _is_serving(self, version: Version) -> ModelMeta | None:
        serving = self._serving
        return serving if serving is not None and serving.version == version.name else None

    def unloaded(self) -> None:
        """The serving version was unloaded: nothing serves until the next load."""
        self._serving = None

    def index(self) -> list[VersionState]:
        """Every version on disk, newest first, with its state; an unreadable folder is []."""
        try:
            versions = discover(self._root or model_root(self._settings))
        except ManifestError as exc:
            log.warning("the model repository cannot be listed: %s", exc)
            return []
        return [self._state(v.name) for v in versions]

    def _state(self, name: str) -> VersionState:
        if name == self._loading:
            return VersionState(name, "LOADING", "")
        if self._serving is not None and name == self._serving.version:
            return VersionState(name, "READY", "")
        return VersionState(name, "UNAVAILABLE", self._refused.get(name, "not loaded"))

    def _discover(self, trigger: Trigger) -> list[Version]:
        try:
            self._root = self._root or model_root(self._settings)
            return discover(self._root)
        except ManifestError as exc:
            self._metrics.model_loads.labels(trigger=trigger.value, outcome="refused").inc()
            raise ModelLoadFailed(f"the model repository cannot be read: {exc}") from exc

    async def _load_one(
        self, version: Version, trigger: Trigger, warming_up: Callable[[], None]
    ) -> LoadedModel:
        started = time.perf_counter()
        self._loading = version.name
        try:
            loaded = await load_model(self._settings, version, warming_up=warming_up)
        except (ImgclsError, ManifestError, RuntimeError, OSError, ValueError) as exc:
            reason = _reason(exc)
            self._refused[version.name] = reason
            self._metrics.model_loads.labels(trigger=trigger.value, outcome="refused").inc()
            log.error("version %s refused (%s): %s", version.name, trigger.value, reason)
            raise ModelLoadFailed(f"version {version.name} refused: {reason}") from exc
        finally:
            self._loading = None
        self._refused.pop(version.name, None)
        self._metrics.model_loads.labels(trigger=trigger.value, outcome="loaded").inc()
        self._metrics.model_load_duration.observe(time.perf_counter() - started)
        return loaded


def _reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return lines[0][:_REASON_CHARS]
