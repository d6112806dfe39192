"""The README's Errors table names every error code and status the code can answer with."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from appliance import errors
from appliance.wire.anthropic.reply import error_body
from tests.docs import readme

PACKAGE = readme.ROOT / "appliance"


def _strings(node: ast.AST) -> Iterator[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.Tuple):
        for item in node.elts:
            yield from _strings(item)


def emitted_codes() -> dict[str, str]:
    """Every literal error ``code`` in the package -> where it is (file:line).

    Found by reading the source: ``code="..."`` arguments, ``code = "..."`` assignments
    (class attributes and locals, tuples too), and the values of ``*_CODES`` tables
    (with the defaults of their ``.get``).
    """
    found: dict[str, str] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = path.relative_to(readme.ROOT).as_posix()
        for node in ast.walk(tree):
            values: list[ast.AST] = []
            if isinstance(node, ast.keyword) and node.arg == "code":
                values.append(node.value)
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    names = target.elts if isinstance(target, ast.Tuple) else [target]
                    for i, name in enumerate(names):
                        if not isinstance(name, ast.Name) or node.value is None:
                            continue
                        value = node.value
                        if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
                            value = value.elts[i]
                        elif isinstance(target, ast.Tuple):
                            continue
                        if name.id == "code":
                            values.append(value)
                        elif name.id.endswith("_CODES") and isinstance(value, ast.Dict):
                            values.extend(v for v in value.values if v is not None)
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id.endswith("_CODES")
                and len(node.args) == 2
            ):
                values.append(node.args[1])
            for literal in values:
                for code in _strings(literal):
                    found.setdefault(code, f"{where}:{getattr(literal, 'lineno', '?')}")
    return found


def emitted_statuses() -> set[int]:
    """The HTTP statuses of the error tree, and of Falcon's own errors (405 and the like)."""
    out: set[int] = set()
    stack: list[type[errors.APIError]] = [errors.APIError]
    while stack:
        cls = stack.pop()
        if isinstance(cls.status, int):  # else a property: the upstream's own 4xx, relayed
            out.add(cls.status)
        stack.extend(cls.__subclasses__())
    out.discard(errors.APIError.status)  # 500: the last resort, not an answer we plan
    out.add(405)  # Falcon's: a route without that method
    return out


def table() -> list[list[str]]:
    return readme.table_rows(readme.section("Errors"))


def test_every_error_code_the_code_can_emit_is_in_the_errors_table() -> None:
    documented = set().union(*(readme.code_spans(row[-1]) for row in table()))
    missing = {c: w for c, w in emitted_codes().items() if c not in documented}
    assert not missing, f"error codes missing from the README's Errors table: {missing}"


def test_the_errors_table_names_no_code_the_code_cannot_emit() -> None:
    documented = set().union(*(readme.code_spans(row[-1]) for row in table()))
    phantom = documented - set(emitted_codes())
    assert not phantom, f"the Errors table names codes nothing emits: {sorted(phantom)}"


def test_every_status_has_a_row() -> None:
    rows = {int(s) for row in table() for s in re.findall(r"\d{3}", row[0])}
    assert not emitted_statuses() - rows, f"statuses without a row: {emitted_statuses() - rows}"


def test_anthropic_error_types_of_every_status_are_named() -> None:
    text = readme.text()
    statuses = {int(s) for row in table() for s in re.findall(r"\d{3}", row[0])}
    for status in sorted(statuses | {500, 502}):
        kind = error_body(status, "")["error"]["type"]
        assert f"`{kind}`" in text, f"Anthropic's `{kind}` ({status}) is not in the README"


def test_emitted_codes_are_found() -> None:
    """The source reader finds codes of each kind it looks for (else the tests above pass empty)."""
    codes = emitted_codes()
    assert "invalid_api_key" in codes  # a class attribute
    assert "model_overloaded" in codes  # a code= argument
    assert "upstream_misconfigured" in codes  # a local assignment
    assert "method_not_allowed" in codes  # a *_CODES table
    assert "invalid_type" in codes  # a *_CODES.get default
