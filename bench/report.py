"""The report: each benchmark returns a Section (markdown, plots, raw data); report.md strings
them together under the machine description, and results.json keeps the raw numbers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.machine import MachineInfo, machine_info


@dataclass
class Section:
    name: str  # module name: engines, accuracy, http, peers, coldstart, summary
    title: str
    body: list[str] = field(default_factory=list)  # markdown paragraphs and tables
    plots: list[str] = field(default_factory=list)  # file names inside the results folder
    data: dict[str, Any] = field(default_factory=dict)

    def add(self, text: str) -> None:
        self.body.append(text)

    def markdown(self) -> str:
        parts = [f"## {self.title}", *self.body]
        parts += [f"![{Path(plot).stem}]({plot})" for plot in self.plots]
        return "\n\n".join(parts)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(
    out_dir: Path, sections: Sequence[Section], quick: bool, machine: MachineInfo | None = None
) -> Path:
    machine = machine or machine_info()
    title = "# imgcls benchmark report" + (
        " (QUICK MODE: checks only, not figures)" if quick else ""
    )
    text = "\n\n".join([title, "## Machine", machine.markdown(), *(s.markdown() for s in sections)])
    report = out_dir / "report.md"
    report.write_text(text + "\n")
    raw = {"machine": machine.__dict__, "quick": quick, **{s.name: s.data for s in sections}}
    (out_dir / "results.json").write_text(json.dumps(raw, indent=2, default=str) + "\n")
    return report


def save_section_data(out_dir: Path, section: Section) -> None:
    (out_dir / f"{section.name}.json").write_text(
        json.dumps(section.data, indent=2, default=str) + "\n"
    )
