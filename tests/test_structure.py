"""The layering: the contract in synthgen/core imports no other layer, and no layer reaches up into service/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FORBIDDEN_IN_CORE = ("torch", "redis", "fastapi", "starlette", "onnx", "onnxruntime", "service", "aae", "export")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("path", sorted((REPO / "synthgen" / "core").glob("*.py")), ids=lambda p: p.name)
def test_the_core_imports_no_other_layer(path: Path) -> None:
    bad = sorted(n for n in _imports(path) if _top(n) in FORBIDDEN_IN_CORE or n.startswith("synthgen.client"))
    assert not bad, f"{path.relative_to(REPO)} imports {bad}: the core must stay torch-, Redis-, FastAPI- and onnx-free"


@pytest.mark.parametrize("folder", ["aae", "export", "synthgen/core", "synthgen/client"])
def test_training_export_and_the_client_never_import_the_service(folder: str) -> None:
    offenders = {
        str(p.relative_to(REPO)): sorted(n for n in _imports(p) if _top(n) == "service") for p in (REPO / folder).rglob("*.py")
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_no_test_imports_the_benchmarks() -> None:
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("*.py") if any(_top(n) == "bench" for n in _imports(p))]
    assert not offenders


def test_settings_is_a_leaf() -> None:
    inner = sorted(n for n in _imports(REPO / "service" / "settings.py") if _top(n) in ("service", "synthgen", "aae", "export"))
    assert not inner, f"service/settings.py imports {inner}"
