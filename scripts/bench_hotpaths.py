"""Benchmark 1: the server's hot paths against a bare Starlette endpoint, one uvicorn worker.

For each database: the fakes (zero latency) in one process, ``bcpay serve``
(the real command, ``server.run_worker = false`` so that only the request
path is measured; the outbox jobs just queue) in another, the load in a third.
Each endpoint gets a closed-loop peak (wrk) and then an open-loop run at half
that peak for its p99. The baseline gets the same two runs; its paced run also
shows that the Python load generator keeps up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench_lib import LoadResult, Row, free_port, log, peak, run_loadgen, write_pool
from bench_world import (
    BenchDatabase,
    Seeded,
    baseline_requests,
    notification,
    poll_requests,
    provision,
    query,
    start_baseline,
    start_bcpay,
    start_fakes,
    start_requests,
    write_config,
)

NOTIFY_ORDER_BASE = 50_000_000  # seeded attempts for orders the fake store does not have (worker off)


@dataclass
class HotConfig:
    """Sizes and durations."""

    peak_seconds: float = 10.0
    paced_seconds: float = 10.0
    connections: int = 16
    notify_pool: int = 40_000  # per run; must exceed peak req/s x seconds
    start_pool: int = 6_000
    poll_tokens: int = 2_000
    profile_seconds: float = 0.0  # > 0: one extra profiled run per endpoint
    results: dict[str, Any] = field(default_factory=dict)


@dataclass
class Endpoint:
    """One measured path: its peak and its half-peak run."""

    name: str
    peak: LoadResult
    half: LoadResult


def _pool(workdir: Path, name: str, requests: Any) -> Path:
    path = workdir / f"{name}.pool"
    write_pool(path, requests)
    return path


def run(kind: str, cfg: HotConfig, wrk: str | None, workdir: Path) -> tuple[list[Row], list[str]]:
    """Measure every hot path on ``kind`` (sqlite | postgresql); summary rows and notes."""
    starts = cfg.start_pool * (3 if cfg.profile_seconds else 2)
    fakes = start_fakes(workdir, f"fakes-hot-{kind}", orders=starts)
    db = BenchDatabase(kind, workdir, f"hot_{kind}")
    db.create()
    notes: list[str] = []
    try:
        port = free_port()
        config = write_config(workdir / f"bcpay-hot-{kind}.toml", db_url=db.url, fakes=fakes, port=port,
                              run_worker=False)
        n_seed = cfg.notify_pool * (3 if cfg.profile_seconds else 2)
        seeded = provision(config, list(range(NOTIFY_ORDER_BASE, NOTIFY_ORDER_BASE + n_seed)))
        public = f"http://127.0.0.1:{port}"

        bport = free_port()
        baseline = start_baseline(workdir, bport)
        try:
            pool = _pool(workdir, "baseline", baseline_requests(1))
            base_peak = peak(wrk, f"http://127.0.0.1:{bport}", pool, seconds=cfg.peak_seconds,
                             connections=cfg.connections, workdir=workdir)
            log(f"[{kind}] baseline peak {base_peak.brief()}")
            base_half = run_loadgen(f"http://127.0.0.1:{bport}", pool, seconds=cfg.paced_seconds,
                                    rate=base_peak.rps / 2, connections=64, workdir=workdir)
            log(f"[{kind}] baseline half {base_half.brief()}")
        finally:
            baseline.stop()

        server = start_bcpay(workdir, config, f"bcpay-hot-{kind}")
        endpoints: list[Endpoint] = []
        try:
            def measure(name: str, peak_pool: Path, half_pool: Path) -> Endpoint:
                pk = peak(wrk, public, peak_pool, seconds=cfg.peak_seconds, connections=cfg.connections,
                          workdir=workdir)
                log(f"[{kind}] {name} peak {pk.brief()}")
                half = run_loadgen(public, half_pool, seconds=cfg.paced_seconds, rate=pk.rps / 2,
                                   connections=64, workdir=workdir)
                log(f"[{kind}] {name} half {half.brief()}")
                endpoint = Endpoint(name, pk, half)
                endpoints.append(endpoint)
                return endpoint

            orders = fakes.orders
            n = cfg.start_pool
            start = measure("start-payment",
                            _pool(workdir, f"start-a-{kind}", start_requests(orders[:n])),
                            _pool(workdir, f"start-b-{kind}", start_requests(orders[n:2 * n])))
            if start.peak.wrapped or start.half.wrapped:
                notes.append(f"{kind}: start-payment pool ran out; repeats took the cheaper 'resume' path")

            opened = ("SELECT token FROM payments WHERE status = 'pending' "  # noqa: S608 - a constant
                      f"AND order_id < {NOTIFY_ORDER_BASE} ORDER BY id")
            tokens = [r[0] for r in query(config, opened)][:cfg.poll_tokens]
            if not tokens:
                raise RuntimeError(f"start-payment opened no payment:\n{server.tail()}")
            polls = max(20_000, int(cfg.peak_seconds * 5000))
            # The same workload at half the rate: each payment polled as often as at peak, so half the
            # payments. Cycling all of them at half the rate brought each back after twice as long,
            # past the 3 s between CeleryPay lookups, so nearly every poll asked CeleryPay: as many
            # lookups per second as at peak, and the "half peak" run was a peak run of the slow path.
            half_tokens = tokens[:max(1, len(tokens) // 2)]
            measure("status-poll", _pool(workdir, f"poll-{kind}", poll_requests(tokens, polls)),
                    _pool(workdir, f"poll-half-{kind}", poll_requests(half_tokens, polls)))
            notes.append(f"{kind}: status polls cycle over {len(tokens)} open payments at peak, {len(half_tokens)} at "
                         "half the rate (each polled as often); each asks the fake CeleryPay at most every "
                         "payments.status_poll_interval (3 s)")

            m = cfg.notify_pool
            # Signed just before use: the signature's timestamp must be within 300 s.
            peak_pool = _pool(workdir, f"notify-a-{kind}", _events(seeded[:m], public))
            pk = peak(wrk, public, peak_pool, seconds=cfg.peak_seconds, connections=cfg.connections,
                      workdir=workdir)
            log(f"[{kind}] notify peak {pk.brief()}")
            half_pool = _pool(workdir, f"notify-b-{kind}", _events(seeded[m:2 * m], public))
            half = run_loadgen(public, half_pool, seconds=cfg.paced_seconds, rate=pk.rps / 2, connections=64,
                               workdir=workdir)
            log(f"[{kind}] notify half {half.brief()}")
            endpoints.append(Endpoint("notify", pk, half))
            if pk.wrapped or half.wrapped:
                notes.append(f"{kind}: notification pool ran out; repeats were duplicates (cheaper)")
            outcomes = dict(query(config, "SELECT outcome, count(*) FROM events GROUP BY outcome"))
            notes.append(f"{kind}: notification outcomes {outcomes}")
        finally:
            server.stop()
        if cfg.profile_seconds:
            _profile(kind, cfg, wrk, workdir, config, public, seeded[2 * cfg.notify_pool:],
                     fakes.orders[2 * cfg.start_pool:], tokens)
    finally:
        fakes.child.stop()
        db.drop()
    return _rows(kind, base_peak, base_half, endpoints), notes


def _events(seeds: list[Seeded], public: str) -> Any:
    now = datetime.now(UTC)
    return (notification(s, now=now, public_url=public) for s in seeds)


def _rows(kind: str, base: LoadResult, base_half: LoadResult, endpoints: list[Endpoint]) -> list[Row]:
    label = "SQLite" if kind == "sqlite" else "PostgreSQL"
    rows = [
        Row(f"1 {label}: baseline (bare Starlette JSON)",
            f"{base.rps:.0f} req/s, p50 {base.p50:.1f} ms, p99 {base.p99:.1f} ms", "(baseline)", 1.0, None,
            _values(base)),
        Row(f"1 {label}: load generator keeps up (baseline at 50 %)",
            f"{base_half.rps:.0f} of {base_half.target_rps:.0f} req/s, p99 {base_half.p99:.1f} ms",
            ">= 0.98 x asked rate", base_half.rps / (base_half.target_rps or 1),
            base_half.rps >= 0.98 * (base_half.target_rps or 0) and base_half.errors == 0, _values(base_half)),
    ]
    floors = {"notify": 0.5, "status-poll": 0.5, "start-payment": 0.3}
    for ep in sorted(endpoints, key=lambda e: list(floors).index(e.name)):
        ratio = ep.peak.rps / base.rps if base.rps else float("nan")
        rows.append(Row(f"1 {label}: {ep.name} req/s",
                        f"{ep.peak.rps:.0f} req/s, p50 {ep.peak.p50:.1f} ms, p99 {ep.peak.p99:.1f} ms"
                        + (f", {ep.peak.errors} errors" if ep.peak.errors else ""),
                        f">= {floors[ep.name]:.2f} x baseline", ratio,
                        ratio >= floors[ep.name] and ep.peak.errors == 0, _values(ep.peak)))
        kept_up = ep.half.rps >= 0.95 * (ep.half.target_rps or 0)
        rows.append(Row(f"1 {label}: {ep.name} p99 at 50 % of peak",
                        f"p99 {ep.half.p99:.1f} ms, p50 {ep.half.p50:.1f} ms at {ep.half.rps:.0f} req/s"
                        + (f", {ep.half.errors} errors" if ep.half.errors else ""),
                        "< 50 ms", ep.half.p99 / 50.0, ep.half.p99 < 50.0 and ep.half.errors == 0 and kept_up,
                        _values(ep.half)))
    return rows


def _values(result: LoadResult) -> dict[str, float]:
    return {"rps": result.rps, "p50_ms": result.p50, "p99_ms": result.p99, "requests": float(result.requests),
            "errors": float(result.errors), "target_rps": float(result.target_rps or 0.0)}


def _profile(kind: str, cfg: HotConfig, wrk: str | None, workdir: Path, config: Path, public: str,
             seeds: list[Seeded], orders: list[tuple[int, str]], tokens: list[str]) -> None:
    """One profiled server per endpoint (pyinstrument, main thread); reports in the work dir."""
    for name in ("start-payment", "status-poll", "notify"):
        out = workdir / f"profile-{kind}-{name}.txt"
        server = start_bcpay(workdir, config, f"bcpay-profile-{kind}-{name}", profile_out=out)
        try:
            if name == "start-payment":
                pool = _pool(workdir, f"prof-{name}", start_requests(orders))
            elif name == "status-poll":
                pool = _pool(workdir, f"prof-{name}", poll_requests(tokens, 20_000))
            else:
                pool = _pool(workdir, f"prof-{name}", _events(seeds, public))
            result = peak(wrk, public, pool, seconds=cfg.profile_seconds, connections=cfg.connections,
                          workdir=workdir)
            log(f"[{kind}] profiled {name}: {result.brief()}")
        finally:
            server.stop(timeout=60)
        log(f"[{kind}] profile of {name}: {out}")
