"""The layers point one way: loop/ never imports ray, mlflow, optuna or fastapi."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

LOOP = Path(__file__).resolve().parents[1] / "loop"
FORBIDDEN = {"ray", "mlflow", "optuna", "fastapi", "starlette", "serve", "experiments"}


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", sorted(LOOP.rglob("*.py")), ids=lambda p: str(p.relative_to(LOOP)))
def test_loop_source_imports_no_outer_layer(path: Path) -> None:
    assert not (_imported_roots(path) & FORBIDDEN), f"{path} imports {_imported_roots(path) & FORBIDDEN}"


def test_importing_loop_loads_no_outer_layer() -> None:
    # A fresh interpreter, so modules other tests imported do not hide an indirect import.
    code = (
        "import sys, pkgutil, importlib, loop\n"
        "for m in pkgutil.walk_packages(loop.__path__, 'loop.'):\n"
        # Alembic's env.py and revision scripts run inside alembic, not on import.
        "    if '.migrations' not in m.name:\n"
        "        importlib.import_module(m.name)\n"
        f"print(sorted(m for m in {sorted(FORBIDDEN)!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
