"""Long reliability runs: exactly-once payment updates under duplicates, faults, crashes and races.

    .venv/bin/python scripts/reliability.py                        # every scenario, 1,000 orders each
    .venv/bin/python scripts/reliability.py --scenario crash --orders 200 --seed 7

Scenarios (each is a row of the table; machinery in ``reliability_lib.py``):

``pg``      two ``bcpay serve --workers 2`` processes on one fresh PostgreSQL database; every
            CeleryPay event posted 1-5 times, shuffled across the run, alternating servers;
            BigCommerce answers 503 on 10 % of calls and 429 every 50th call.
``crash``   the same, while each server's process group gets ``kill -9`` 2-3 times at random
            moments and is restarted.
``sqlite``  one ``bcpay serve`` process (1 worker) on SQLite, killed and restarted 2-3 times.
``races``   as ``pg``, plus: 15 % of payments are paid and notified before bcpay has CeleryPay's
            creation answer; the snippet's status poll runs against every token during the
            burst (asking CeleryPay on every poll); ``bcpay reconcile --all --fix --since 1d``
            runs twice as a subprocess during the burst.

Columns: events sent = distinct CeleryPay events; duplicates = notification POSTs beyond the
first of each event (planned copies, racing deliveries and re-posts after a failure); faults
injected = BigCommerce 503s + 429s + kill -9s; orders paid = orders with a succeeded payment at
CeleryPay; status PUTs = status-setting PUTs in the fake BigCommerce; anomalies = rows in bcpay's
anomalies table; lost = paid at CeleryPay but not in status 11; double-applied = more than one
PUT to status 11; 5xx answers = 5xx from bcpay (BigCommerce's injected 5xx do not count).

Exit status 1 when any run lost an order, applied one twice, marked an unpaid order paid,
answered 5xx, left a job dead or queued, or never got a notification acknowledged.
Everything runs on loopback; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reliability_lib import Result, Run, Scenario

SCENARIOS = ("pg", "crash", "sqlite", "races")
COLUMNS = ("scenario", "events sent", "duplicates", "faults injected", "orders paid", "status PUTs",
           "anomalies", "lost", "double-applied", "5xx answers", "unpaid set paid", "dead jobs", "time")


def scenario(name: str, *, orders: int = 1000, seed: int = 1) -> Scenario:
    """The named scenario at the given size."""
    base = Scenario(name=name, orders=orders, seed=seed)
    if name == "pg":
        return base
    if name == "crash":
        return dataclasses.replace(base, kills=(2, 3))
    if name == "sqlite":
        return dataclasses.replace(base, database="sqlite", servers=1, workers=1, kills=(2, 3))
    if name == "races":
        return dataclasses.replace(base, racing_share=0.15, poll=True, reconcile_at=(0.2, 0.6))
    raise ValueError(f"unknown scenario {name!r} (choose from {', '.join(SCENARIOS)})")


def row(r: Result) -> list[str]:
    """One table row."""
    faults = f"{r.faults} (503: {r.faults_503}, 429: {r.faults_429}, kill -9: {r.kills})"
    return [r.scenario, str(r.events), str(r.duplicates), faults, f"{r.paid}/{r.orders}", str(r.status_puts),
            str(r.anomalies), str(r.lost), str(r.double_applied), str(r.five_xx), str(r.unpaid_marked_paid),
            str(r.dead_jobs + r.queued_left), f"{r.seconds:.0f} s"]


def plain_table(results: Sequence[Result]) -> str:
    """Aligned plain text."""
    rows = [list(COLUMNS), *(row(r) for r in results)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(results: Sequence[Result]) -> str:
    """The same table in Markdown, for the README's "Reliability" section."""
    rows = [list(COLUMNS), ["---"] * len(COLUMNS), *(row(r) for r in results)]
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=1000, help="orders per scenario (default 1000)")
    parser.add_argument("--scenario", default="all", choices=("all", *SCENARIOS), help="which run (default all)")
    parser.add_argument("--seed", type=int, default=1, help="seed of every random choice (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the logs of runs that passed too")
    return parser.parse_args(argv)


async def run_all(names: Sequence[str], orders: int, seed: int, *, keep: bool = False) -> list[Result]:
    """Run the scenarios one after the other; logs of failed runs are kept."""
    results = []
    for name in names:
        run = Run(scenario(name, orders=orders, seed=seed), say=lambda text: print(text, flush=True))
        result = await run.execute()
        kept = keep or not result.ok
        print(f"[{name}] {'ok' if result.ok else 'FAILED'} in {result.seconds:.0f} s"
              + (f"; logs in {run.workdir}" if kept else ""), flush=True)
        for note in result.notes[:25]:
            print(f"[{name}]   {note}", flush=True)
        if not kept:
            shutil.rmtree(run.workdir, ignore_errors=True)
        results.append(result)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Run, print the tables, answer the exit status."""
    args = parse_args(argv)
    names = SCENARIOS if args.scenario == "all" else (args.scenario,)
    began = time.monotonic()
    results = asyncio.run(run_all(names, args.orders, args.seed, keep=args.keep))
    print()
    print(plain_table(results))
    print(f"\n{len(results)} scenario(s), {args.orders} orders each, seed {args.seed}, "
          f"{time.monotonic() - began:.0f} s in all.\n")
    print(markdown_table(results))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
