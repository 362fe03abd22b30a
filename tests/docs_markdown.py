"""Reading the project's Markdown docs in tests: tables, fenced blocks, console transcripts.

The docs-consistency tests parse what a page states (a metric's labels, a status code, an
example's output) and compare it with the code or a running gateway, so a page that drifts
from the code fails a test instead of misleading a reader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"

_FENCE = re.compile(r"^```(?P<lang>[\w-]*)\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)


def doc(name: str) -> str:
    """The text of docs/<name>."""
    return (DOCS / name).read_text(encoding="utf-8")


def section(text: str, heading: str) -> str:
    """The part of `text` under the Markdown heading `heading` (any level), up to the next
    heading of the same or a higher level. Lines in code blocks are never headings."""
    lines = text.splitlines(keepends=True)
    start: int | None = None
    level = 0
    in_code = False
    for index, line in enumerate(lines):
        if line.startswith("```"):
            in_code = not in_code
        match = None if in_code else re.match(r"(#+) (.*)\n?$", line)
        if match is None:
            continue
        if start is None and match.group(2) == heading:
            start, level = index + 1, len(match.group(1))
        elif start is not None and len(match.group(1)) <= level:
            return "".join(lines[start:index])
    if start is None:
        raise LookupError(f"no heading {heading!r}")
    return "".join(lines[start:])


def fenced_blocks(text: str, lang: str) -> list[str]:
    """The bodies of the ```lang blocks of `text`, in order."""
    return [m.group("body") for m in _FENCE.finditer(text) if m.group("lang") == lang]


def tables(text: str) -> list[list[dict[str, str]]]:
    """Every pipe table of `text` (outside code blocks), each as rows of header -> cell."""
    prose = _FENCE.sub("", text)
    found: list[list[dict[str, str]]] = []
    lines = prose.splitlines()
    index = 0
    while index < len(lines) - 1:
        if lines[index].startswith("|") and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[index + 1]):
            header = _cells(lines[index])
            rows = []
            index += 2
            while index < len(lines) and lines[index].startswith("|"):
                rows.append(dict(zip(header, _cells(lines[index]), strict=True)))
                index += 1
            found.append(rows)
        else:
            index += 1
    return found


def _cells(line: str) -> list[str]:
    # A `|` inside backticks is text, not a column edge.
    cells, current, in_code = [], "", False
    for char in line.strip().strip("|"):
        if char == "`":
            in_code = not in_code
        if char == "|" and not in_code:
            cells.append(current.strip())
            current = ""
        else:
            current += char
    cells.append(current.strip())
    return cells


def backticked(cell: str) -> list[str]:
    """The `code` spans of a table cell or sentence."""
    return re.findall(r"`([^`]+)`", cell)


@dataclass(frozen=True, slots=True)
class Step:
    """One `$ command` of a console transcript and the output the doc shows after it."""

    command: str
    output: str


def transcript(block: str) -> list[Step]:
    """The commands of a ```console block and the lines shown after each (without the blank
    lines that separate one command from the next)."""
    steps: list[Step] = []
    command: str | None = None
    output: list[str] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            if command is not None:
                steps.append(Step(command, "\n".join(output).rstrip("\n")))
            command, output = line[2:], []
        else:
            output.append(line)
    if command is not None:
        steps.append(Step(command, "\n".join(output).rstrip("\n")))
    return steps
