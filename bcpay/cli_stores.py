"""Store commands: ``stores``, ``provision``, ``install-script``, ``webhooks``, ``channels``, ``doctor``.

The library is imported inside the commands, so ``bcpay --help`` stays fast
(see :mod:`bcpay.cli_common`).
"""


import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bcpay.cli_common import (
    AsciiInt,
    err,
    fail_unless,
    failures,
    out,
    print_checks,
    print_json,
    run,
    secret_input,
    table,
)
from bcpay.errors import InvalidInputError
from bcpay.scopes import REQUIRED_SCOPES

if TYPE_CHECKING:
    from bcpay.provisioning import Check
    from bcpay.runtime import Runtime
    from bcpay.storage.channel_queries import ChannelRecord
    from bcpay.storage.records import StoreRecord

stores_app = typer.Typer(help="Register, configure and remove stores.", no_args_is_help=True)
webhooks_app = typer.Typer(help="The BigCommerce webhooks the server handles.", no_args_is_help=True)
channels_app = typer.Typer(help="A store's storefront channels (multi-storefront) and their settings.",
                           no_args_is_help=True)

StoreHash = Annotated[str, typer.Argument(help="The store hash (from the store's API path, e.g. abc123).")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]

# bcpay.stores.REQUIRED_SCOPES, spelled out because Typer needs the default at
# import and bcpay.stores pulls in SQLAlchemy and httpx; tests/test_cli_imports.py
# checks that the two stay equal.
DEFAULT_SCOPES = " ".join(REQUIRED_SCOPES)
# bcpay.runtime.STORE_OVERRIDES, spelled out for the same reason (checked the same way).
STORE_SETTINGS = ("method_name", "accepted_methods", "paid_status_id", "mismatch_status_id", "expires_in",
                  "on_expired", "return_to", "refund_on_status", "refund_from_bigcommerce", "refund_duplicates",
                  "unpaid_hold", "extra_origins")


def _store_json(s: "StoreRecord") -> dict[str, Any]:
    """A store as shown to operators: secrets only as set / not set."""
    from bcpay import operations

    return {
        "store_hash": s.store_hash, "name": s.name, "store_url": s.store_url, "currency": s.currency,
        "source": s.source, "installed": s.installed, "scopes": list(s.scopes),
        "access_token": "set" if s.access_token_enc else "not set",
        "merchant_id": s.merchant_id, "environment": s.environment,
        "celerypay_secret": "set" if s.celerypay_secret_enc else "not set",
        "old_secret_valid_until": operations.iso(s.celerypay_old_secret_until) if s.celerypay_old_secret_enc else None,
        "webhook_secret": "set" if s.webhook_secret_enc else "not set",
        "settings": s.settings, "script_uuid": s.script_uuid,
        "last_notification_at": operations.iso(s.last_notification_at),
    }


@stores_app.command("add")
def stores_add(
    ctx: typer.Context,
    store_hash: StoreHash,
    scopes: Annotated[str, typer.Option(help=(
        "The API account's OAuth scopes, space or comma separated, as the API account page lists them "
        "(a store-level token cannot list its own scopes through the API). Default: the scopes bcpay needs."))]
    = DEFAULT_SCOPES,
) -> None:
    """Register a store that uses a store-level API account (Advanced Settings > API Accounts).

    The access token is read from $BCPAY_ACCESS_TOKEN or a hidden prompt, never
    from the command line; it is checked against the store's API and stored
    encrypted.

    Example: BCPAY_ACCESS_TOKEN=... bcpay stores add abc123 --scopes "store_v2_orders store_v2_content store_v2_information_read_only store_payments_methods_read"
    """  # noqa: E501 (an example is one line to copy)
    from bcpay import operations, stores

    with failures(ctx):
        stores.check_store_hash(store_hash)
        wanted = operations.parse_scopes(scopes)
        missing = operations.missing_scopes(wanted)
        if missing:  # before asking for a token the operator would have to paste again
            raise InvalidInputError(f"the API account lacks scopes bcpay needs: {', '.join(missing)}")
    token = secret_input("BCPAY_ACCESS_TOKEN", "Access token")
    store = run(ctx, lambda rt: operations.add_store(rt, store_hash, access_token=token, scopes=wanted))
    out().print(f"Registered {store.store_hash}: {store.name} ({store.store_url}), currency {store.currency}.")
    out().print(f"Next: bcpay stores configure {store.store_hash} --merchant-id mch_...")


