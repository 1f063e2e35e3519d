"""The upload page in a real browser: headless Debian chromium (driven by Selenium through
Debian's chromedriver) against a real ``python -m service``, uploading a real photo and reading
the top-1 from the DOM. And the UNTRAINED banner, shown for the random-weights model and hidden
for the trained one."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from tests.e2e.conftest import ServiceProcess, require_binary, run_service

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


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCRIPT_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    chromium = require_binary("chromium")
    chromedriver = require_binary("chromedriver")
    workdir = tmp_path_factory.mktemp("chromium")
    profile = workdir / "profile"  # fresh --user-data-dir
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    # An explicit driver path makes Selenium skip Selenium Manager (which would download a
    # browser or driver); SE_OFFLINE keeps it off the network should it ever run anyway.
    # Its own session: chromium is chromedriver's child, and stopping only the driver could
    # leave the browser running after the test.
    service = Service(
        executable_path=chromedriver,
        log_output=str(workdir / "chromedriver.log"),
        popen_kw={"start_new_session": True},
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SE_OFFLINE", "true")
        env.delenv("SE_CHROMEDRIVER", raising=False)  # would override executable_path
        try:
            driver = webdriver.Chrome(service=service, options=options)
            try:
                driver.set_script_timeout(SCRIPT_TIMEOUT_S)
                yield driver
            finally:
                driver.quit()  # ends chromium, then stops chromedriver
        finally:
            if service.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(service.process.pid, signal.SIGKILL)  # whatever quit left behind
                service.process.wait(timeout=30)
    _assert_no_browser_left(profile)


def _assert_no_browser_left(profile: Path, timeout_s: float = 10.0) -> None:
    """No process still runs with this test's profile: chromium did not outlive the test."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = _processes_using(profile)
        if not left:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"chromium outlived the test: {left}")
        time.sleep(0.1)


def _processes_using(profile: Path) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if f"--user-data-dir={profile}" in cmdline:
                found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def test_upload_a_photo_and_read_the_top1(
    browser: webdriver.Chrome,
    trained_server: ServiceProcess,
    photos: dict[str, Any],
    photo_paths: dict[str, Path],
) -> None:
    browser.get(trained_server.url + "/")
    model = browser.execute_async_script(WAIT_FOR_MODEL)
    assert model["model"].startswith("model: efficientnet_lite0 ")
    assert model["banner"] == "none"
    upload = browser.find_element(By.CSS_SELECTOR, "#file")
    upload.send_keys(str(photo_paths["chelsea.png"]))
    page = browser.execute_async_script(WAIT_FOR_ANSWER)
    assert page["state"] == "done", page["error"]
    assert [row["rank"] for row in page["rows"]] == [1, 2, 3]
    top1 = page["rows"][0]
    assert top1["classIndex"] in photos["chelsea.png"]["accept"]
    assert top1["label"] in photos["chelsea.png"]["accept_names"]
    assert top1["width"].endswith("%")
    assert page["timing"].startswith("decode ")
    assert page["banner"] == "none"


def test_untrained_model_shows_the_banner(
    browser: webdriver.Chrome, tmp_path: Path, artifacts_dir: Path
) -> None:
    untrained = artifacts_dir / "resnet18"
    if not (untrained / "manifest.json").is_file():
        pytest.fail(f"no built model in {untrained}: run `make test-models`")
    with run_service(tmp_path, untrained) as server:
        browser.get(server.url + "/")
        model = browser.execute_async_script(WAIT_FOR_MODEL)
    assert model["model"].startswith("model: resnet18 ")
    assert model["banner"] == "block"


def test_with_tokens_the_page_asks_for_one_then_classifies(
    browser: webdriver.Chrome,
    tmp_path: Path,
    trained_model_dir: Path,
    photos: dict[str, Any],
    photo_paths: dict[str, Path],
) -> None:
    """IMGCLS_API_TOKENS set: the page (under its Content-Security-Policy, scripts from the
    service only) shows the token form on the API's 401, then works with the token."""
    with run_service(tmp_path, trained_model_dir, IMGCLS_API_TOKENS="s3cret") as server:
        browser.get(server.url + "/")
        asked = browser.execute_async_script(WAIT_FOR_MODEL)
        form = browser.find_element(By.CSS_SELECTOR, "#auth")
        shown = form.is_displayed()
        browser.find_element(By.CSS_SELECTOR, "#token").send_keys("s3cret")
        # Reset before submitting, so the wait below sees the reload's answer whenever it comes.
        browser.execute_script('document.getElementById("model").textContent = "loading..."')
        form.submit()
        model = browser.execute_async_script(WAIT_FOR_MODEL)
        browser.find_element(By.CSS_SELECTOR, "#file").send_keys(str(photo_paths["chelsea.png"]))
        page = browser.execute_async_script(WAIT_FOR_ANSWER)
        browser.execute_script("sessionStorage.clear()")  # the next test starts signed out
    assert asked["model"] == "model: sign in below"
    assert shown
    assert model["model"].startswith("model: efficientnet_lite0 ")
    assert page["state"] == "done", page["error"]
    assert page["rows"][0]["classIndex"] in photos["chelsea.png"]["accept"]
