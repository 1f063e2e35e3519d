"""/docs (Swagger UI) and /redoc (ReDoc) under their Content-Security-Policy, in headless
chromium against a real server: each renders the API's title, nothing it needs from the
service is refused (every ``securitypolicyviolation`` is recorded from before the page's first
script), a script injected into the page is refused, and so is anything from another site
(ReDoc's "powered by" logo from its CDN)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.conftest import ServiceProcess, run_service
from tests.e2e.test_browser import browser

__all__ = ["browser"]

pytestmark = pytest.mark.slow

RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.cspViolations.push(`${event.effectiveDirective} ${event.blockedURI}`);
});
"""
INJECT = """
const script = document.createElement("script");
script.textContent = "window.injected = true";
document.body.appendChild(script);
return window.injected === true;
"""
TITLES = {
    "/docs": "document.querySelector('.swagger-ui .info .title')?.textContent",
    "/redoc": "document.querySelector('.api-info h1')?.textContent",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, trained_model_dir: Path) -> Iterator[Any]:
    with run_service(tmp_path_factory.mktemp("docs"), trained_model_dir) as served:
        yield served


@pytest.mark.parametrize("path", list(TITLES))
def test_the_api_docs_render_under_their_policy(
    browser: webdriver.Chrome, server: ServiceProcess, path: str
) -> None:
    script = browser.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_VIOLATIONS}
    )
    try:
        browser.get(f"{server.url}{path}")
        title = WebDriverWait(browser, 60).until(
            lambda driver: driver.execute_script(f"return {TITLES[path]}")
        )
        injected_ran = browser.execute_script(INJECT)
        violations = browser.execute_script("return window.cspViolations")
    finally:
        browser.execute_cdp_cmd(
            "Page.removeScriptToEvaluateOnNewDocument", {"identifier": script["identifier"]}
        )
    assert "imgcls" in title
    assert not injected_ran
    assert "script-src-elem inline" in violations
    elsewhere = [v for v in violations if v.split(" ", 1)[1].startswith("https://")]
    assert sorted(set(violations) - set(elsewhere)) == ["script-src-elem inline"]
