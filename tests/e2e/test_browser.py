"""The upload page in a real browser: headless Debian chromium (driven through chromedriver)
against a real ``python -m service``, uploading a real photo and reading the top-1 from the DOM.
And the UNTRAINED banner, shown for the random-weights model and hidden for the trained one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ServiceProcess, require_binary, run_service
from tests.e2e.webdriver import Session, chromium_session

pytestmark = pytest.mark.slow

# Resolves once the page has shown an answer (or an error): a MutationObserver, not a poll.
WAIT_FOR_ANSWER = """
const done = arguments[arguments.length - 1];
const report = () => done({
  state: document.body.dataset.state,
  error: document.getElementById("error").textContent,
  rows: [...document.querySelectorAll("#results .prediction")].map((row) => ({
    rank: Number(row.dataset.rank),
    classIndex: Number(row.dataset.classIndex),
    label: row.querySelector(".label").textContent,
    width: row.querySelector(".bar > div").style.width,
  })),
  timing: document.getElementById("timing").textContent,
  banner: getComputedStyle(document.getElementById("untrained")).display,
});
if (document.body.dataset.state) { report(); }
else {
  new MutationObserver((_, observer) => { observer.disconnect(); report(); })
    .observe(document.body, { attributes: true, attributeFilter: ["data-state"] });
}
"""
# Resolves once /v1/model has been fetched and shown.
WAIT_FOR_MODEL = """
const done = arguments[arguments.length - 1];
const model = document.getElementById("model");
const report = () => done({
  model: model.textContent,
  banner: getComputedStyle(document.getElementById("untrained")).display,
});
if (!model.textContent.endsWith("loading...")) { report(); }
else {
  new MutationObserver((_, observer) => { observer.disconnect(); report(); })
    .observe(model, { childList: true, characterData: true, subtree: true });
}
"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    chromium = require_binary("chromium")
    chromedriver = require_binary("chromedriver")
    profile = tmp_path_factory.mktemp("chromium") / "profile"  # fresh --user-data-dir
    with chromium_session(chromedriver, chromium, profile) as session:
        yield session


def test_upload_a_photo_and_read_the_top1(
    browser: Session, trained_server: ServiceProcess, photos: dict[str, Any], data_dir: Path
) -> None:
    browser.open(trained_server.url + "/")
    model = browser.run_async(WAIT_FOR_MODEL)
    assert model["model"].startswith("model: efficientnet_lite0 ")
    assert model["banner"] == "none"
    browser.send_file("#file", data_dir / "photos" / "chelsea.png")
    page = browser.run_async(WAIT_FOR_ANSWER)
    assert page["state"] == "done", page["error"]
    assert [row["rank"] for row in page["rows"]] == [1, 2, 3]
    top1 = page["rows"][0]
    assert top1["classIndex"] in photos["chelsea.png"]["accept"]
    assert top1["label"] in photos["chelsea.png"]["accept_names"]
    assert top1["width"].endswith("%")
    assert page["timing"].startswith("decode ")
    assert page["banner"] == "none"


def test_untrained_model_shows_the_banner(
    browser: Session, tmp_path: Path, artifacts_dir: Path
) -> None:
    untrained = artifacts_dir / "resnet18"
    if not (untrained / "manifest.json").is_file():
        pytest.fail(f"no built model in {untrained}: run `make test-models`")
    with run_service(tmp_path, untrained) as server:
        browser.open(server.url + "/")
        model = browser.run_async(WAIT_FOR_MODEL)
    assert model["model"].startswith("model: resnet18 ")
    assert model["banner"] == "block"
