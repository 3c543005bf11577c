"""The broker boundary: only the IB modules import ib_async (docs/ib.md). Everything else gets
core types, so a change of client library stays inside ``backend/ib``."""

from __future__ import annotations

import ast
from pathlib import Path

BACKEND = Path(__file__).resolve().parents[2] / "backend"
# The adapter, the StrategyManager and their pure translations; the demo's toy strategies
# (they build ib_async orders for StrategyManager.place_order, as any strategy does); the
# simulator (and its pytest plugin), which is tested through the real client.
ALLOWED = {"ib/adapter.py", "ib/strategy_manager.py", "ib/translate.py", "ib/demo.py"}
ALLOWED_UNDER = ("ib/simulator/",)


def imports_ib_async(path: Path) -> bool:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(
                a.name.split(".")[0] == "ib_async" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ib_async":
            return True
    return False


def test_only_the_ib_boundary_imports_ib_async() -> None:
    importers = {p.relative_to(BACKEND).as_posix() for p in BACKEND.rglob("*.py")
                 if imports_ib_async(p)}
    assert {"ib/adapter.py", "ib/strategy_manager.py"} <= importers  # the scan sees imports
    outside = {p for p in importers if p not in ALLOWED and not p.startswith(ALLOWED_UNDER)}
    assert outside == set()