@stores_app.command("list")
def stores_list(ctx: typer.Context, json_: JsonFlag = False) -> None:
    """List every store bcpay knows, installed or not.

    Example: bcpay stores list --json
    """
    from bcpay import operations, stores

    async def work(rt: "Runtime") -> list[dict[str, Any]]:
        return [{**_store_json(s), "warning": stores.sandbox_warning(rt.settings, s)}
                for s in await operations.list_stores(rt)]

    found = run(ctx, work)
    if json_:
        print_json(found)
        return
    table(["store", "name", "installed", "source", "merchant", "env", "secret"],
          [[s["store_hash"], s["name"], "yes" if s["installed"] else "no", s["source"], s["merchant_id"],
            s["environment"] + (" (!)" if s["warning"] else ""), s["celerypay_secret"]] for s in found])
    for s in found:
        if s["warning"]:
            err().print(f"Warning: {s['warning']}.", markup=False)


@stores_app.command("show")
def stores_show(ctx: typer.Context, store_hash: StoreHash, json_: JsonFlag = False) -> None:
    """Show one store's registration and settings (secrets only as set / not set).

    Example: bcpay stores show abc123
    """
    from bcpay import operations

    shown = _store_json(run(ctx, lambda rt: operations.get_store(rt, store_hash)))
    if json_:
        print_json(shown)
        return
    for key, value in shown.items():
        out().print(f"{key:>22}: {value if value not in (None, '', [], {}) else '-'}", markup=False)


