"""Day-to-day commands: notifications, reconcile, payments, events, jobs, refunds, anomalies.

The library and Rich are imported inside the commands, so ``bcpay --help``
stays fast (see :mod:`bcpay.cli_common`).
"""


from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bcpay.cli_common import (
    Amount,
    AsciiInt,
    err,
    failures,
    load,
    money,
    out,
    print_json,
    run,
    store_hash_param,
    table,
)
from bcpay.errors import NotFoundError

if TYPE_CHECKING:
    from bcpay.reconcile import Finding, Report
    from bcpay.reconcile import Progress as OnProgress
    from bcpay.refunds import RefundResult
    from bcpay.runtime import Runtime

payments_app = typer.Typer(help="Inspect payment attempts.", no_args_is_help=True)
events_app = typer.Typer(help="Raw CeleryPay notifications: inspect, replay, prune.", no_args_is_help=True)
jobs_app = typer.Typer(help="The outbox jobs that update BigCommerce.", no_args_is_help=True)
anomalies_app = typer.Typer(help="Money taken that an order must not keep (double or late payments), refunds in doubt.",
                            no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
StoreOpt = Annotated[str | None, typer.Option("--store", help="Only this store (store hash).",
                                              callback=store_hash_param)]
StoreReq = Annotated[str, typer.Option("--store", help="The store hash.", callback=store_hash_param)]
Limit = Annotated[int, typer.Option(
    parser=AsciiInt(1, 10_000), help="How many to show, newest first (1-10000).")]
ROW_ID_MAX = 2**63 - 1  # a BIGINT: a larger id can name nothing, and the driver would refuse it
RowId = AsciiInt(1, ROW_ID_MAX)
OrderId = Annotated[int, typer.Argument(parser=RowId, help="The BigCommerce order id.")]


def simulate_notify(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(
        metavar="ORDER_OR_PAYMENT", help="Order id, CeleryPay payment id (pay_...) or pay token.")],
    store: StoreOpt = None,
    status: Annotated[str, typer.Option(help="succeeded, failed, expired or cancelled.")] = "succeeded",
    amount: Annotated[str | None, typer.Option(
        parser=Amount(), help="Claim this paid amount (e.g. 12.50) instead of the attempt's.")] = None,
    currency: Annotated[str | None, typer.Option(help="Claim this currency instead of the attempt's.")] = None,
    url: Annotated[str | None, typer.Option(
        help="Where to POST (default {public_url}/notify/celerypay/{store}).")] = None,
    repeat: Annotated[int, typer.Option(
        parser=AsciiInt(1, 100), help="Deliver the same event N times (1-100; a dedupe check).")] = 1,
    bad_signature: Annotated[bool, typer.Option(
        "--bad-signature", help="Sign with a wrong secret (expect 401).")] = False,
) -> None:
    """Post a correctly signed CeleryPay notification for a real payment attempt, and show the answers.

    For tests and demos, on sandbox stores only. Exits 0 when the server answered as expected: 2xx,
    or 401 with --bad-signature. A notification is a hint: the server then asks CeleryPay about the
    payment and applies that answer, so a simulated capture of a payment CeleryPay holds as pending
    changes nothing (pay at the sandbox cashier for that).

    Example: bcpay simulate-notify 101 --store abc123 --status succeeded --repeat 3
    """
    from bcpay import operations

    if status not in operations.SIMULATED_STATUSES:  # before the lookup: an unknown order would hide the typo
        raise typer.BadParameter(f"{status!r}: expected one of {', '.join(operations.SIMULATED_STATUSES)}",
                                 param_hint="--status")
    note, answers = run(ctx, lambda rt: operations.simulate_notify(
        rt, ref, store_hash=store, status=status, amount=amount, currency=currency, url=url, repeat=repeat,
        bad_signature=bad_signature))
    out().print(f"event {note.event_id} (payment.{status}){' with a wrong signature' if bad_signature else ''}",
                markup=False)
    for n, answer in enumerate(answers, 1):
        out().print(f"  {n}. {answer.status} {answer.body}", markup=False)
    expected = all((a.status == 401) if bad_signature else (200 <= a.status < 300) for a in answers)
    if not expected:
        raise typer.Exit(1)


