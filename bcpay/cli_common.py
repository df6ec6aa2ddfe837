"""Plumbing shared by the ``bcpay`` commands: settings, the runtime, errors, output.

Errors are translated once, here: a :class:`~bcpay.errors.BcpayError` becomes
one red ``Error: <message>`` line on stderr (with the traceback only under
``--debug``). Exit codes follow one rule:

- 2: the input is wrong: Typer's usage errors (an unknown option, a value of
  the wrong type or out of range, options that exclude each other), and an
  :class:`~bcpay.errors.InvalidInputError` from the library (the server's
  400: a malformed store hash, duration or amount, an unknown setting);
- 1: the command was understood and failed: unknown store or order, a state
  that forbids it, an upstream refusal or outage, the database, the config.

Numbers on the command line are ASCII digits only (:class:`AsciiInt`,
:class:`AsciiFloat`, :class:`Amount`). Humans get Rich; ``--json`` prints
plain JSON on stdout for scripts.

The ``bcpay/cli*.py`` modules import only Typer, the standard library and
bcpay modules that import nothing heavy at module level: ``bcpay --help``
must not pay for SQLAlchemy, Alembic, httpx or Rich (over a second
together). The library and Rich are imported in the functions that use
them; tests/test_cli_imports.py keeps it that way.
"""

from __future__ import annotations

import json
import os
import re
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from bcpay.errors import BcpayError, InvalidInputError

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


USAGE = 2  # exit code for wrong input (click's own for usage errors)
FAILED = 1  # exit code for a command that was understood and failed


@contextmanager
def failures(ctx: typer.Context) -> Iterator[None]:
    """Turn a BcpayError, or a database or OS failure, into one red line on stderr and an exit code.

    Exit 2 for an InvalidInputError (the input is wrong), 1 for everything else (see the module docstring).
    """
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
        raise typer.Exit(USAGE if isinstance(exc, InvalidInputError) else FAILED) from None


# ASCII digits only: Typer's int and float are int() and float(), which also take other scripts'
# digits ("١٢", fullwidth "１２"), "1_000" and surrounding spaces; bcpay.config refuses the same in
# BCPAY_* numbers (ENV_INT). Typer's documented hook for a type of one's own is ``parser=``: a
# callable that raises BadParameter, which Typer reports as a usage error naming the parameter.
ASCII_INT = re.compile(r"[+-]?[0-9]+")
ASCII_FLOAT = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)")
ASCII_AMOUNT = re.compile(r"[0-9]{1,15}(\.[0-9]{1,3})?")  # a currency has at most 3 decimals (ISO 4217)


class AsciiInt:
    """``parser=`` of every integer argument and option: ASCII digits within ``[low, high]``.

    Typer ignores ``min``/``max`` next to a parser, so the range is given here.
    """

    def __init__(self, low: int | None = None, high: int | None = None) -> None:
        self.low, self.high = low, high
        self.__name__ = "integer"  # the metavar Typer shows in --help

    def __call__(self, value: str | int) -> int:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise typer.BadParameter(f"{value!r} is not a whole number")
        if isinstance(value, str) and not ASCII_INT.fullmatch(value):
            raise typer.BadParameter(f"{value!r} is not a whole number in ASCII digits (0-9)")
        number = int(value)
        if (self.low is not None and number < self.low) or (self.high is not None and number > self.high):
            raise typer.BadParameter(f"{number} is not in the range {_range(self.low, self.high)}")
        return number


class AsciiFloat:
    """``parser=`` of a decimal number: ASCII digits (no exponent, nan or inf) within ``[low, high]``."""

    def __init__(self, low: float | None = None, high: float | None = None) -> None:
        self.low, self.high = low, high
        self.__name__ = "number"

    def __call__(self, value: str | float) -> float:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise typer.BadParameter(f"{value!r} is not a number")
        if isinstance(value, str) and not ASCII_FLOAT.fullmatch(value):
            raise typer.BadParameter(f"{value!r} is not a number in ASCII digits like 2.5")
        number = float(value)
        if (self.low is not None and number < self.low) or (self.high is not None and number > self.high):
            raise typer.BadParameter(f"{number:g} is not in the range {_range(self.low, self.high)}")
        return number


class Amount:
    """``parser=`` of a money amount as typed, e.g. ``12.50``: ASCII digits, at most 3 decimals; kept a string.

    Decimal() would take "1e3", "NaN" and other scripts' digits; the currency's own exponent is
    checked once the currency is known (:func:`bcpay.money.to_minor`).
    """

    __name__ = "amount"

    def __call__(self, value: str) -> str:
        if not isinstance(value, str) or not ASCII_AMOUNT.fullmatch(value):
            raise typer.BadParameter(f"{value!r} is not an amount like 12.50")
        return value


def _range(low: float | None, high: float | None) -> str:
    def shown(bound: float) -> str:
        return f"{bound:g}" if isinstance(bound, float) else str(bound)

    return ("" if low is None else f"{shown(low)}<=") + "x" + ("" if high is None else f"<={shown(high)}")


def store_hash_param(value: str | None) -> str | None:
    """Callback for a store hash argument or option: a malformed one is a usage error, before any work.

    Given at all, it must be a store hash: "--store $STORE" with STORE unset must not mean every store.
    """
    if value is not None:
        from bcpay.stores import check_store_hash

        try:
            check_store_hash(value if len(value) <= 32 else value[:33])  # a huge value is not echoed whole
        except InvalidInputError as exc:
            raise typer.BadParameter(exc.message) from None
    return value


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
        if not line:  # missing input, like a missing required option
            err().print(f"Error: no {prompt}: set ${env_var}, or run this at a terminal to type it", markup=False)
            raise typer.Exit(USAGE)
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
