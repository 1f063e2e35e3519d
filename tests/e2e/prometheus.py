"""A real Prometheus (Debian's binary) for the end-to-end tests: scraping one target every
second, evaluating the given rule files every second, answering queries."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.e2e.conftest import free_port, require_binary, wait_until

JOB = "imgcls"


@dataclass
class Prometheus:
    client: httpx.Client
    log: Path

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query, now or ``at`` (Unix seconds)."""
        params: dict[str, str | float] = {"query": promql} | ({} if at is None else {"time": at})
        body = self.client.get("/api/v1/query", params=params).json()
        assert body["status"] == "success", (promql, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, promql: str) -> float | None:
        """The single sample's value, or None when the query returns nothing."""
        result = self.query(promql)
        assert len(result) <= 1, (promql, result)
        return float(result[0]["value"][1]) if result else None

    def group(self, name: str) -> dict[str, Any]:
        groups = self.client.get("/api/v1/rules").json()["data"]["groups"]
        found: dict[str, Any] = next(g for g in groups if g["name"] == name)
        return found

    def evaluated_again(self, group: str, timeout_s: float = 30) -> dict[str, Any]:
        """The rule group as its NEXT evaluation left it (every rule of one evaluation sees
        the same data): what a caller asserts on after the data it wants has been scraped."""
        before = self.group(group)["lastEvaluation"]
        wait_until(
            lambda: self.group(group)["lastEvaluation"] != before, timeout_s, "evaluation", self.log
        )
        return self.group(group)

    def firing(self) -> set[str]:
        alerts = self.client.get("/api/v1/alerts").json()["data"]["alerts"]
        return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}


@contextlib.contextmanager
def run_prometheus(
    tmp_path: Path,
    target: str,
    rule_files: Sequence[Path] = (),
    labels: Mapping[str, str] | None = None,
) -> Iterator[Prometheus]:
    """Prometheus scraping ``target`` (host:port) as job "imgcls", adding ``labels`` to its
    series (as a Kubernetes scrape adds namespace and pod); stopped on exit."""
    static = {"targets": [target], "labels": dict(labels or {})}
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [{"job_name": JOB, "static_configs": [static]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port, log = free_port(), tmp_path / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                require_binary("prometheus"),
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            wait_until(lambda: client.get("/-/ready").status_code == 200, 60, "ready", log)
            yield Prometheus(client, log)
    finally:
        process.terminate()
        process.wait(timeout=30)
