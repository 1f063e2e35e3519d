"""The prediction-drift rules of deploy/prometheus/alerts.yml under promtool's unit tests
(tests/deploy/prometheus/prediction_alerts_test.yml): the real Prometheus rule engine on
synthetic series, so the 15-minute ``for`` and the hour's windows are covered in a second.
tests/e2e/test_prediction_alerts.py fires the same rules on a real service's answers."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.conftest import REPO
from tests.e2e.conftest import require_binary

ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
UNIT_TESTS = REPO / "tests" / "deploy" / "prometheus" / "prediction_alerts_test.yml"


def promtool_test(unit_tests: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool"), "test", "rules", unit_tests.name],
        cwd=unit_tests.parent,  # rule_files are relative to the test file
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_prediction_rules_pass_their_unit_tests() -> None:
    result = promtool_test(UNIT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_unit_tests_catch_a_threshold_moved(tmp_path: Path) -> None:
    """The same unit tests on a copy whose confidence threshold is 0.2 instead of 0.75."""
    rules = ALERTS.read_text()
    assert rules.count("< 0.75 * job:imgcls_prediction_baseline_confidence:max") == 1
    deploy = tmp_path / "deploy" / "prometheus"
    deploy.mkdir(parents=True)
    (deploy / "alerts.yml").write_text(rules.replace("< 0.75 * job", "< 0.2 * job"))
    tests = tmp_path / "tests" / "deploy" / "prometheus"
    tests.mkdir(parents=True)
    shutil.copy(UNIT_TESTS, tests)

    result = promtool_test(tests / UNIT_TESTS.name)

    assert result.returncode != 0
    assert "ImgclsPredictionConfidenceLow" in result.stdout + result.stderr
