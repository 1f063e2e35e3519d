"""The protocol's model repository extension (Triton's "model_repository"), transport-neutral:
index, load and unload of the one model this server serves, by version.

Triton's load takes no version (its config's version policy picks them); here the load request
may name one, ``{"parameters": {"version": "2"}}``: loading a named version is how a rollback
is done. Triton's other load parameters (``config``, ``file:*``) override a model's files
from the request, which this server refuses (its files are verified against their manifest).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from service.errors import InvalidParameter, ModelNotFound
from service.inference.repository import VersionState
from service.model.loading import ModelMeta

__all__ = ["IndexEntry", "ModelControl", "index", "load", "unload"]

_IGNORED = frozenset({"unload_dependents"})  # Triton's unload flag: no dependents here


class ModelControl(Protocol):
    @property
    def model_name(self) -> str | None: ...

    def versions(self) -> list[VersionState]: ...

    async def load(self, version: str | None) -> ModelMeta: ...

    async def unload(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class IndexEntry:
    name: str
    version: str
    state: str  # READY | LOADING | UNAVAILABLE
    reason: str


def index(control: ModelControl, *, ready_only: bool = False) -> list[IndexEntry]:
    """Every version on disk, newest first (only the READY one when ``ready_only``)."""
    name = control.model_name or ""
    entries = [IndexEntry(name, v.version, v.state, v.reason) for v in control.versions()]
    return [e for e in entries if e.state == "READY"] if ready_only else entries


async def load(control: ModelControl, name: str, parameters: Mapping[str, Any]) -> ModelMeta:
    """Load the version ``parameters`` names (else the pinned or newest valid one) and swap it
    in. ModelNotFound, InvalidParameter or ModelLoadFailed otherwise."""
    _check_name(control, name)
    return await control.load(_version(parameters))


async def unload(control: ModelControl, name: str, parameters: Mapping[str, Any]) -> str | None:
    _check_name(control, name)
    _refuse_unknown(parameters, _IGNORED)
    return await control.unload()


def _check_name(control: ModelControl, name: str) -> None:
    served = control.model_name
    if served is not None and name != served:
        raise ModelNotFound(f"unknown model {name!r}; this server's repository holds {served!r}")


def _version(parameters: Mapping[str, Any]) -> str | None:
    _refuse_unknown(parameters, frozenset({"version"}))
    version = parameters.get("version")
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, str | int) or str(version) == "":
        raise InvalidParameter(f"parameters.version must be a version's name, got {version!r}")
    return str(version)


def _refuse_unknown(parameters: Mapping[str, Any], known: frozenset[str]) -> None:
    unknown = sorted(set(parameters) - known)
    if unknown:
        raise InvalidParameter(
            f"unsupported parameters {unknown}: a load takes only 'version' (files are read "
            "from the model folder and checked against their manifest, never sent)"
        )
