"""Project rules that code review would otherwise have to remember.

Strict mypy on the library, ruff on everything, and the import rules written
in ARCHITECTURE.md ("never imports"), checked on the source's AST.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bcpay"
FACES = ("bcpay.cli", "bcpay.server", "bcpay.sandbox")
PURE = ("rules", "money", "signatures", "config", "config_types", "errors", "scopes")
IO_MODULES = ("bcpay.clients", "bcpay.storage", "bcpay.runtime", "httpx", "sqlalchemy")


def within(module: str, packages: tuple[str, ...]) -> bool:
    """True when ``module`` is one of ``packages`` or inside one (bcpay.cli is not bcpay.clients)."""
    return any(module == p or module.startswith(p + ".") for p in packages)


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it (lazy imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def library_files() -> list[Path]:
    """The library: everything in bcpay/ but the faces."""
    return [
        p for p in PACKAGE.rglob("*.py")
        if not p.name.startswith("cli") and not {"server", "sandbox"} & set(p.relative_to(PACKAGE).parts[:-1])
        and p.name != "__main__.py"
    ]


@pytest.mark.parametrize("path", library_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_library_never_imports_a_face(path: Path) -> None:
    bad = sorted(m for m in imports_of(path) if within(m, FACES))
    assert bad == [], f"{path.relative_to(ROOT)} imports {bad}"


@pytest.mark.parametrize("name", PURE)
def test_pure_modules_do_no_io(name: str) -> None:
    bad = sorted(m for m in imports_of(PACKAGE / f"{name}.py") if within(m, IO_MODULES))
    assert bad == [], f"bcpay/{name}.py imports {bad}"


def test_a_face_import_is_detected() -> None:
    """Control: the AST scan sees a lazy import inside a function."""
    probe = ROOT / "tests" / "artifacts" / "probe_import.py"
    probe.parent.mkdir(parents=True, exist_ok=True)
    probe.write_text("def f():\n    from bcpay.server import app\n", encoding="utf-8")
    assert "bcpay.server.app" in imports_of(probe)
    assert within("bcpay.server.app", FACES) and not within("bcpay.clients.http", FACES)


def test_ruff_finds_nothing() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "bcpay", "tests", "scripts"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_strict_passes_on_the_library() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "bcpay"], cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
