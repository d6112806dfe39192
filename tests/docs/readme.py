"""The README read as data: its sections, fenced blocks and tables.

Convention: every fenced ``sh``, ``python`` and ``yaml`` block of the README is run by
``tests/docs/``. A block that cannot run here says why on the line just above its fence,
as an HTML comment (invisible on GitHub)::

    <!-- not run: needs a Redis and two worker hosts -->

Blocks with no language (diagrams) are text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

_FENCE = re.compile(r"^```(\S*)\s*$")
_NOT_RUN = re.compile(r"^<!--\s*not run:\s*(.+?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block."""

    language: str
    text: str
    line: int  # of its opening fence, 1-based
    section: str  # the heading it sits under
    not_run: str | None  # why it is not run, if it says so

    @property
    def id(self) -> str:
        return f"README.md:{self.line} ({self.section})"


@cache
def text() -> str:
    return README.read_text(encoding="utf-8")


@cache
def blocks() -> tuple[Block, ...]:
    """Every fenced block, in order."""
    lines = text().splitlines()
    out: list[Block] = []
    section = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            section = line.lstrip("#").strip()
        fence = _FENCE.match(line)
        if fence:
            start = i
            body: list[str] = []
            i += 1
            while i < len(lines) and lines[i].rstrip() != "```":
                body.append(lines[i])
                i += 1
            before = lines[start - 1] if start > 0 else ""
            marker = _NOT_RUN.match(before)
            out.append(
                Block(
                    fence.group(1),
                    "\n".join(body) + "\n",
                    start + 1,
                    section,
                    marker.group(1) if marker else None,
                )
            )
        i += 1
    return tuple(out)


def runnable(language: str) -> list[Block]:
    """The blocks of ``language`` that are meant to run."""
    return [b for b in blocks() if b.language == language and b.not_run is None]


def section(heading: str) -> str:
    """The text of the section under ``heading`` (to the next heading of its level or above)."""
    lines = text().splitlines()
    for i, line in enumerate(lines):
        if line.lstrip("#").strip() == heading and line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out: list[str] = []
            for later in lines[i + 1 :]:
                is_heading = later.startswith("#") and not _inside_fence(out)
                if is_heading and len(later) - len(later.lstrip("#")) <= level:
                    break
                out.append(later)
            return "\n".join(out)
    raise LookupError(f"the README has no section {heading!r}")


def _inside_fence(lines: list[str]) -> bool:
    return sum(1 for line in lines if line.startswith("```")) % 2 == 1


def table_rows(section_text: str) -> list[list[str]]:
    """The cells of every table row in ``section_text``, headers and rules left out."""
    lines = section_text.splitlines()
    rows: list[list[str]] = []
    for i, line in enumerate(lines):
        if not line.startswith("|") or _is_rule(line):
            continue
        if i + 1 < len(lines) and _is_rule(lines[i + 1]):
            continue  # a header
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    return rows


def _is_rule(line: str) -> bool:
    return line.startswith("|") and set(line.strip()) <= set("|-: ")


def code_spans(text_: str) -> set[str]:
    """Every `inline code` span in ``text_``."""
    return set(re.findall(r"`([^`\n]+)`", text_))
