#!/usr/bin/env python3
"""bcpay's performance benchmarks: one command, a summary table at the end.

    .venv/bin/python scripts/bench.py            # everything (~12 minutes on 2 cores)
    .venv/bin/python scripts/bench.py --quick    # a few seconds per benchmark
    .venv/bin/python scripts/bench.py --only 1,4 --no-postgres
    .venv/bin/python scripts/bench.py --profile  # adds pyinstrument profiles of the hot paths

Every figure is a ratio against a baseline measured in the same invocation on
the same machine (a bare Starlette endpoint, ``python -c pass``, the quota) or
against an absolute limit from the performance issue, because absolute numbers
drift on shared machines. Benchmarks:

1. server hot paths (notify, status poll, start payment) vs a bare endpoint,
   SQLite and PostgreSQL (a fresh database on 127.0.0.1:5432, dropped after);
2. notification received -> order status PUT, BigCommerce answering in 50 ms;
3. ``bcpay reconcile`` at an enforced, time-scaled quota: rate, 429s, flat memory;
4. ``bcpay --help`` start-up vs ``python -c pass``;
5. ``bcpay sandbox`` ready time.

Everything runs on loopback; every load loop is bounded in time and count.
The table is printed as text and as Markdown (for the README's Performance
section); ``--json`` writes the rows for tools.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_lib import PYTHON, Row, ensure_wrk, log, markdown_table, text_table

NAMES = {"1": "hotpaths", "2": "notify-to-put", "3": "reconcile", "4": "cli", "5": "sandbox"}


def ensure_profiler() -> None:
    """pyinstrument into the venv, only when --profile asks for it."""
    done = subprocess.run([PYTHON, "-c", "import pyinstrument"], capture_output=True, check=False)
    if done.returncode != 0:
        log("installing pyinstrument into the venv (--profile)")
        subprocess.run([PYTHON, "-m", "pip", "install", "-q", "--disable-pip-version-check", "pyinstrument"],
                       check=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short version: a few seconds per benchmark")
    parser.add_argument("--toy", action="store_true", help=argparse.SUPPRESS)  # the smoke test's sizes
    parser.add_argument("--only", default="1,2,3,4,5", help="benchmarks to run, e.g. 1,4 (default: all)")
    parser.add_argument("--no-postgres", action="store_true", help="benchmark 1 on SQLite only")
    parser.add_argument("--profile", action="store_true", help="also profile the hot paths (pyinstrument)")
    parser.add_argument("--load", choices=("wrk", "python"), default="wrk",
                        help="peak load generator (wrk is installed from Debian when missing)")
    parser.add_argument("--json", type=Path, help="write the rows and notes here")
    parser.add_argument("--workdir", type=Path, help="keep logs, pools and profiles here (default: temporary)")
    args = parser.parse_args(argv)
    args.only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = [x for x in args.only if x not in NAMES]
    if unknown:
        parser.error(f"--only: unknown benchmark(s) {unknown}; choose from {NAMES}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks and print the summary; exit 0 even when a target fails."""
    args = parse_args(argv)
    from bench_flows import FlowConfig
    from bench_hotpaths import HotConfig

    hot, flow = HotConfig(), FlowConfig()
    cli_runs, sandbox_runs = 15, 3
    if args.quick or args.toy:
        hot = HotConfig(peak_seconds=3, paced_seconds=3, notify_pool=12_000, start_pool=1_500, poll_tokens=1_000)
        flow = FlowConfig(notify_seconds=3, reconcile_sizes=(300, 1_000), quota=150, window_ms=3_000)
        cli_runs, sandbox_runs = 5, 1
    if args.toy:
        hot = HotConfig(peak_seconds=1, paced_seconds=1, notify_pool=3_000, start_pool=300, poll_tokens=100)
        flow = FlowConfig(notify_rate=50, notify_seconds=1, reconcile_sizes=(100, 200), quota=150, window_ms=500)
        cli_runs = 1
    if args.profile:
        ensure_profiler()
        hot.profile_seconds = 3 if (args.quick or args.toy) else 8
    wrk = ensure_wrk() if args.load == "wrk" else None

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bcpay-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    notes: list[str] = []
    started = time.perf_counter()

    def stage(label: str, fn: Callable[[], tuple[list[Row], list[str]]]) -> None:
        log(f"{label} ...")
        t0 = time.perf_counter()
        try:
            got, said = fn()
        except Exception as exc:
            log(f"{label} failed: {exc!r}")
            got, said = [Row(label, f"error: {str(exc).splitlines()[0][:120]}", "-", math.nan, False)], []
        rows.extend(got)
        notes.extend(said)
        log(f"{label}: done in {time.perf_counter() - t0:.0f} s")

    if "1" in args.only:
        from bench_hotpaths import run as hotpaths
        from bench_world import postgres_available

        stage("1 hot paths (SQLite)", lambda: hotpaths("sqlite", hot, wrk, workdir))
        if args.no_postgres:
            notes.append("PostgreSQL skipped (--no-postgres)")
        elif postgres_available():
            stage("1 hot paths (PostgreSQL)", lambda: hotpaths("postgresql", hot, wrk, workdir))
        else:
            notes.append("PostgreSQL skipped: nothing answers on 127.0.0.1:5432 as postgres")
    if "2" in args.only:
        from bench_flows import notify_to_put

        stage("2 notification -> order updated", lambda: notify_to_put(flow, workdir))
    if "3" in args.only:
        from bench_flows import reconcile

        stage("3 reconcile at the rate limit", lambda: reconcile(flow, workdir))
    if "4" in args.only:
        from bench_startup import cli_startup

        stage("4 CLI start-up", lambda: cli_startup(cli_runs))
    if "5" in args.only:
        from bench_startup import sandbox_ready

        stage("5 sandbox ready", lambda: sandbox_ready(sandbox_runs, workdir))

    elapsed = time.perf_counter() - started
    mode = "toy" if args.toy else "quick" if args.quick else "full"
    header = (f"bcpay benchmarks ({mode}, {elapsed / 60:.1f} min, load: {'wrk' if wrk else 'python'}, "
              f"work dir {workdir})")
    print(f"\n{header}\n\n{text_table(rows)}\n")
    if notes:
        print("Notes:\n" + "\n".join(f"  - {n}" for n in notes) + "\n")
    if hot.profile_seconds:
        print("Profiles: " + ", ".join(str(p) for p in sorted(workdir.glob("profile-*.txt"))) + "\n")
    print("Markdown (README, Performance):\n")
    print(markdown_table(rows))
    print(f"\nRerun: `.venv/bin/python scripts/bench.py{' --quick' if args.quick else ''}`")
    if args.json:
        args.json.write_text(json.dumps({"mode": mode, "seconds": elapsed, "load": "wrk" if wrk else "python",
                                         "rows": [r.as_json() for r in rows], "notes": notes}, indent=2))
    if args.workdir is None and not args.profile:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