@stores_app.command("configure")
def stores_configure(
    ctx: typer.Context,
    store_hash: StoreHash,
    merchant_id: Annotated[str | None, typer.Option(
        help="CeleryPay merchant id (mch_...); the secret is read from $BCPAY_CELERYPAY_SECRET "
             "or a hidden prompt.")] = None,
    keep_secret: Annotated[bool, typer.Option(
        help="Keep the stored CeleryPay secret (change only the merchant id or environment).")] = False,
    environment: Annotated[str | None, typer.Option(help="CeleryPay environment: sandbox or production.")] = None,
    method_name: Annotated[str | None, typer.Option(help="The offline payment method's display name.")] = None,
    on_expired: Annotated[str | None, typer.Option(help="keep or cancel orders whose payment expired.")] = None,
    # Ranges and allowed statuses are checked by stores.check_settings, with the setting's name.
    paid_status_id: Annotated[int | None, typer.Option(
        parser=AsciiInt(), help="Order status for paid orders (default 11).")] = None,
    mismatch_status_id: Annotated[int | None, typer.Option(
        parser=AsciiInt(), help="Order status for amount mismatches (default 12).")] = None,
    expires_in: Annotated[int | None, typer.Option(
        parser=AsciiInt(), help="Seconds a cashier page stays payable (300-86400).")] = None,
    return_to: Annotated[str | None, typer.Option(help="Where shoppers return: confirmation or bcpay.")] = None,
    refund_on_status: Annotated[bool | None, typer.Option(
        "--refund-on-status/--no-refund-on-status",
        help="Deprecated (use --refund-from-bigcommerce): refund at CeleryPay when an order is set to Refunded.")
    ] = None,
    refund_from_bigcommerce: Annotated[bool | None, typer.Option(
        "--refund-from-bigcommerce/--no-refund-from-bigcommerce",
        help="Refunds through BigCommerce's refund ledger both ways (control-panel refunds made at CeleryPay, "
             "bcpay's recorded in BigCommerce).")] = None,
    refund_duplicates: Annotated[str | None, typer.Option(help="manual or auto refund of double payments.")] = None,
    unpaid_hold: Annotated[int | None, typer.Option(
        parser=AsciiInt(), help="Minutes after which an unpaid order is cancelled; 0 keeps it (0-43200).")] = None,
    reset: Annotated[list[str] | None, typer.Option(
        "--reset", metavar="SETTING",
        help="Drop the store's own value of SETTING, so it follows the global config again (repeatable; "
             f"all for every one): {', '.join(STORE_SETTINGS)}.")] = None,
    revoke_old_secret: Annotated[bool, typer.Option(
        "--revoke-old-secret",
        help="End the previous CeleryPay secret's 24 h grace now: notifications signed with it are refused "
             "from then on (after a leak).")] = False,
) -> None:
    """Set a store's CeleryPay merchant and payment settings, or reset them to the global config.

    A new secret keeps the old one valid for notifications for 24 hours
    (rotation); --revoke-old-secret ends that grace at once. Settings not given are left as they are. After a settings
    change, every setting is shown with its value in force and where it comes
    from (store, or global: bcpay.toml, BCPAY_* or the default). Resetting a
    setting the store does not override changes nothing.

    Example: BCPAY_CELERYPAY_SECRET=... bcpay stores configure abc123 --merchant-id mch_0123456789abcdef --environment production

    Example: bcpay stores configure abc123 --reset paid_status_id --reset expires_in

    Example: bcpay stores configure abc123 --revoke-old-secret
    """  # noqa: E501 (an example is one line to copy)
    changes = {k: v for k, v in {
        "method_name": method_name, "on_expired": on_expired, "paid_status_id": paid_status_id,
        "mismatch_status_id": mismatch_status_id, "expires_in": expires_in, "return_to": return_to,
        "refund_on_status": refund_on_status, "refund_from_bigcommerce": refund_from_bigcommerce,
        "refund_duplicates": refund_duplicates, "unpaid_hold": unpaid_hold,
    }.items() if v is not None}
    if merchant_id is None and environment is None and not changes and not reset and not revoke_old_secret:
        raise typer.BadParameter("nothing to change: give --merchant-id, settings, --reset and/or --revoke-old-secret")
    from bcpay import operations, settings_audit, stores

    try:
        cleared = stores.reset_changes(reset or [])
    except InvalidInputError as exc:
        raise typer.BadParameter(exc.message, param_hint="'--reset'") from None
    both = [key for key in changes if key in cleared]
    if both:
        raise typer.BadParameter(f"{', '.join(both)}: given a value and reset at once; choose one",
                                 param_hint="'--reset'")

    with failures(ctx):  # everything checked before the prompt and before the first write
        stores.check_store_hash(store_hash)
        if merchant_id is not None:
            stores.check_merchant(merchant_id, "x" * 32)
        if environment not in (None, "sandbox", "production"):
            raise InvalidInputError("environment must be sandbox or production", code="invalid_environment")
        stores.check_settings(changes)
    secret = None
    if merchant_id is not None and not keep_secret:
        secret = secret_input("BCPAY_CELERYPAY_SECRET", "CeleryPay API secret")

    unchecked = False
    effective: dict[str, tuple[Any, bool]] = {}
    revoked: list[bool] = []

    async def work(rt: "Runtime") -> "StoreRecord":
        nonlocal unchecked
        store = await operations.get_store(rt, store_hash)
        if merchant_id is not None and secret is not None:
            unchecked = not await stores.verify_merchant(rt, store, merchant_id, secret, environment)
        if merchant_id is not None or environment is not None:
            store = await stores.configure_merchant(
                rt, store_hash, merchant_id=merchant_id or store.merchant_id or "", api_secret=secret,
                environment=environment)
        if changes or cleared:
            store = await stores.update_settings(rt, store_hash, {**cleared, **changes})
            effective.update(stores.effective_settings(rt, store))
        if revoke_old_secret:
            revoked.append(await stores.revoke_old_secret(rt, store_hash))
            store = await operations.get_store(rt, store_hash)
        detail = "; ".join(
            part for part in (
                f"merchant id {merchant_id}" if merchant_id is not None else "",
                "new API secret" if secret is not None else "",
                f"environment {environment}" if environment is not None else "",
                ", ".join(f"{k} {v}" for k, v in changes.items()),
                ("reset " + ", ".join(cleared)) if cleared else "",
                ("old secret revoked" if revoked[0] else "") if revoked else "",
            ) if part) or "no change"
        await settings_audit.note(rt, store, actor=settings_audit.cli_actor(), action="settings_saved", detail=detail)
        return store

    store = run(ctx, work)
    if revoked:
        out().print("Old CeleryPay secret revoked: notifications signed with it are refused from now on."
                    if revoked[0] else "No old CeleryPay secret was in its grace period: nothing to revoke.")
    out().print(f"Configured {store.store_hash}: merchant {store.merchant_id or '-'} ({store.environment}), "
                f"secret {'set' if store.celerypay_secret_enc else 'not set'}.")
    for key, (value, own) in effective.items():
        shown = ", ".join(value) if isinstance(value, tuple) else value
        out().print(f"{key:>22}: {shown if shown not in ('', None) else '-'} ({'store' if own else 'global'})",
                    markup=False)
    if unchecked:
        err().print(f"Warning: CeleryPay could not be reached to check the credentials; run "
                    f"`bcpay doctor {store.store_hash}` once it can.", markup=False)


