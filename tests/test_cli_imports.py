"""``bcpay --help`` stays fast: the CLI modules import no heavy library until a command runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bcpay import stores
from bcpay.cli_stores import DEFAULT_SCOPES, STORE_SETTINGS
from bcpay.runtime import STORE_OVERRIDES

# Together these cost over a second of start-up; Typer alone is about 0.1 s.
# Rich is here too: help is printed without it (rich_markup_mode=None).
HEAVY = ("sqlalchemy", "alembic", "jwt", "httpx", "aiohttp", "cryptography", "starlette", "uvicorn", "rich")

# Prints the heavy modules loaded after importing bcpay.cli (and running the code in {run}).
PROBE = """
import json, sys
{run}
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})))
"""

# Asks every command and group for its help through Typer, as `bcpay <cmd> --help` does.
HELP_EVERYWHERE = """
import typer.main
from typer.testing import CliRunner
from bcpay.cli import app

def walk(group, prefix=()):
    yield prefix
    for name, command in sorted(getattr(group, "commands", {}).items()):
        yield from walk(command, (*prefix, name))

paths = list(walk(typer.main.get_command(app)))
assert len(paths) > 30, paths
for path in paths:
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output, (path, result.output)
"""


def python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (this one has long since imported everything)."""
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=60,
                          check=False)


def heavy_after(run: str, cwd: Path) -> list[str]:
    done = python(PROBE.format(run=run, heavy=HEAVY), cwd)
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.splitlines()[-1])
    return loaded


def test_importing_the_cli_loads_no_heavy_library(tmp_path: Path) -> None:
    """``import bcpay.cli`` pulls in none of SQLAlchemy, Alembic, PyJWT, httpx, cryptography, Starlette, Rich."""
    assert heavy_after("import bcpay.cli", tmp_path) == []


def test_the_probe_sees_a_heavy_import(tmp_path: Path) -> None:
    """The check above can fail: importing a library module is reported."""
    assert "sqlalchemy" in heavy_after("import bcpay.cli, bcpay.operations", tmp_path)


def test_help_of_every_command_loads_no_heavy_library(tmp_path: Path) -> None:
    """``bcpay <cmd> --help`` for every command and group still imports nothing heavy."""
    assert heavy_after(HELP_EVERYWHERE, tmp_path) == []


def test_bcpay_help_exits_zero(tmp_path: Path) -> None:
    """``bcpay --help`` in a fresh process lists the commands and exits 0."""
    done = subprocess.run([sys.executable, "-m", "bcpay", "--help"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "Usage: bcpay" in done.stdout
    for command in ("serve", "stores", "reconcile", "doctor"):
        assert command in done.stdout


def test_the_cli_default_scopes_are_the_required_scopes() -> None:
    """``stores add --scopes`` defaults to exactly bcpay.stores.REQUIRED_SCOPES (spelled out to stay light)."""
    assert tuple(DEFAULT_SCOPES.split()) == stores.REQUIRED_SCOPES


def test_the_settings_stores_configure_can_reset_are_the_store_overrides() -> None:
    """``stores configure --reset`` lists exactly bcpay.runtime.STORE_OVERRIDES in its help."""
    assert tuple(STORE_OVERRIDES) == STORE_SETTINGS
