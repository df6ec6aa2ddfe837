"""The ``bcpay`` command line: a thin Typer face over the library.

Command names are part of the product (README, runbooks). This module holds
the root app, the global options and the process commands (serve, worker,
db, keys, sandbox); the store commands are in :mod:`bcpay.cli_stores`, the
day-to-day operations in :mod:`bcpay.cli_ops`, shared plumbing in
:mod:`bcpay.cli_common`. The library is imported inside the commands, so
``bcpay --help`` stays fast (see :mod:`bcpay.cli_common`). For the same reason
the three command modules do without ``from __future__ import annotations``:
Typer reads every command's annotations at start-up, and string annotations
cost it a compile and an eval each (a fifth of ``bcpay --help``); only names
imported for type checking alone are quoted.
"""

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bcpay import cli_ops, cli_stores
from bcpay.cli_common import AsciiFloat, AsciiInt, CliState, announce, failures, load, out, run, start_process, state

if TYPE_CHECKING:
    from bcpay.runtime import Runtime

app = typer.Typer(
    name="bcpay",
    help="OKCloud Pay (CeleryPay) payments for BigCommerce stores: server, provisioning and operations.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(
        "--config", help="bcpay.toml to read (default: $BCPAY_CONFIG, ./bcpay.toml).")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    """OKCloud Pay (CeleryPay) payments for BigCommerce stores.

    Settings come from the command line, then BCPAY_* environment variables,
    then the config file, then defaults.
    """
    ctx.obj = CliState(config=config, debug=debug)


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Address to listen on (server.host).")] = None,
    port: Annotated[int | None, typer.Option(
        parser=AsciiInt(1, 65535), help="Port to listen on (server.port).")] = None,
    workers: Annotated[int | None, typer.Option(
        parser=AsciiInt(1, 64), help="uvicorn worker processes (server.workers, 1-64).")] = None,
    proxy_headers: Annotated[bool | None, typer.Option(
        "--proxy-headers/--no-proxy-headers",
        help="Trust X-Forwarded-* from server.forwarded_allow_ips (behind a TLS proxy).")] = None,
) -> None:
    """Run the gateway server (uvicorn) with the outbox worker.

    Refuses to start without app.secret_key (except in sandbox mode), and
    without server.metrics_token on an address other than loopback. SQLite
    databases are migrated on start; PostgreSQL needs `bcpay db upgrade` first.

    Example: BCPAY_SERVER_METRICS_TOKEN=... bcpay serve --host 0.0.0.0 --port 8000 --workers 4 --proxy-headers
    """
    import uvicorn

    from bcpay.server.entry import FACTORY, uvicorn_log_config

    if host is not None and not host.strip():  # else load() calls it a configuration error (exit 1)
        raise typer.BadParameter("must not be empty (an empty host listens on every interface)", param_hint="--host")
    server = {"host": host, "port": port, "workers": workers, "proxy_headers": proxy_headers}
    with failures(ctx):
        settings = load(ctx, server={k: v for k, v in server.items() if v is not None})
        settings.require_secret_key()
        settings.require_metrics_token()
    start_process(settings)
    # The database answers and its schema is current, checked here: inside uvicorn's start-up a
    # failure is a traceback and exit 3, not the CLI's one line and exit 1.
    run(ctx, _database_ready, settings=settings)
    if state(ctx).config is not None:
        # uvicorn workers are other processes: they find the file through the environment.
        os.environ["BCPAY_CONFIG"] = str(state(ctx).config)
    s = settings.server
    announce(settings, "bcpay.server",
             f"bcpay serving on http://{s.host}:{s.port} (public URL {settings.app.public_url})")
    # uvicorn's own access line would repeat ours with the raw path, which holds the payment's
    # token (/api/v1/payments/{token}, /pay/{token}); bcpay.access logs the route template.
    try:
        uvicorn.run(
            FACTORY, factory=True, host=s.host, port=s.port, workers=s.workers, proxy_headers=s.proxy_headers,
            forwarded_allow_ips=s.forwarded_allow_ips, log_level=s.log_level, server_header=False,
            access_log=False, log_config=uvicorn_log_config(s.log_format),
        )
    except SystemExit as exc:  # uvicorn has logged why (a port in use...); exit 1 like every failure
        if exc.code not in (0, None):
            raise typer.Exit(1) from None
        raise


async def _database_ready(rt: "Runtime") -> None:
    from bcpay.errors import BcpayError
    from bcpay.storage import migrate

    if not await rt.db.ping():
        raise BcpayError("the database does not answer: check database.url", code="db_unreachable")
    await migrate.ready_schema(rt.db)


