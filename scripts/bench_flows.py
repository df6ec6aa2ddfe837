"""Benchmarks 2 and 3: notification to order updated, and reconcile at the rate limit.

2. ``bcpay serve`` with its outbox worker (then again with the jobs in a
   separate ``bcpay worker`` process), the fake BigCommerce answering
   every call in 50 ms: notifications sent at a fixed rate by the paced load
   generator (which records each send time); the fake records when each status
   PUT finished. Latency = PUT finished - notification sent, both wall clock on
   this machine. The fake reports a quota large enough never to slow the
   limiter: 100 notifications/s means about 400 BigCommerce calls/s for one
   store, far above a standard plan's 150 per 30 s.
3. ``bcpay reconcile STORE --fix --json`` as a subprocess against N Awaiting
   Payment orders that never started a payment (older than
   payments.unstarted_after, so each costs one BigCommerce read for its pay
   link; a report without --fix reads only the order list), the fake enforcing a quota scaled down
   in time with 20 ms latency. Rate / quota from the fake's own log; peak RSS
   of the child from wait4(). Then two reconcile processes at once over the
   same orders, sharing the store's quota through the database
   (``bigcommerce.shared_quota = "on"``), and the same without it (for
   comparison): the quota must hold across processes too.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench_fakes import STORE_HASH
from bench_lib import (
    PYTHON,
    Child,
    Row,
    bench_env,
    free_port,
    log,
    peak_rss_of,
    percentile,
    run_loadgen,
    spawn,
    wait_log,
    write_pool,
)
from bench_world import BenchDatabase, notification, provision, start_bcpay, start_fakes, write_config


@dataclass
class FlowConfig:
    """Sizes and durations."""

    notify_rate: float = 100.0
    notify_seconds: float = 10.0
    bc_latency: float = 0.05
    reconcile_sizes: tuple[int, int] = (1_000, 10_000)
    quota: int = 150
    window_ms: int = 3_000
    rc_latency: float = 0.02


def notify_to_put(cfg: FlowConfig, workdir: Path) -> tuple[list[Row], list[str]]:
    """Benchmark 2 on SQLite, jobs run inside ``serve`` and then by a separate ``bcpay worker``."""
    rows: list[Row] = []
    notes: list[str] = []
    for separate in (False, True):
        row, more = _notify_to_put(cfg, workdir, separate_worker=separate)
        rows.append(row)
        notes += more
    return rows, notes


def _notify_to_put(cfg: FlowConfig, workdir: Path, *, separate_worker: bool) -> tuple[Row, list[str]]:
    name = "e2e-worker" if separate_worker else "e2e"
    count = math.floor(cfg.notify_rate * cfg.notify_seconds)
    fakes = start_fakes(workdir, f"fakes-{name}", orders=count, latency=cfg.bc_latency)
    db = BenchDatabase("sqlite", workdir, name.replace("-", "_"))
    notes: list[str] = []
    try:
        port = free_port()
        config = write_config(workdir / f"bcpay-{name}.toml", db_url=db.url, fakes=fakes, port=port,
                              run_worker=not separate_worker)
        seeded = provision(config, [oid for oid, _ in fakes.orders])
        server = start_bcpay(workdir, config, f"bcpay-{name}")
        worker: Child | None = None
        try:
            if separate_worker:
                worker = spawn(f"bcpay-{name}-worker", [PYTHON, "-m", "bcpay", "--config", str(config), "worker"],
                               workdir)
                wait_log(worker, "bcpay worker running")  # its start-up is not part of the latency
            fakes.reset()
            public = f"http://127.0.0.1:{port}"
            pool = workdir / f"{name}.pool"
            now = datetime.now(UTC)
            write_pool(pool, (notification(s, now=now, public_url=public) for s in seeded))
            record = workdir / f"{name}-sends.json"
            sent = run_loadgen(public, pool, seconds=cfg.notify_seconds, rate=cfg.notify_rate, connections=64,
                               record=record, workdir=workdir)
            log(f"{name} notifications {sent.brief()}")
            sends = {seeded[i].order_id: due for i, due, _done, status in json.loads(record.read_text())
                     if 200 <= status < 300}
            puts = _wait_for_puts(fakes, set(sends), timeout=30 + cfg.notify_seconds)
        finally:
            server.stop()
            if worker is not None:
                worker.stop()
    finally:
        fakes.child.stop()
        db.drop()
    latencies = [(puts[o] - t) * 1000 for o, t in sends.items() if o in puts]
    missing = len(sends) - len(latencies)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    if missing:
        p99 = math.inf if missing > len(sends) / 100 else p99
        notes.append(f"notify->PUT: {missing} of {len(sends)} orders had no status PUT within the wait")
    figure = (f"p50 {p50:.0f} ms, p99 {p99:.0f} ms over {len(sends)} notifications at "
              f"{sent.rps:.0f}/s, BigCommerce 50 ms per call")
    ok = p99 < 250 and sent.errors == 0 and not missing
    where = "serve + 1 `bcpay worker` process" if separate_worker else "jobs inside serve"
    return Row(f"2 notification -> order status PUT (SQLite, {where})", figure, "p99 < 250 ms", p99 / 250,
               ok), notes


def _wait_for_puts(fakes: object, orders: set[int], timeout: float) -> dict[int, float]:
    """Order id -> wall time its first status PUT finished, polling the fake's log."""
    from bench_world import Fakes

    assert isinstance(fakes, Fakes)
    deadline = time.monotonic() + timeout
    found: dict[int, float] = {}
    while time.monotonic() < deadline:
        found = {}
        for _start, end, method, path, status, _w in fakes.log():
            if method == "PUT" and "/v2/orders/" in path and 200 <= status < 300:
                oid = int(path.rsplit("/", 1)[1])
                if oid in orders and oid not in found:
                    found[oid] = end
        if len(found) >= len(orders):
            break
        time.sleep(0.5)
    return found


