"""docs/reference/settings.md, generated from ``Settings``: each field's env var, default and
description, grouped as the class groups them, expert knobs apart.

    python -m service.settings_reference > docs/reference/settings.md
"""

from __future__ import annotations

from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from service.settings import Settings

_HEADER = """# Settings

Environment variables with the prefix `IMGCLS_`, read once at start-up into one
`service.settings.Settings` that is passed down. Generated from that class by
`python -m service.settings_reference`; do not edit by hand (a test compares them).

Build, bench and tests (not the service) also read `IMGCLS_DATA_DIR`: the labeled images for
calibration and evaluation (default `../shared/data`, never copied into the repository).
"""


def _extra(info: FieldInfo) -> dict[str, Any]:
    extra = info.json_schema_extra
    return extra if isinstance(extra, dict) else {}


def _default(info: FieldInfo) -> str:
    if (text := _extra(info).get("default_text")) is not None:
        return str(text)
    default = info.default
    if default is None or default is PydanticUndefined:
        return "unset"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, int) and default >= 1 << 20 and default % (1 << 20) == 0:
        return f"`{default}` ({default >> 20} MiB)"
    return f"`{default}`" if default != "" else "empty"


def _rows(fields: list[tuple[str, FieldInfo]]) -> list[str]:
    rows = ["| env var | default | what it does |", "|---|---|---|"]
    for name, info in fields:
        description = (info.description or "").replace("|", "\\|")
        rows.append(f"| `IMGCLS_{name.upper()}` | {_default(info)} | {description} |")
    return rows


def reference() -> str:
    groups: dict[str, list[tuple[str, FieldInfo]]] = {}
    advanced: list[tuple[str, FieldInfo]] = []
    for name, info in Settings.model_fields.items():
        extra = _extra(info)
        if extra.get("advanced"):
            advanced.append((name, info))
        else:
            groups.setdefault(str(extra.get("group", "Other")), []).append((name, info))
    lines = [_HEADER]
    for group, fields in groups.items():
        lines += [f"## {group}", "", *_rows(fields), ""]
    lines += [
        "## Advanced",
        "",
        "Expert knobs: the defaults are measured choices (docs/decisions/); change them with a "
        "benchmark at hand.",
        "",
        *_rows(advanced),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(reference(), end="")
