"""Imports point one way (DESIGN.md section 2), checked on the source so a violation fails here
before it ships:

- the core (errors, settings, limits, model, inference, observability) imports no transport;
- the Open Inference Protocol's codec and engine (oip/) import neither HTTP nor gRPC;
- the HTTP and gRPC transports never import each other;
- only app.py and the process (__main__, server/) wire transports together;
- service/ never imports torch or build/; only model/runner.py imports onnxruntime; the HTTP
  transport imports no numpy, Pillow or onnxruntime."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[2] / "service"

# What each part of service/ may import from service/ (besides itself): an allow-list, so a new
# edge has to be argued for here.
_BASE = {"errors", "paths", "settings", "process", "observability", "security"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "paths": set(),
    "process": set(),
    "settings": {"paths", "process"},
    "reference_docs": _BASE | {"limits", "model", "inference", "oip", "http", "grpc"},
    "security": {"settings"},
    "observability": {"errors", "settings"},
    "limits": {"errors", "settings", "observability"},
    "model": _BASE | {"limits", "inference.preprocess", "inference.postprocess"},
    "inference": _BASE | {"limits", "model"},
    "oip": _BASE | {"limits", "model", "inference"},
    "http": _BASE | {"limits", "model", "inference", "oip"},
    "grpc": _BASE | {"limits", "model", "inference", "oip"},
    "server": _BASE | {"limits", "http", "app"},
    "app": _BASE | {"limits", "model", "inference", "oip", "http", "grpc"},
    "__main__": _BASE | {"app", "http", "server"},
}
TRANSPORTS = {"http", "grpc", "server"}


def part(module: str) -> str:
    """service.inference.preprocess -> inference (a package) or its module where the allow-list
    names one; service.errors -> errors."""
    pieces = module.split(".")[1:]
    return pieces[0] if pieces else ""


def service_imports(path: Path) -> set[str]:
    """The service modules a file imports, anywhere in it (lazy and TYPE_CHECKING ones too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("service.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "service":
                found |= {f"service.{a.name}" for a in node.names}
            elif node.module.startswith("service."):
                found.add(node.module)
    return found


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def owner(path: Path, root: Path = SERVICE) -> str:
    rel = path.relative_to(root)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def violations(root: Path = SERVICE) -> dict[str, list[str]]:
    bad: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        if path.name == "__init__.py" and path.parent == root:
            continue
        mine = owner(path, root)
        allowed = ALLOWED[mine]
        for module in sorted(service_imports(path)):
            target = part(module)
            dotted = ".".join(module.split(".")[1:3])
            if target in (mine, "") or target in allowed or dotted in allowed:
                continue
            bad.setdefault(str(path.relative_to(root)), []).append(module)
    return bad


def test_every_part_of_the_service_is_in_the_allow_list() -> None:
    parts = {owner(p) for p in SERVICE.rglob("*.py") if p != SERVICE / "__init__.py"}
    assert parts <= set(ALLOWED), sorted(parts - set(ALLOWED))


def test_imports_point_one_way() -> None:
    assert violations() == {}


def test_the_guard_sees_a_transport_imported_from_the_protocol(tmp_path: Path) -> None:
    """Guards the guard: an oip/ module importing the HTTP transport is reported."""
    (tmp_path / "oip").mkdir()
    (tmp_path / "oip" / "engine.py").write_text("from service.http.context import set_timing\n")
    (tmp_path / "grpc").mkdir()
    (tmp_path / "grpc" / "server.py").write_text("import service.http.auth\n")
    assert violations(tmp_path) == {
        "grpc/server.py": ["service.http.auth"],
        "oip/engine.py": ["service.http.context"],
    }


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
def test_the_core_imports_no_transport(transport: str) -> None:
    core = {"errors", "settings", "limits", "model", "inference", "observability", "oip"}
    assert all(transport not in ALLOWED[name] for name in core)


def test_service_never_imports_torch_or_build() -> None:
    banned = {"torch", "torchvision", "build"}
    found = {str(p.relative_to(SERVICE)): imported_roots(p) & banned for p in SERVICE.rglob("*.py")}
    assert {f: sorted(m) for f, m in found.items() if m} == {}


def test_only_the_runner_imports_onnxruntime() -> None:
    found = [str(p.relative_to(SERVICE)) for p in SERVICE.rglob("*.py")]
    users = sorted(f for f in found if "onnxruntime" in imported_roots(SERVICE / f))
    assert users == ["model/runner.py"]


def test_the_http_transport_imports_no_numeric_or_image_code() -> None:
    banned = {"numpy", "onnxruntime", "PIL", "torch"}
    offenders = {
        str(p.relative_to(SERVICE)): sorted(imported_roots(p) & banned)
        for p in (SERVICE / "http").rglob("*.py")
    }
    assert {f: m for f, m in offenders.items() if m} == {}
