"""Every command documents itself, with an example, and the generated CLI reference has every command.

docs/reference/cli.md is every command's --help, written by scripts/docs_reference.py; tests/test_docs.py
fails while it is stale, and this file that it names each command and group.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from bcpay.cli import app

CLI_REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "reference" / "cli.md"


# Typer ships its own copy of Click, so commands are recognised by shape, not by class.
def is_group(command: Any) -> bool:
    return isinstance(getattr(command, "commands", None), dict)


def walk(group: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every leaf command with its path under ``bcpay``."""
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        if is_group(command):
            yield from walk(command, path)
        else:
            yield path, command


ROOT: Any = typer.main.get_command(app)
COMMANDS = list(walk(ROOT))


def test_the_walk_finds_the_product_commands() -> None:
    """The command names of issues 7 and 11 exist (they are part of the product)."""
    names = {" ".join(path) for path, _ in COMMANDS}
    expected = {
        "serve", "worker", "db upgrade", "keygen", "rotate-key", "stores add", "stores list", "stores show",
        "stores configure", "stores remove", "provision", "install-script", "webhooks register", "webhooks list",
        "webhooks remove", "doctor", "simulate-notify", "reconcile", "payments list", "payments show",
        "events list", "events show", "events replay", "events prune", "jobs list", "jobs retry", "jobs discard", "pay-link",
        "refund", "anomalies list", "anomalies resolve", "sandbox",
    }
    assert expected <= names, sorted(expected - names)


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_has_help_and_an_example(path: tuple[str, ...], command: Any) -> None:
    """A help line, and an ``Example: bcpay <command> ...`` that names the command itself."""
    text = command.help or ""
    assert text.strip(), f"bcpay {' '.join(path)} has no help text"
    examples = [line.strip() for line in text.splitlines() if line.strip().startswith("Example:")]
    assert examples, f"bcpay {' '.join(path)} has no 'Example:' line"
    assert any(f"bcpay {' '.join(path)}" in line for line in examples), examples
    for param in command.params:
        if param.param_type_name == "option" and param.name != "help":
            assert param.help, f"bcpay {' '.join(path)} {param.opts[0]} has no help"
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "Example:" in result.stdout


def test_every_group_has_help() -> None:
    for name, command in ROOT.commands.items():
        if is_group(command):
            assert (command.help or "").strip(), f"bcpay {name} has no help"


def test_the_cli_reference_has_every_command_and_group_with_its_help() -> None:
    """A heading per command and group, each followed by that command's own usage line."""
    text = CLI_REFERENCE.read_text(encoding="utf-8")
    groups = [(name,) for name, command in ROOT.commands.items() if is_group(command)]
    for path in sorted([*(p for p, _ in COMMANDS), *groups]):
        name = "bcpay " + " ".join(path)
        assert f"\n## {name}\n" in text, f"docs/reference/cli.md lacks {name}: run scripts/docs_reference.py"
        section = text.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
        assert f"Usage: {name} " in section, name