@contextmanager
def _progress(enabled: bool, store_hash: str) -> "Iterator[OnProgress]":
    """A Rich progress bar on stderr; the total grows while pages are listed."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Task,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    # Defined here, not at module level, so Rich is imported only when a bar is drawn.
    class _Rate(ProgressColumn):
        """Orders per second."""

        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:.0f} orders/s" if speed else "- orders/s")

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(),
                   TimeRemainingColumn(), console=err(), disable=not enabled, transient=False)
    task = bar.add_task(f"{store_hash} (listing)", total=None)

    def update(checked: int, listed: int, listing_done: bool) -> None:
        bar.update(task, completed=checked, total=listed or None,
                   description=store_hash if listing_done else f"{store_hash} (listing)")

    with bar:
        yield update


TABLE_LIMIT = 200  # findings shown as a table; more are printed as plain lines, streamed


def _print_report(report: "Report") -> None:
    def cells(f: "Finding") -> list[Any]:
        return [f.kind, f.order_id, money(f.amount, f.currency), f.celerypay_id, f.pay_link or f.detail,
                "fixed" if f.fixed else ""]

    total = sum(report.counts.values())
    if 0 < total <= TABLE_LIMIT:
        table(["kind", "order", "amount", "payment", "detail / pay link", ""],
              [cells(f) for f in report.iter_findings()], title=report.store_hash)
    elif total:
        for f in report.iter_findings():
            typer.echo("  ".join("-" if c in (None, "") else str(c) for c in cells(f)))
    counts = ", ".join(f"{n} {k}" for k, n in report.counts.items()) or "nothing to report"
    out().print(f"{report.store_hash}: checked {report.checked} orders: {counts}; fixed {report.fixed}.", markup=False)
    if report.cancelled_unpaid:
        out().print(f"{report.store_hash}: {report.cancelled_unpaid} order(s) cancelled unpaid after the store's hold "
                    "(payments.unpaid_hold).", markup=False)


def _print_reports_json(reports: "list[Report]", jobs_run: int) -> None:
    """The same document as ``print_json`` would write, streamed: findings never all in memory."""
    import json
    typer.echo('{"reports": [', nl=False)
    for i, report in enumerate(reports):
        head = json.dumps(report.json_head(), default=str)
        typer.echo(("," if i else "") + head[:-1] + ', "findings": [', nl=False)
        for j, finding in enumerate(report.iter_findings()):
            typer.echo(("," if j else "") + "\n  " + json.dumps(finding.to_json(), default=str), nl=False)
        typer.echo("]}", nl=False)
    typer.echo(f'], "jobs_run": {jobs_run}}}')


def reconcile_cmd(
    ctx: typer.Context,
    store_hash: Annotated[str | None, typer.Argument(help="The store to reconcile (or --all).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every installed, configured store.")] = False,
    since: Annotated[str, typer.Option(help="Orders created in this past period (e.g. 7d, 48h).")] = "7d",
    fix: Annotated[bool, typer.Option(
        "--fix", help="Apply CeleryPay's state (same idempotent path as notifications).")] = False,
    run_jobs: Annotated[bool, typer.Option(
        "--run-jobs", help="With --fix: run the resulting order updates now (no server running).")] = False,
    concurrency: Annotated[int, typer.Option(
        parser=AsciiInt(1, 64), help="Orders checked at once (1-64; BigCommerce's quota is never exceeded).")] = 8,
    json_: JsonFlag = False,
) -> None:
    """Find orders whose BigCommerce status, bcpay attempts and CeleryPay truth disagree.

    Reports paid_not_applied, paid_without_payment, amount_mismatch,
    double_payment, expired, failed, never_started (no attempt, or the latest
    never reached CeleryPay; with its pay link) and pending, and counts the orders
    the unpaid hold cancelled in the period (payments.unpaid_hold). --fix applies
    CeleryPay's state (an attempt stuck creating that CeleryPay has no payment
    for becomes not_created); the order updates are then run by the worker
    (`bcpay serve` or `bcpay worker`), or at once with --run-jobs.

    Example: bcpay reconcile abc123 --since 7d --fix
    """
    if (store_hash is None) == (not all_):
        raise typer.BadParameter("give a STORE_HASH or --all (not both)")
    if run_jobs and not fix:
        raise typer.BadParameter("--run-jobs needs --fix")
    from bcpay import operations, reconcile

    with failures(ctx):
        period = operations.parse_duration(since)

    async def work(rt: "Runtime") -> "tuple[list[Report], int]":
        if store_hash is not None:
            chosen = [await operations.get_store(rt, store_hash)]
        else:
            chosen = [s for s in await operations.list_stores(rt) if s.installed and s.has_credentials]
        reports = []
        for store in chosen:
            with _progress(not json_, store.store_hash) as on_progress:
                reports.append(await reconcile.reconcile(
                    rt, store, since=rt.now() - period, fix=fix, concurrency=concurrency, on_progress=on_progress))
        return reports, (await reconcile.run_jobs(rt) if run_jobs else 0)

    reports, ran = run(ctx, work)
    try:
        if json_:
            _print_reports_json(reports, ran)
            return
        for report in reports:
            _print_report(report)
    finally:
        for report in reports:
            report.close()
    if fix and not run_jobs and any(r.fixed for r in reports):
        out().print("The order updates are queued: the worker (`bcpay serve` or `bcpay worker`) applies them.")
    if run_jobs:
        out().print(f"ran {ran} outbox job(s)")


@payments_app.command("list")
def payments_list(
    ctx: typer.Context, store: StoreOpt = None,
    status: Annotated[str | None, typer.Option(help="Only attempts in this status (pending, succeeded, ...).")] = None,
    limit: Limit = 50, json_: JsonFlag = False,
) -> None:
    """List recent payment attempts, newest first.

    Example: bcpay payments list --store abc123 --status pending
    """
    from bcpay import operations, rules

    known = sorted(rules.REMOTE_STATUSES | {rules.CREATING})
    if status is not None and status not in known:  # else a typo silently lists nothing
        raise typer.BadParameter(f"{status!r}: expected one of {', '.join(known)}", param_hint="--status")

    found = run(ctx, lambda rt: operations.list_attempts(rt, store_hash=store, status=status, limit=limit))
    if json_:
        print_json(found)
        return
    table(["id", "store", "order", "#", "status", "amount", "paid", "celerypay id", "created"],
          [[p["id"], p["store_hash"], p["order_id"], p["attempt"], p["status"], money(p["amount"], p["currency"]),
            money(p["paid_amount"], p["currency"]), p["celerypay_id"], p["created_at"]] for p in found])


@payments_app.command("show")
def payments_show(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(
        metavar="ORDER_OR_PAYMENT", help="Order id, CeleryPay payment id or pay token.")],
    store: StoreOpt = None, json_: JsonFlag = False,
) -> None:
    """Show one attempt with its refunds, notifications and the order's audit log.

    Example: bcpay payments show pay_A1b2C3d4E5f6G7h8I9j0K1l2
    """
    from bcpay import operations

    detail = run(ctx, lambda rt: operations.payment_detail(rt, ref, store))
    if json_:
        print_json(detail)
        return
    for key, value in detail.items():
        if key not in ("refunds", "events", "audit"):
            out().print(f"{key:>17}: {'-' if value is None else value}", markup=False)
    for key in ("refunds", "events", "audit"):
        out().print(f"{key}:", markup=False)
        for item in detail[key] or [{"": "none"}]:
            out().print("  " + ", ".join(f"{k}={v}" if k else str(v) for k, v in item.items()), markup=False)


@events_app.command("list")
def events_list(ctx: typer.Context, store: StoreOpt = None, limit: Limit = 50, json_: JsonFlag = False) -> None:
    """List recent CeleryPay notifications as received, newest first.

    Example: bcpay events list --store abc123 --limit 20
    """
    from bcpay import operations

    found = run(ctx, lambda rt: operations.list_events(rt, store_hash=store, limit=limit))
    if json_:
        print_json(found)
        return
    table(["event", "store", "type", "payment", "outcome", "received"],
          [[e["event_id"], e["store_hash"], e["type"], e["celerypay_payment_id"], e["outcome"], e["received_at"]]
           for e in found])


EventStore = Annotated[str | None, typer.Option(
    "--store", help="The store that received it (needed only when several stores have this event id).")]


@events_app.command("show")
def events_show(ctx: typer.Context, event_id: Annotated[str, typer.Argument(help="The evt_... id.")],
                json_: JsonFlag = False, store: EventStore = None) -> None:
    """Show one stored notification with its raw body.

    Example: bcpay events show evt_0123456789abcdef
    """
    from bcpay import operations

    print_json(run(ctx, lambda rt: operations.get_event(rt, event_id, store)))


@events_app.command("replay")
def events_replay(ctx: typer.Context, event_id: Annotated[str, typer.Argument(help="The evt_... id.")],
                  store: EventStore = None) -> None:
    """Ask CeleryPay again about a stored notification's payment and apply its answer (idempotent).

    As for a delivery, the event's own data is not applied: CeleryPay's word is.

    Example: bcpay events replay evt_0123456789abcdef --store abc123
    """
    from bcpay import operations

    outcome = run(ctx, lambda rt: operations.replay_event(rt, event_id, store))
    out().print(f"{event_id}: {outcome}", markup=False)


@events_app.command("prune")
def events_prune(
    ctx: typer.Context,
    older_than: Annotated[str | None, typer.Option(
        help="Delete events received longer ago than this (at least 30d; "
             "default outbox.event_retention_days).")] = None,
) -> None:
    """Delete raw notifications older than a period (never less than 30 days: dedupe needs them).

    Example: bcpay events prune --older-than 120d
    """
    from datetime import timedelta

    from bcpay import operations

    with failures(ctx):
        settings = load(ctx)
        period = (operations.parse_duration(older_than) if older_than is not None
                  else timedelta(days=settings.outbox.event_retention_days))
    count = run(ctx, lambda rt: operations.prune_events(rt, period), settings=settings)
    out().print(f"deleted {count} event(s) older than {period.days} days")


@jobs_app.command("list")
def jobs_list(
    ctx: typer.Context, store: StoreOpt = None,
    state: Annotated[str | None, typer.Option(help="queued, done, dead, cancelled or discarded.")] = None,
    limit: Limit = 50, json_: JsonFlag = False,
) -> None:
    """List outbox jobs (order updates, refunds), newest first.

    Example: bcpay jobs list --state dead
    """
    from bcpay import operations, outbox

    known = (outbox.QUEUED, outbox.DONE, outbox.DEAD, outbox.CANCELLED, outbox.DISCARDED)
    if state is not None and state not in known:
        raise typer.BadParameter(f"{state!r}: expected one of {', '.join(known)}", param_hint="--state")

    async def work(rt: "Runtime") -> list[dict[str, Any]]:
        store_id = await operations.store_id_of(rt, store)
        found = await outbox.list_jobs(rt.db, state=state, store_id=store_id, limit=limit)
        return [{"id": j.id, "kind": j.kind, "state": j.state, "attempts": j.attempts, "payload": j.payload,
                 "run_after": operations.iso(j.run_after), "last_error": j.last_error} for j in found]

    found = run(ctx, work)
    if json_:
        print_json(found)
        return
    table(["id", "kind", "state", "attempts", "payload", "run after", "last error"],
          [[j["id"], j["kind"], j["state"], j["attempts"], j["payload"], j["run_after"], (j["last_error"] or "")[:80]]
           for j in found])


def _dead_jobs(ctx: typer.Context, job_id: int | None, all_: bool,
               act: "Callable[[Runtime], Awaitable[int]]") -> int:
    """Run ``act`` on one dead job or all of them; a job id that names no dead job is an error."""
    if (job_id is None) == (not all_):
        raise typer.BadParameter("give a JOB_ID or --all (not both)")
    count = run(ctx, act)
    if job_id is not None and count == 0:
        with failures(ctx):
            raise NotFoundError(f"no dead job with id {job_id}")
    return count


@jobs_app.command("retry")
def jobs_retry(
    ctx: typer.Context,
    job_id: Annotated[int | None, typer.Argument(parser=RowId, help="The dead job to queue again.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Queue every dead job again.")] = False,
) -> None:
    """Queue dead jobs again (after fixing what made them fail).

    Example: bcpay jobs retry --all
    """
    from bcpay import outbox

    count = _dead_jobs(ctx, job_id, all_, lambda rt: outbox.retry_dead(rt.db, now=rt.now(), job_id=job_id))
    out().print(f"queued {count} job(s) again")


@jobs_app.command("discard")
def jobs_discard(
    ctx: typer.Context,
    job_id: Annotated[int | None, typer.Argument(parser=RowId, help="The dead job to give up on.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Give up on every dead job.")] = False,
) -> None:
    """Give up on dead jobs that can never succeed (they stay listed as discarded; doctor stops counting them).

    Example: bcpay jobs discard 42
    """
    from bcpay import outbox

    count = _dead_jobs(ctx, job_id, all_, lambda rt: outbox.discard_dead(rt.db, now=rt.now(), job_id=job_id))
    out().print(f"discarded {count} job(s)")


def pay_link(ctx: typer.Context, order_id: OrderId, store: StoreReq) -> None:
    """Print the /pay link for an order, for a shopper who closed the tab.

    Example: bcpay pay-link 101 --store abc123
    """
    from bcpay import payflow

    typer.echo(run(ctx, lambda rt: payflow.pay_link(rt, store, order_id)))


def _print_refund(result: "RefundResult") -> None:
    """One line about a refund (``bcpay refund``, ``bcpay refund-resolve``)."""
    if result.status == "queued_again":  # bcpay's own refund of a double or late payment, found not made
        out().print(f"refund {result.merchant_refund_no} of {money(result.amount, result.currency)}: failed; the "
                    "worker refunds that amount again from the same payment", markup=False)
        return
    out().print(f"refund {result.merchant_refund_no} of {money(result.amount, result.currency)}: {result.status} "
                f"(CeleryPay {result.celerypay_id or '-'})", markup=False)


def refund(
    ctx: typer.Context,
    order_id: OrderId,
    store: StoreReq,
    amount: Annotated[str | None, typer.Option(
        parser=Amount(), help="Amount in the payment's currency, e.g. 12.50 (default: all that is left).")] = None,
    reason: Annotated[str, typer.Option(help="Why (kept with the refund, sent to CeleryPay).")] = "",
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    again: Annotated[bool, typer.Option(
        "--again", help="Refund even if the same amount was refunded on this order in the last 15 minutes.")] = False,
) -> None:
    """Refund an order's OKCloud Pay payment, fully or partly (never more than paid minus refunded).

    Running it again with the same amount within 15 minutes (a dropped session, a retried script) is
    refused unless --again says the second refund is meant.

    Example: bcpay refund 101 --store abc123 --amount 12.50 --reason "damaged item"
    """
    from bcpay import operations, refunds, settings_audit
    from bcpay.money import to_minor

    # --amount and --store are checked while parsing, before the question.
    if not yes:
        typer.confirm(f"Refund {amount or 'the rest of'} order {order_id} on {store}?", abort=True)

    async def work(rt: "Runtime") -> "RefundResult":
        shop = await operations.get_store(rt, store)
        paid = await refunds.paid_attempt(rt, shop, order_id)
        minor = to_minor(amount, paid.currency) if amount is not None else None
        result = await refunds.request_refund(rt, shop, paid, amount=minor, reason=reason, again=again)
        await settings_audit.note(rt, shop, actor=settings_audit.cli_actor(), action="refund",
                                  detail=f"order #{order_id}: {amount or 'the rest'}"
                                  + (f" ({reason})" if reason else ""))
        return result

    _print_refund(run(ctx, work))


def refund_resolve(
    ctx: typer.Context,
    number: Annotated[str, typer.Argument(
        metavar="REFUND_NO", help="The refund's number (merchant_refund_no), as the anomaly names it.")],
    store: StoreReq,
    made: Annotated[str | None, typer.Option(
        "--made", metavar="REFUND_ID",
        help="CeleryPay has a refund with this number: its id (ref_...). bcpay reads it there and records it.")] = None,
    not_made: Annotated[bool, typer.Option(
        "--not-made", help="CeleryPay has no refund with this number: mark it failed, its amount refundable again.")
    ] = False,
) -> None:
    """Settle a refund in doubt: its answer was lost and CeleryPay's 24-hour idempotency window is over.

    Such a refund may or may not have been made, so its amount stays held (no second refund of the same
    money) and a refund_in_doubt anomaly names it. Look for its number at CeleryPay. Found: give its id with
    --made; bcpay reads that refund from CeleryPay and records its state (a succeeded one updates the order).
    Not there: --not-made marks it failed, so the money can be refunded again with `bcpay refund` (bcpay's own
    refund of a double or late payment is queued again from that payment by itself). A
    refund.succeeded or refund.failed notification for it settles it by itself.

    Example: bcpay refund-resolve abc123-101-1-r2 --store abc123 --made ref_A1b2C3d4E5f6G7h8I9j0K1l2
    """
    if (made is None) == (not not_made):
        raise typer.BadParameter("give --made REFUND_ID or --not-made (not both)")
    from bcpay import operations, refunds, settings_audit, stores

    with failures(ctx):
        stores.check_store_hash(store)

    async def work(rt: "Runtime") -> "RefundResult":
        shop = await operations.get_store(rt, store)
        result = await refunds.resolve_doubt(rt, shop, number, celerypay_id=made)
        await settings_audit.note(rt, shop, actor=settings_audit.cli_actor(), action="refund_resolved",
                                  detail=f"{number}: " + (f"made as {made}" if made else "not made"))
        return result

    _print_refund(run(ctx, work))


@anomalies_app.command("list")
def anomalies_list(
    ctx: typer.Context, store: StoreOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="Include resolved anomalies.")] = False,
    json_: JsonFlag = False,
) -> None:
    """List double payments, payments after cancellation and amount mismatches still to handle.

    Example: bcpay anomalies list --store abc123
    """
    from bcpay import operations

    found = run(ctx, lambda rt: operations.list_anomalies(rt, store_hash=store, include_resolved=all_))
    if json_:
        print_json(found)
        return
    table(["id", "store", "order", "kind", "amount to return", "payment", "state", "detail"],
          [[a["id"], a["store_hash"], a["order_id"], a["kind"], money(a["amount"], a["currency"]), a["celerypay_id"],
            a["state"], a["detail"]] for a in found])


@anomalies_app.command("resolve")
def anomalies_resolve(
    ctx: typer.Context,
    anomaly_id: Annotated[int, typer.Argument(metavar="ID", parser=RowId, help="The anomaly id.")],
    note: Annotated[str, typer.Option(help="What was done (kept with the anomaly).")] = "",
) -> None:
    """Mark an anomaly handled, with a note of what was done.

    Example: bcpay anomalies resolve 3 --note "refunded by hand in the CeleryPay dashboard"
    """
    from bcpay import operations
    from bcpay.settings_audit import cli_actor

    run(ctx, lambda rt: operations.resolve_anomaly(rt, anomaly_id, note, actor=cli_actor()))
    out().print(f"anomaly {anomaly_id} resolved")


def register(app: typer.Typer) -> None:
    """Attach these commands to the root app."""
    app.command("simulate-notify")(simulate_notify)
    app.command("reconcile")(reconcile_cmd)
    app.add_typer(payments_app, name="payments")
    app.add_typer(events_app, name="events")
    app.add_typer(jobs_app, name="jobs")
    app.command("pay-link")(pay_link)
    app.command()(refund)
    app.command("refund-resolve")(refund_resolve)
    app.add_typer(anomalies_app, name="anomalies")

