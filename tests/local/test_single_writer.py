"""Nothing but a model's lifecycle writes its state, and it only through ``_move``.

Read from the source: any assignment to an attribute called ``state`` or ``_state``
anywhere in the package, and any call of ``_move``, must sit in
``appliance/local/lifecycle.py``: the assignment in ``__init__`` (the first state) and
``_move`` (every other), the calls in the lifecycle's own methods.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "appliance"
OWNER = PACKAGE / "local" / "lifecycle.py"


def _writes(tree: ast.AST) -> list[tuple[str, int]]:
    """(enclosing function, line) of each assignment to ``<x>.state`` or ``<x>._state``."""
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            for part in ast.walk(target):
                if isinstance(part, ast.Attribute) and part.attr in ("state", "_state"):
                    found.append((function, node.lineno))
        call = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        if call and node.func.attr == "_move":  # type: ignore[attr-defined]
            found.append((f"call:{function}", node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(tree, "<module>")
    return found


def test_only_the_lifecycle_writes_a_model_state() -> None:
    elsewhere = {
        f"{path.relative_to(PACKAGE)}:{line}"
        for path in PACKAGE.rglob("*.py")
        if path != OWNER
        for _, line in _writes(ast.parse(path.read_text()))
    }
    assert elsewhere == set()


def test_inside_the_lifecycle_only_move_assigns_the_state() -> None:
    writes = _writes(ast.parse(OWNER.read_text()))
    assigning = {function for function, _ in writes if not function.startswith("call:")}
    assert assigning == {"__init__", "_move"}
    callers = {function for function, _ in writes if function.startswith("call:")}
    assert callers  # the events move it through _move