@dataclass
class ReconcileRun:
    """One reconcile subprocess."""

    orders: int
    exit: int
    rss_kib: int
    wall: float
    checked: int
    ok_requests: int
    throttled: int
    windows_429: int
    span: float
    cpu: float  # CPU seconds of the reconcile process

    @property
    def rate(self) -> float:
        """Successful BigCommerce requests per second over the run's span."""
        return self.ok_requests / self.span if self.span else math.nan


def reconcile_run(cfg: FlowConfig, orders: int, workdir: Path) -> ReconcileRun:
    """Run ``bcpay reconcile`` once over ``orders`` never-started orders."""
    fakes = start_fakes(workdir, f"fakes-rc-{orders}", orders=orders, age_hours=2.0, latency=cfg.rc_latency,
                        quota=(cfg.quota, cfg.window_ms, True))
    db = BenchDatabase("sqlite", workdir, f"rc{orders}")
    try:
        config = write_config(workdir / f"bcpay-rc-{orders}.toml", db_url=db.url, fakes=fakes, port=free_port(),
                              run_worker=False)
        provision(config, [])
        time.sleep(cfg.window_ms / 1000)  # let provisioning's quota window pass
        fakes.reset()
        out = workdir / f"reconcile-{orders}.json"
        per_window = cfg.quota / (cfg.window_ms / 1000)
        budget = 120 + 2 * orders / per_window
        argv = [PYTHON, "-m", "bcpay", "--config", str(config), "reconcile", STORE_HASH, "--since", "7d", "--fix",
                "--json"]
        status, rss, wall, cpu = peak_rss_of(argv, env=bench_env(), cwd=workdir, timeout=budget, stdout=out)
        entries = fakes.log()
    finally:
        fakes.child.stop()
        db.drop()
    checked = 0
    try:
        reports = json.loads(out.read_text())
        reports = reports if isinstance(reports, list) else reports.get("reports", [reports])
        checked = sum(int(r.get("checked", 0)) for r in reports)
    except (ValueError, AttributeError, TypeError):
        pass
    ok = [e for e in entries if e[4] != 429]
    throttled = [e for e in entries if e[4] == 429]
    span = (max(e[1] for e in entries) - min(e[0] for e in entries)) if entries else 0.0
    return ReconcileRun(orders, status, rss, wall, checked, len(ok), len(throttled),
                        len({e[5] for e in throttled}), span, cpu)


@dataclass
class SharedRun:
    """Several reconcile processes at once against one enforced quota."""

    processes: int
    shared: bool
    exits: list[int]
    ok_requests: int
    throttled: int
    windows_429: int
    span: float


