"""The package's architecture read from its code: modules, imports, layers, and the picture.

The layer rules live here, beside the reading of the real imports, and the README's
"Architecture" picture is :func:`render` of the same reading (``tests/test_architecture.py``
fails when it drifts). Refresh the README with::

    python -m tests.support.architecture --write
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "appliance"
README = ROOT / "README.md"

# Top to bottom: a part may import the parts named beside it, and nothing else of the
# package. errors.py and clip.py are the floor every part stands on.
LAYERS: dict[str, tuple[str, frozenset[str]]] = {
    "http": (
        "server",
        frozenset(
            {"serving", "local", "backends", "accounting", "telemetry", "runtime", "wire", "config"}
        ),
    ),
    "serving": (
        "server",
        frozenset({"local", "backends", "accounting", "telemetry", "runtime", "wire", "config"}),
    ),
    "local": (
        "server",
        frozenset({"backends", "child", "telemetry", "runtime", "wire", "config"}),
    ),
    "backends": ("server", frozenset({"telemetry", "runtime", "wire", "config"})),
    "child": ("model child", frozenset({"runtime", "wire", "config"})),
    "accounting": ("server, CLI", frozenset({"runtime", "wire", "config"})),
    "telemetry": ("server", frozenset({"runtime", "wire", "config"})),
    "runtime": ("every process", frozenset({"wire", "config"})),
    "wire": ("server, model child", frozenset()),
    "config": ("every process", frozenset()),
}
FLOOR = frozenset({"errors", "clip"})
TOP = frozenset({"cli", "__main__", "__init__"})
# Only the model child loads a model runtime.
MODEL_RUNTIMES = ("llama_cpp", "onnxruntime", "tokenizers")
MAX_LINES = 350
MAX_ROOT_MODULES = 8


@dataclass
class Module:
    """One module of the package and what it imports of it."""

    name: str  # dotted, without "appliance."
    path: Path
    lines: int
    imports: set[str] = field(default_factory=set)  # dotted, without "appliance."
    external: set[str] = field(default_factory=set)  # top-level names of other packages

    @property
    def part(self) -> str:
        """The top-level package or root module it belongs to."""
        return self.name.split(".")[0]


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def read_modules() -> dict[str, Module]:
    """Every module of the package with its imports (all of them, lazy ones too)."""
    modules: dict[str, Module] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        module = Module(_name(path), path, len(text.splitlines()))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module == "appliance" or node.module.startswith("appliance."):
                    base = node.module.removeprefix("appliance").lstrip(".")
                    # `from appliance.x import y` imports module x.y when there is one
                    module.imports.update(f"{base}.{a.name}".lstrip(".") for a in node.names)
                else:
                    module.external.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("appliance."):
                        module.imports.add(alias.name.removeprefix("appliance."))
                    else:
                        module.external.add(alias.name.split(".")[0])
        modules[module.name] = module
    for module in modules.values():  # a name that is no module came from its package
        module.imports = {
            i if i in modules else i.rsplit(".", 1)[0] for i in module.imports if i != "__version__"
        }
    return modules


def layer_violations(modules: dict[str, Module]) -> list[str]:
    """Each import that breaks the layer rules, as ``a.b -> c.d``."""
    out = []
    for module in modules.values():
        if module.part in TOP or module.part in FLOOR:
            if module.part in FLOOR and any(i.split(".")[0] not in FLOOR for i in module.imports):
                out.append(f"{module.name} -> {sorted(module.imports)}")
            continue
        allowed = LAYERS[module.part][1] | FLOOR | {module.part}
        out += [
            f"{module.name} -> {target}"
            for target in sorted(module.imports)
            if target.split(".")[0] not in allowed
        ]
    return out


def cycles(modules: dict[str, Module]) -> list[list[str]]:
    """The import cycles between modules (strongly connected components of two or more)."""
    graph = {
        name: {i for i in m.imports if i in modules and i != name} for name, m in modules.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def _parts(modules: dict[str, Module]) -> Iterator[tuple[str, list[Module]]]:
    for part in LAYERS:
        yield part, sorted((m for m in modules.values() if m.part == part), key=lambda m: m.name)


def render(modules: dict[str, Module]) -> str:
    """The picture of the packages: top to bottom, each with the process it runs in, its
    modules and the parts it imports (read from the code)."""
    root = sorted(m.path.name for m in modules.values() if m.path.parent == PACKAGE)
    lines = [f"appliance/  {', '.join(root)}", "│"]
    for part, members in _parts(modules):
        size = sum(m.lines for m in members)
        uses = sorted({i.split(".")[0] for m in members for i in m.imports} - {part} - FLOOR)
        order = list(LAYERS)
        uses.sort(key=order.index)
        lines.append(
            f"├─ {part + '/':<12}{LAYERS[part][0]:<21}{len(members):>3} modules {size:>6} lines"
        )
        names = [m.name.removeprefix(part).lstrip(".") or "__init__" for m in members]
        lines += _wrap("│    ", "  ".join(names))
        lines.append(f"│    -> {' '.join(uses) if uses else '(the floor only)'}")
    floor = sorted(m.name for m in modules.values() if m.part in FLOOR)
    lines.append(f"└─ the floor every part stands on: {'  '.join(floor)}")
    return "\n".join(lines)


def _wrap(prefix: str, text: str, width: int = 92) -> list[str]:
    out, line = [], ""
    for word in text.split("  "):
        if line and len(prefix) + len(line) + 2 + len(word) > width:
            out.append(prefix + line)
            line = word
        else:
            line = f"{line}  {word}" if line else word
    return [*out, prefix + line] if line else out


_BLOCK = re.compile(r"(<!-- not run: the architecture picture[^\n]*-->\n```\n)(.*?)\n?(```)", re.S)


def readme_picture() -> str | None:
    """The picture as the README has it now."""
    found = _BLOCK.search(README.read_text(encoding="utf-8"))
    return found.group(2) if found else None


def write_readme() -> None:
    """Put the current picture into the README."""
    text = README.read_text(encoding="utf-8")
    picture = render(read_modules())
    README.write_text(_BLOCK.sub(lambda m: m.group(1) + picture + "\n" + m.group(3), text), "utf-8")


if __name__ == "__main__":
    if "--write" in sys.argv:
        write_readme()
    print(render(read_modules()))