@app.command()
def worker(ctx: typer.Context) -> None:
    """Run the outbox worker alone (order updates, refunds, expiry sweep) until Ctrl+C or SIGTERM.

    Use it when `bcpay serve` runs with server.run_worker = false, or on a
    separate host; several workers may share one PostgreSQL database.

    Example: bcpay worker
    """
    import asyncio
    import signal

    from bcpay import operations
    from bcpay.effects import Worker
    from bcpay.runtime import settle_heap

    with failures(ctx):
        settings = load(ctx)
        settings.require_secret_key()
    start_process(settings)

    async def work(rt: "Runtime") -> None:
        from bcpay import refund_ledger

        await operations.ensure_schema(rt)
        await refund_ledger.warn_deprecated(rt)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        settle_heap()
        announce(settings, "bcpay.worker", "bcpay worker running (Ctrl+C to stop)")
        async with rt.db.background_checkpoints():
            await Worker(rt).run_forever(stop)
        announce(settings, "bcpay.worker", "bcpay worker stopped")

    run(ctx, work)


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Migrate the database schema to this version of bcpay; prints the revisions before and after.

    Safe to run again: an up-to-date database is left as it is. A database
    already migrated by a newer bcpay is refused (run that version's upgrade).

    Example: bcpay db upgrade
    """
    from bcpay.storage import migrate

    async def work(rt: "Runtime") -> tuple[str | None, str, str]:
        before, after = await migrate.upgrade(rt.db)
        return before, after, repr(rt.db)

    before, after, where = run(ctx, work)
    out().print(f"{where}: {before or '(empty)'} -> {after}" + (" (already current)" if before == after else ""))


@app.command()
def keygen() -> None:
    """Print a new random key for app.secret_key.

    Example: bcpay keygen
    """
    from bcpay.crypto import generate_key

    typer.echo(generate_key())


def key_fingerprint(key: str) -> str:
    """The first 12 hex digits of the key's SHA-256: enough to tell keys apart, nothing to open them with."""
    import hashlib

    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


@app.command("rotate-key")
def rotate_key(
    ctx: typer.Context,
    new_key_env: Annotated[str | None, typer.Option(
        "--new-key-env", metavar="VAR",
        help="Environment variable holding the new key (else a hidden prompt).")] = None,
) -> None:
    """Re-encrypt every stored secret under a new key, in one transaction.

    Access tokens, CeleryPay merchant secrets (current and old) and webhook
    secrets are re-sealed. The key is never taken as a plain argument: keep it
    in a file first, or everything is sealed under a key nobody has.

    Without downtime: 1. give every process app.other_secret_key = the new
    key and restart them (they now open values sealed with either key);
    2. run this command; 3. swap: app.secret_key = the new key,
    app.other_secret_key = the old one (or empty), and restart again.

    Example: bcpay keygen > new.key && BCPAY_NEW_KEY="$(cat new.key)" bcpay rotate-key --new-key-env BCPAY_NEW_KEY
    """
    from bcpay import keys
    from bcpay.crypto import SANDBOX_KEY

    with failures(ctx):
        settings = load(ctx)
        settings.require_secret_key()
        if new_key_env is not None:
            new_key = os.environ.get(new_key_env, "").strip()
            if not new_key:
                raise typer.BadParameter(f"${new_key_env} is empty or not set", param_hint="--new-key-env")
        else:
            new_key = typer.prompt("New key (from `bcpay keygen`)", hide_input=True, confirmation_prompt=True).strip()
        old_key = settings.app.secret_key.get() or SANDBOX_KEY
    counts = run(ctx, lambda rt: keys.rotate_key(rt.db, old_key=old_key, new_key=new_key), settings=settings)
    for label, n in counts.items():
        out().print(f"re-encrypted {n} {label}")
    out().print(f"Now set app.secret_key to the new key (sha256 {key_fingerprint(new_key)}...) and restart bcpay.",
                markup=False)


@app.command()
def sandbox(
    ctx: typer.Context,
    port_base: Annotated[int, typer.Option(
        parser=AsciiInt(0, 65531),
        help="First of the consecutive ports the sandbox uses (0: any free ones).")] = 8700,
    db: Annotated[Path | None, typer.Option(help="SQLite file to keep (default: a temporary one).")] = None,
    notify_delay: Annotated[float, typer.Option(
        parser=AsciiFloat(0, 3600), help="Seconds before CeleryPay's first notification.")] = 0.0,
    chaos: Annotated[bool, typer.Option(
        help="Duplicate and reorder notifications; BigCommerce 5xx/429 bursts.")] = False,
    open_browser: Annotated[bool, typer.Option("--open", help="Print the storefront URL to open.")] = False,
    unpaid_hold: Annotated[int | None, typer.Option(
        parser=AsciiInt(0, 43200), metavar="MINUTES",
        help="Cancel the sandbox store's unpaid orders this many minutes after they were placed (0 keeps "
             "them; default: a new store's hold, the expiry plus 30 minutes); the worker then sweeps every "
             "10 s.")] = None,
) -> None:
    """Run bcpay with fake BigCommerce and CeleryPay on this machine, provisioned and ready to pay.

    Example: bcpay sandbox --port-base 8700 --chaos

    Example: bcpay sandbox --unpaid-hold 1
    """
    if db is not None and not db.parent.is_dir():  # else every sandbox server fails at start-up
        raise typer.BadParameter(f"the folder {db.parent} does not exist", param_hint="--db")
    with failures(ctx):
        settings = load(ctx)
        from bcpay.sandbox.runner import main as run_sandbox

        run_sandbox(settings=settings, port_base=port_base, db=str(db) if db else None,
                    notify_delay=notify_delay, chaos=chaos, open_browser=open_browser, unpaid_hold=unpaid_hold)


cli_stores.register(app)
cli_ops.register(app)


def main(argv: list[str] | None = None) -> Any:
    """Entry point of the ``bcpay`` script."""
    return app(args=argv, prog_name="bcpay")