@stores_app.command("remove")
def stores_remove(
    ctx: typer.Context, store_hash: StoreHash,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Take bcpay off a store: remove its snippet and webhooks, forget its token and secrets.

    Payment history stays in the database.

    Example: bcpay stores remove abc123 --yes
    """
    from bcpay import operations, stores

    with failures(ctx):
        stores.check_store_hash(store_hash)
    if not yes:
        typer.confirm(f"Remove store {store_hash} from bcpay?", abort=True)
    for note in run(ctx, lambda rt: operations.remove_store(rt, store_hash)):
        out().print(note, markup=False)
    out().print(f"Removed {store_hash}.")


def _with_store(ctx: typer.Context, store_hash: str, work: Any) -> Any:
    from bcpay import operations

    async def go(rt: "Runtime") -> Any:
        return await work(rt, await operations.get_store(rt, store_hash))

    return run(ctx, go)


def provision(ctx: typer.Context, store_hash: StoreHash) -> None:
    """Everything a store needs, idempotent: token and scopes, snippet, webhooks, payment method.

    No API can rename an offline payment method: when none carries the
    configured name, the exact control-panel steps are printed; run this again
    afterwards. Exits 1 until every check passes. Also shows whether a
    cancelled order returns its stock, and the wording for the offline
    method's instructions (the order e-mail quotes them) and the paid status
    e-mail to enable: no API writes those, so they are steps for a person.

    Example: bcpay provision abc123
    """
    from bcpay import provisioning, settings_audit

    async def work(rt: "Runtime", store: "StoreRecord") -> "list[Check]":
        done = await provisioning.provision(rt, store)
        await settings_audit.note(rt, store, actor=settings_audit.cli_actor(), action="provisioned",
                                  detail=f"{sum(c.ok for c in done)} of {len(done)} checks pass")
        return done

    checks: list[Check] = _with_store(ctx, store_hash, work)
    fail_unless(print_checks(checks, section=f"Provisioning {store_hash}"))


def install_script(
    ctx: typer.Context, store_hash: StoreHash,
    print_: Annotated[bool, typer.Option("--print", help="Only show the HTML that would be installed.")] = False,
    remove: Annotated[bool, typer.Option("--remove", help="Delete bcpay's script from the store.")] = False,
    channel: Annotated[int | None, typer.Option(
        "--channel", parser=AsciiInt(1, 2**31 - 1),
        help="Only this storefront channel (default: every channel that takes orders).")] = None,
) -> None:
    """Install or update bcpay's Script Manager snippet, one per storefront channel (never two), with its SRI hash.

    Asks nothing: a channel bcpay has not read is read first; a channel that
    takes no orders, or where OKCloud Pay is switched off, loses its copy.

    Example: bcpay install-script abc123 --channel 2
    """
    if print_ and remove:
        raise typer.BadParameter("--print and --remove exclude each other")

    if print_:
        spec = _with_store(ctx, store_hash, lambda rt, s: _desired(rt, s, channel))
        typer.echo(spec.html)
        return
    action = _with_store(ctx, store_hash, lambda rt, s: _install(rt, s, remove=remove, channel_id=channel))
    out().print(f"storefront snippet on {store_hash}: {action}", markup=False)


async def _install(rt: "Runtime", store: "StoreRecord", *, remove: bool, channel_id: int | None) -> str:
    from bcpay import channels, provisioning

    if channel_id is not None and channels.find(await channels.stored(rt, store), channel_id) is None:
        await channels.refresh(rt, store)  # a channel created since bcpay last read them
    return await provisioning.install_script(rt, store, remove=remove, channel_id=channel_id)


async def _desired(rt: "Runtime", store: "StoreRecord", channel_id: int | None) -> Any:
    from bcpay import channels, provisioning
    from bcpay.errors import NotFoundError

    if channel_id is None:
        return provisioning.desired_script(rt, store)
    channel = channels.find(await channels.known(rt, store), channel_id)
    if channel is None:
        raise NotFoundError(f"store {store.store_hash} has no channel {channel_id}", code="unknown_channel")
    return provisioning.desired_script(rt, store, channel)


@webhooks_app.command("register")
def webhooks_register(ctx: typer.Context, store_hash: StoreHash) -> None:
    """Create missing hooks and re-activate switched-off ones (idempotent).

    Example: bcpay webhooks register abc123
    """
    from bcpay import provisioning

    done = _with_store(ctx, store_hash, provisioning.register_webhooks)
    for scope, action in done.items():
        out().print(f"{scope}: {action}")


@webhooks_app.command("list")
def webhooks_list(ctx: typer.Context, store_hash: StoreHash, json_: JsonFlag = False) -> None:
    """List the store's hooks that point at this server (their secret header is not shown).

    Example: bcpay webhooks list abc123 --json
    """
    from bcpay import provisioning

    hooks = [{"id": h.id, "scope": h.scope, "destination": h.destination, "is_active": h.is_active}
             for h in _with_store(ctx, store_hash, provisioning.our_hooks)]
    if json_:
        print_json(hooks)
        return
    table(["id", "scope", "destination", "active"],
          [[h["id"], h["scope"], h["destination"], "yes" if h["is_active"] else "NO"] for h in hooks])


@webhooks_app.command("remove")
def webhooks_remove(ctx: typer.Context, store_hash: StoreHash) -> None:
    """Delete this server's hooks on the store.

    Example: bcpay webhooks remove abc123
    """
    from bcpay import provisioning

    count = _with_store(ctx, store_hash, provisioning.remove_webhooks)
    out().print(f"removed {count} webhook(s) from {store_hash}")


ChannelId = Annotated[int, typer.Argument(parser=AsciiInt(1, 2**31 - 1), metavar="CHANNEL",
                                          help="The channel id (channel 1 is the default storefront).")]


def _channel_json(c: "ChannelRecord") -> dict[str, Any]:
    return {"channel_id": c.channel_id, "name": c.name, "status": c.status, "site_url": c.site_url,
            "checkout_url": c.url_of("checkout") if c.checkout_customized is not False else None,
            "settings": c.settings, "script_uuid": c.script_uuid}


@channels_app.command("list")
def channels_list(
    ctx: typer.Context, store_hash: StoreHash,
    refresh: Annotated[bool, typer.Option("--refresh", help="Read them from BigCommerce first.")] = False,
    json_: JsonFlag = False,
) -> None:
    """The store's storefront channels as bcpay last read them: status, site, settings, snippet.

    Example: bcpay channels list abc123 --refresh
    """
    from bcpay import channels

    async def work(rt: "Runtime", store: "StoreRecord") -> list[dict[str, Any]]:
        found = await channels.refresh(rt, store) if refresh else await channels.known(rt, store)
        return [_channel_json(c) for c in found]

    found: list[dict[str, Any]] = _with_store(ctx, store_hash, work)
    if json_:
        print_json(found)
        return
    table(["channel", "name", "status", "site", "settings", "snippet"],
          [[c["channel_id"], c["name"], c["status"], c["checkout_url"] or c["site_url"],
            json.dumps(c["settings"]) if c["settings"] else "-", "yes" if c["script_uuid"] else "no"]
           for c in found])


@channels_app.command("configure")
def channels_configure(
    ctx: typer.Context, store_hash: StoreHash, channel_id: ChannelId,
    method_name: Annotated[str | None, typer.Option(
        "--method-name", help="The offline method's display name on this channel's checkout.")] = None,
    accepted_method: Annotated[list[str] | None, typer.Option(
        "--accepted-method", help="A method name that counts as OKCloud Pay on this channel (repeatable).")] = None,
    offers: Annotated[bool | None, typer.Option(
        "--offers/--no-method", help="Whether this channel offers OKCloud Pay (--no-method: no snippet there).")]
    = None,
    lang: Annotated[str | None, typer.Option(
        "--lang", help="The snippet's language where the page declares none: en, zh or auto.")] = None,
    clear: Annotated[list[str] | None, typer.Option(
        "--clear", help="Remove one setting so the store's own applies (repeatable).")] = None,
) -> None:
    """Per-channel settings, then that channel's snippet brought up to date.

    Example: bcpay channels configure abc123 2 --method-name "Pay with OKCloud" --lang zh
    """
    from bcpay import channels, provisioning, settings_audit

    changes: dict[str, Any] = dict.fromkeys(clear or [])
    for key, value in (("method_name", method_name), ("offers", offers), ("lang", lang)):
        if value is not None:
            changes[key] = value
    if accepted_method:
        changes["accepted_methods"] = accepted_method
    if not changes:
        raise typer.BadParameter("give at least one setting (or --clear NAME)")
    with failures(ctx):
        channels.clean_settings({}, {k: v for k, v in changes.items() if v is not None})

    async def work(rt: "Runtime", store: "StoreRecord") -> tuple["ChannelRecord", str]:
        channel = await channels.configure(rt, store, channel_id, changes)
        await settings_audit.note(rt, store, actor=settings_audit.cli_actor(), action="channel_configured",
                                  detail=f"channel {channel_id}: {json.dumps(channel.settings, sort_keys=True)}")
        return channel, await provisioning.install_script(rt, store, channel_id=channel_id)

    channel, action = _with_store(ctx, store_hash, work)
    out().print(f"channel {channel.channel_id} ({channel.name}): {json.dumps(channel.settings, sort_keys=True)}",
                markup=False)
    out().print(f"storefront snippet on {store_hash}: {action}", markup=False)


def doctor(
    ctx: typer.Context,
    store_hash: Annotated[str | None, typer.Argument(
        help="Check only this store (default: every installed store).")] = None,
    json_: JsonFlag = False,
) -> None:
    """One screen of what works and what to fix; exits 0 only when everything passes.

    Checks the config (and BCPAY_* variables that are no setting), database
    and schema, the public URL, and per store the token and scopes, the
    offline payment method, the snippet, the webhooks, the CeleryPay
    credentials, whether a cancelled order returns its stock (a warning, with
    the control-panel steps), dead jobs and open anomalies. The order e-mails
    (the offline method's instructions, the paid status e-mail) cannot be
    checked through any API: doctor shows the steps and says so.

    Example: bcpay doctor abc123
    """
    from bcpay import operations

    report: list[tuple[str, Check]] = run(ctx, lambda rt: operations.doctor(rt, store_hash))
    ok = all(c.ok for _, c in report)
    if json_:
        print_json({"ok": ok, "checks": [{"section": s, "name": c.name, "ok": c.ok, "detail": c.detail,
                                          "fix": c.fix} for s, c in report]})
    else:
        sections: dict[str, list[Check]] = {}
        for section, check in report:
            sections.setdefault(section, []).append(check)
        for section, checks in sections.items():
            print_checks(checks, section=section)
        out().print("All checks passed." if ok else "[red]Some checks failed: see the steps above.[/red]")
    fail_unless(ok)


def register(app: typer.Typer) -> None:
    """Attach these commands to the root app."""
    app.add_typer(stores_app, name="stores")
    app.command()(provision)
    app.command("install-script")(install_script)
    app.add_typer(webhooks_app, name="webhooks")
    app.add_typer(channels_app, name="channels")
    app.command()(doctor)
