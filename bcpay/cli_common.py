"""Plumbing shared by the ``bcpay`` commands: settings, the runtime, errors, output.

Errors are translated once, here: a :class:`~bcpay.errors.BcpayError` becomes
one red ``Error: <message>`` line on stderr and exit code 1 (with the
traceback only under ``--debug``); usage errors stay Typer's (exit 2).
Humans get Rich; ``--json`` prints plain JSON on stdout for scripts.

The ``bcpay/cli*.py`` modules import only Typer, the standard library and
bcpay modules that import nothing heavy at module level: ``bcpay --help``
must not pay for SQLAlchemy, Alembic, httpx or Rich (over a second
together). The library and Rich are imported in the functions that use
them; tests/test_cli_imports.py keeps it that way.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from bcpay.errors import BcpayError

if TYPE_CHECKING:
    from rich.console import Console

    from bcpay.config import Settings
    from bcpay.provisioning import Check
    from bcpay.runtime import Runtime

T = TypeVar("T")


@dataclass
class CliState:
    """The global options, kept on the root context."""

    config: Path | None = None
    debug: bool = False


def state(ctx: typer.Context) -> CliState:
    """The global options of this invocation."""
    obj = ctx.find_root().obj
    return obj if isinstance(obj, CliState) else CliState()


def out() -> Console:
    """Console for results (stdout); never wraps, so lines stay greppable."""
    from rich.console import Console

    return Console(soft_wrap=True, highlight=False)


def err() -> Console:
    """Console for errors and progress (stderr)."""
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True, highlight=False)


def warn_if_sandbox_key(settings: Settings) -> None:
    """A server or worker sealing secrets with the public sandbox key says so, every start."""
    if settings.app.sandbox and not settings.app.secret_key:
        message = ("app.sandbox is on and app.secret_key is empty: stored tokens and secrets are "
                   "sealed with bcpay's public sandbox key. Local use only (see `bcpay doctor`).")
        if settings.server.log_format == "json":
            import logging

            logging.getLogger("bcpay.config").warning("%s", message)
        else:
            err().print(f"Warning: {message}", style="yellow", markup=False)


def announce(settings: Settings, logger: str, message: str) -> None:
    """A start or stop line of ``serve`` and ``worker``: printed, or with JSON logs one more JSON line."""
    if settings.server.log_format == "json":
        import logging

        logging.getLogger(logger).info("%s", message)
    else:
        out().print(message, markup=False)


def start_process(settings: Settings) -> None:
    """The start of ``serve`` and ``worker``: logging as configured, then warnings about the configuration.

    An unknown ``BCPAY_*`` variable is a warning, not an error: a variable meant for something
    else must not stop a fleet from restarting (README "Configuration").
    """
    import logging

    from bcpay.config import unknown_env_names
    from bcpay.logs import setup_logging

    setup_logging(settings.server.log_format, settings.server.log_level)
    log = logging.getLogger("bcpay.config")
    for warning in unknown_env_names(os.environ):
        log.warning("%s", warning)
    warn_if_sandbox_key(settings)


def load(ctx: typer.Context, **overrides: dict[str, Any]) -> Settings:
    """Settings: command line > environment > config file > defaults."""
    from bcpay.config import load_settings

    return load_settings(state(ctx).config, overrides={k: v for k, v in overrides.items() if v})


@contextmanager
def failures(ctx: typer.Context) -> Iterator[None]:
    """Turn a BcpayError, or a database or OS failure, into one red line on stderr and exit code 1."""
    try:
        yield
    except Exception as exc:
        message = exc.message if isinstance(exc, BcpayError) else environment_failure(exc)
        if message is None:
            raise  # a bug: the traceback is the report
        from rich.markup import escape

        if state(ctx).debug:
            err().print(escape(traceback.format_exc()), style="dim")
        err().print(f"Error: {escape(message)}", style="red")
        raise typer.Exit(1) from None


def environment_failure(exc: BaseException) -> str | None:
    """One line for a failure of what bcpay runs on (database, files, network), else None.

    The driver's own first line, never SQLAlchemy's rendering of the statement
    and its parameters.
    """
    if type(exc).__module__.startswith("sqlalchemy."):
        cause = getattr(exc, "orig", None) or exc
        first = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:300]
        return f"database error: {first} (--debug shows the traceback)"
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc} (--debug shows the traceback)"
    return None


def run(ctx: typer.Context, work: Callable[[Runtime], Awaitable[T]], *, settings: Settings | None = None) -> T:
    """Open a runtime for this command, run ``work`` in it, translate errors."""
    import asyncio

    from bcpay.runtime import open_runtime

    with failures(ctx):
        chosen = settings or load(ctx)

        async def main() -> T:
            async with open_runtime(chosen) as rt:
                return await work(rt)

        return asyncio.run(main())


def secret_input(env_var: str, prompt: str) -> str:
    """A secret from ``$env_var``, else a hidden prompt; never from the command line."""
    value = os.environ.get(env_var, "").strip()  # as a typed one: a trailing newline is no part of it
    if value:
        return value
    if not sys.stdin.isatty():
        # Piped in (or nothing at all, from a script): one line, no prompt and no echo warnings.
        line = sys.stdin.readline().strip()
        if not line:
            err().print(f"Error: no {prompt}: set ${env_var}, or run this at a terminal to type it", markup=False)
            raise typer.Exit(1)
        return line
    entered: str = typer.prompt(prompt, hide_input=True)
    return entered.strip()


def print_json(data: Any) -> None:
    """Plain JSON on stdout for scripts."""
    typer.echo(json.dumps(data, indent=2, default=str))


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str | None = None) -> None:
    """A Rich table on stdout (``-`` for empty cells)."""
    from rich.markup import escape
    from rich.table import Table

    grid = Table(*columns, title=title, show_lines=False, expand=False)
    for row in rows:
        grid.add_row(*("-" if v is None or v == "" else escape(str(v)) for v in row))
    console = out()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Piped (grep, a file): Rich would squeeze the table into 80 columns and cut ids short.
        from rich.console import Console

        console = Console(soft_wrap=True, highlight=False, width=1000)
    console.print(grid)


def money(amount: int | None, currency: str | None) -> str:
    """``19.99 USD`` for minor units (``-`` when unknown)."""
    from bcpay.money import format_amount

    if amount is None or not currency:
        return "-"
    try:
        return format_amount(amount, currency)
    except BcpayError:
        return f"{amount} {currency} (minor units)"


def print_checks(checks: Sequence[Check], *, section: str | None = None) -> bool:
    """A checklist with the steps to fix each failed line; True when all passed."""
    from rich.markup import escape

    console = out()
    if section:
        console.print(f"[bold]{escape(section)}[/bold]")
    for check in checks:
        # A passing check that still has advice (an ignored variable) is marked, not failed.
        mark = "[red]✗[/red]" if not check.ok else "[yellow]![/yellow]" if check.fix else "[green]✓[/green]"
        console.print(f"  {mark} {escape(check.name)}: {escape(check.detail)}")
        for n, step in enumerate(check.fix, 1):
            console.print(f"      {n}. {escape(step)}")
    return all(c.ok for c in checks)


def fail_unless(ok: bool) -> None:
    """Exit 1 (without another message) when a report found problems."""
    if not ok:
        raise typer.Exit(1)
