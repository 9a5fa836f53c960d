"""A command line loads only its subcommand's module (leadctl.cli.COMMAND_MODULES), and that module
registers the subcommand: every command is reachable, with its help, whichever way it is typed."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer.main

from leadctl.cli import COMMAND_MODULES, command_line, subcommand

LOADED = (
    "import sys, typer.main; from leadctl.cli import command_line; "
    "app = typer.main.get_command(command_line(sys.argv[1:])); "
    "loaded = sorted(m for m in sys.modules if m.startswith('leadctl.')); "
    "print(' '.join(sorted(app.commands)), '|', ' '.join(loaded))"
)


def test_every_command_has_its_module() -> None:
    assert sorted(typer.main.get_command(command_line([])).commands) == sorted(COMMAND_MODULES)


@pytest.mark.parametrize(
    "args", [["-v", "stats"], ["--config", "x.yaml", "stats", "--json"], ["-q", "stats", "-v"]]
)
def test_the_subcommand_is_found_after_global_options(args: list[str]) -> None:
    assert subcommand(args) == "stats"


def test_no_subcommand_means_help_for_all() -> None:
    assert subcommand(["--help"]) is None and subcommand(["--config", "stats"]) is None


@pytest.mark.parametrize("name", sorted(COMMAND_MODULES))
def test_a_command_line_loads_its_command_and_not_the_others(name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", LOADED, "-q", name, "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    commands, modules = (part.split() for part in result.stdout.split("|"))
    assert name in commands
    own = f"leadctl.commands.{COMMAND_MODULES[name]}"
    others = {f"leadctl.commands.{m}" for m in COMMAND_MODULES.values()} - {own}
    assert own in modules and not others & set(modules)
