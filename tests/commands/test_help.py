"""`--help` of the app and of every command, as a person reads it on an 80-column terminal.

Commands are grouped by job, everyday ones first; a flag shows no value placeholder (so `--dry-run`
reads as taking no value) while an option that takes one names it; no option name is cut, no
description stops mid-sentence, and the exit codes are documented.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from leadctl.cli import command_line

APP = command_line([])  # no subcommand: every command
ROOT = typer.main.get_command(APP)

PANELS = {
    "Send": ["ingest", "work", "batch", "webhooks"],
    "Watch": ["stats", "workers"],
    "Recover": ["dlq", "doubt", "requeue"],
    "People": ["suppress", "forget", "export", "prune"],
    "Local": ["demo", "sandbox", "services"],
    "Measure": ["bench", "plan"],
}


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command and group under ``command``, with the words that invoke it."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(ROOT))


def render(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(APP, [*path, "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert result.exit_code == 0, result.output
    return re.sub(r"\x1b\[[0-9;]*m", "", result.output)


def _flat(text: str) -> str:
    """Text as one line: box drawing and line breaks gone, whitespace collapsed."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def _panels(page: str) -> dict[str, list[tuple[str, str]]]:
    """The panels of a help page in order: title -> rows of (first column, rest, lines joined)."""
    panels: dict[str, list[tuple[str, str]]] = {}
    rows: list[tuple[str, str]] = []
    for line in page.splitlines():
        if line.startswith("╭─"):
            rows = panels.setdefault(line.strip("╭─╮ ").rstrip("─ "), [])
        elif line.startswith("│"):
            inner = line[2:-2]
            if inner[:1].strip():
                name, _, rest = inner.partition(" ")
                rows.append((name, rest.strip()))
            elif rows:
                name, rest = rows[-1]
                rows[-1] = (name, f"{rest} {inner.strip()}".strip())
    return panels


def _first_paragraph(help_text: str | None) -> str:
    return inspect.cleandoc(help_text or "").split("\n\n")[0]


def test_commands_are_grouped_by_job_everyday_first() -> None:
    panels = _panels(render(()))
    assert list(panels) == ["Options", "Global options", *PANELS]
    for title, names in PANELS.items():
        assert [name for name, _ in panels[title]] == names, title
    assert sorted(n for names in PANELS.values() for n in names) == sorted(ROOT.commands)


def test_exit_codes_are_documented() -> None:
    page = _flat(render(()))
    assert (
        "Exit codes: 0 success, 1 some leads failed or were rejected, 2 bad input, option or config, "
        "3 Redis or PostgreSQL unreachable." in page
    )


def test_the_command_list_shows_each_description_whole() -> None:
    shown = {name: text for rows in _panels(render(())).values() for name, text in rows}
    for name, command in ROOT.commands.items():
        first = _first_paragraph(command.help).replace("`", "")
        assert shown[name] == " ".join(first.split()), name


@pytest.mark.parametrize("path", [path for path, _ in COMMANDS], ids=lambda p: " ".join(p) or "leadctl")
def test_help_at_80_columns(path: tuple[str, ...]) -> None:
    command = dict(COMMANDS)[path]
    page = render(path)
    assert "…" not in page  # nothing cut short
    assert "<bool>" not in page
    first = _first_paragraph(command.help)
    assert first.endswith("."), f"first line of {path}: {first!r}"
    assert " ".join(first.replace("`", "").split()) in _flat(page)
    ctx = typer.Context(command, info_name=path[-1] if path else "leadctl")
    for param in command.get_params(ctx):
        if param.param_type_name != "option":
            continue
        names = [*param.opts, *param.secondary_opts]
        for name in names:
            assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", page), f"{name} cut in {path}"
        row = next(line for line in page.splitlines() if re.search(rf"│\s+(\*\s+)?{names[0]}\s", line))
        after_names = [word for word in row.strip("│ *").split() if word not in names]
        if param.is_flag or param.count:  # the help text follows the names at once
            assert param.metavar == "" and not after_names[0].startswith("<"), f"{names[0]} in {path}"
        else:  # the value's name follows, as the option declares it (never typer's `<type>`)
            assert after_names[0] == param.metavar and param.metavar.isupper(), f"{names[0]} in {path}"
        assert (param.help or "").endswith("."), f"{names[0]} in {path}: {param.help!r}"