def reconcile_processes_run(cfg: FlowConfig, orders: int, workdir: Path, processes: int, shared: bool) -> SharedRun:
    """``processes`` x ``bcpay reconcile --fix`` over the same orders at once, sharing the quota or not."""
    tag = f"rc-{processes}p-{'shared' if shared else 'alone'}"
    fakes = start_fakes(workdir, f"fakes-{tag}", orders=orders, age_hours=2.0, latency=cfg.rc_latency,
                        quota=(cfg.quota, cfg.window_ms, True))
    db = BenchDatabase("sqlite", workdir, tag.replace("-", "_"))
    try:
        config = write_config(workdir / f"bcpay-{tag}.toml", db_url=db.url, fakes=fakes, port=free_port(),
                              run_worker=False)
        provision(config, [])
        time.sleep(cfg.window_ms / 1000)
        fakes.reset()
        env = bench_env(BCPAY_BIGCOMMERCE_SHARED_QUOTA="on" if shared else "off")
        argv = [PYTHON, "-m", "bcpay", "--config", str(config), "reconcile", STORE_HASH, "--since", "7d", "--fix"]
        budget = 120 + 2 * processes * orders / (cfg.quota / (cfg.window_ms / 1000))
        children = [subprocess.Popen(argv, env=env, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    for _ in range(processes)]
        exits = []
        for child in children:
            try:
                exits.append(child.wait(budget))
            except subprocess.TimeoutExpired:
                child.kill()
                exits.append(child.wait())
        entries = fakes.log()
    finally:
        fakes.child.stop()
        db.drop()
    throttled = [e for e in entries if e[4] == 429]
    span = (max(e[1] for e in entries) - min(e[0] for e in entries)) if entries else 0.0
    return SharedRun(processes, shared, exits, len(entries) - len(throttled), len(throttled),
                     len({e[5] for e in throttled}), span)


def shared_quota_rows(cfg: FlowConfig, workdir: Path) -> tuple[list[Row], list[str]]:
    """Benchmark 3 across processes: two reconciles sharing the quota, and two that do not."""
    orders = cfg.reconcile_sizes[0]
    quota_rate = cfg.quota / (cfg.window_ms / 1000)
    shared = reconcile_processes_run(cfg, orders, workdir, 2, shared=True)
    log(f"reconcile {shared}")
    alone = reconcile_processes_run(cfg, orders, workdir, 2, shared=False)
    log(f"reconcile {alone}")
    rate = shared.ok_requests / shared.span if shared.span else 0.0
    ratio = rate / quota_rate
    done = all(code == 0 for code in shared.exits)
    rows = [
        Row("3 reconcile x2 processes, shared quota: request rate / quota",
            f"{rate:.1f} req/s of {quota_rate:.0f}/s ({shared.ok_requests} requests in {shared.span:.0f} s)",
            ">= 0.90", ratio, ratio >= 0.9 and done),
        Row("3 reconcile x2 processes, shared quota: windows with 429s",
            f"{shared.windows_429} window(s), {shared.throttled} x 429", "<= 1 window",
            shared.windows_429 / 1.0, shared.windows_429 <= 1 and done),
        Row("3 reconcile x2 processes, each alone (for comparison): windows with 429s",
            f"{alone.windows_429} window(s), {alone.throttled} x 429", "(info)", alone.windows_429 / 1.0, None),
    ]
    notes = [f"reconcile x2: {orders} orders each, exits {shared.exits} (shared) and {alone.exits} (alone)"]
    return rows, notes


def reconcile(cfg: FlowConfig, workdir: Path) -> tuple[list[Row], list[str]]:
    """Benchmark 3: rate / quota, 429 windows and peak RSS at two sizes."""
    small_n, big_n = cfg.reconcile_sizes
    small = reconcile_run(cfg, small_n, workdir)
    log(f"reconcile {small}")
    big = reconcile_run(cfg, big_n, workdir)
    log(f"reconcile {big}")
    quota_rate = cfg.quota / (cfg.window_ms / 1000)
    notes = [f"reconcile: quota {cfg.quota} requests per {cfg.window_ms / 1000:g} s "
             f"({quota_rate:.0f}/s), BigCommerce latency {cfg.rc_latency * 1000:.0f} ms"]
    rows: list[Row] = []
    for run in (small, big):
        notes.append(f"reconcile {run.orders}: {run.wall:.0f} s wall, {run.cpu:.1f} s CPU "
                     f"({1000 * run.cpu / max(run.orders, 1):.1f} ms per order), peak RSS {run.rss_kib / 1024:.1f} MiB")
        if run.exit != 0 or run.checked != run.orders:
            notes.append(f"reconcile {run.orders}: exit {run.exit}, checked {run.checked} of {run.orders}")
    ratio = big.rate / quota_rate
    rows.append(Row(f"3 reconcile {big.orders:,} orders: request rate / quota",
                    f"{big.rate:.1f} req/s of {quota_rate:.0f}/s ({big.ok_requests} requests in {big.span:.0f} s)",
                    ">= 0.90", ratio, ratio >= 0.9 and big.exit == 0 and big.checked == big.orders))
    rows.append(Row(f"3 reconcile {big.orders:,} orders: windows with 429s",
                    f"{big.windows_429} window(s), {big.throttled} x 429", "<= 1 window",
                    big.windows_429 / 1.0, big.windows_429 <= 1))
    mem = big.rss_kib / small.rss_kib if small.rss_kib else math.nan
    rows.append(Row(f"3 reconcile peak RSS {big.orders:,} vs {small.orders:,} orders",
                    f"{big.rss_kib / 1024:.1f} MiB vs {small.rss_kib / 1024:.1f} MiB", "<= 1.10", mem,
                    mem <= 1.10 and small.exit == 0 and big.exit == 0))
    shared_rows, shared_notes = shared_quota_rows(cfg, workdir)
    return rows + shared_rows, notes + shared_notes
