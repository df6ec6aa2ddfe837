"""Machinery of ``scripts/reliability.py``: one scenario run and its checks.

One run of a :class:`Scenario` (the processes and fakes are in ``reliability_world.py``):

1. the fake BigCommerce and CeleryPay are served on loopback in this process's event
   loop, so their state (``put_log``, ``events``) stays inspectable;
2. a fresh database (a new PostgreSQL database, or a SQLite file) is migrated with
   ``bcpay db upgrade`` and the store is registered through the library;
3. one or two ``bcpay serve`` processes run as real subprocesses;
4. orders are created in the fake and started through ``POST /api/v1/payments``,
   alternating between servers; shoppers pay, decline or abandon at the fake;
5. this script plays CeleryPay's delivery: every event is posted 1-5 times,
   shuffled across the whole run, alternating servers, signed as CeleryPay signs,
   and re-posted on anything but 2xx on CeleryPay's schedule compressed to seconds;
   optionally the servers are killed and restarted, statuses polled and
   ``bcpay reconcile --fix`` run while the burst goes on;
6. once the outbox is empty the fake's ``put_log`` is compared with CeleryPay's truth.

Nothing here sleeps for minutes and every loop is bounded; everything is on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from reliability_world import (
    HOST,
    MERCHANT_ID,
    PG_ADMIN_DSN,
    SCOPES,
    STORE_HASH,
    STORE_URL,
    BcpayServer,
    Fakes,
    Secrets,
    bcpay_env,
    free_port,
    fresh_database,
    run_cli,
)
from sqlalchemy import func, select

from bcpay import stores
from bcpay.config import load_settings
from bcpay.runtime import open_runtime
from bcpay.sandbox.bc_state import Chaos, Quota
from bcpay.sandbox.celerypay_records import PaymentRecord
from bcpay.signatures import sign_notification
from bcpay.storage.db import Database
from bcpay.storage.schema import anomalies, jobs, payments

__all__ = ["PG_ADMIN_DSN", "Result", "Run", "Scenario"]

PAID_STATUS = 11
# CeleryPay retries after 15 s, 1 min, 5 min ... 24 h (nine retries): the same shape in seconds.
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 10.0, 15.0)
START_TRIES = 40

Say = Callable[[str], None]


# --- what a run is and what it found ---------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One row of the table: the world, its faults and how hard it is pushed."""

    name: str
    orders: int = 1000
    database: str = "pg"  # pg | sqlite
    servers: int = 2
    workers: int = 2
    kills: tuple[int, int] = (0, 0)  # kill -9 per server: at least, at most
    racing_share: float = 0.0  # paid orders whose notification races bcpay's creation answer
    poll: bool = False  # status polls racing the notification burst
    reconcile_at: tuple[float, ...] = ()  # delivery progress at which `bcpay reconcile --fix` starts
    error_rate: float = 0.10  # BigCommerce 503s
    burst_429_every: int = 50  # every Nth BigCommerce call answers 429 for platform load (no quota headers)
    # Requests per 30 s window the fake reports. bcpay paces itself to the reported quota; at
    # Standard's 150 a run of 1,000 orders (~6,000 calls) would take 20 minutes of pacing alone,
    # so the store has an Enterprise-sized quota (the reference: "Enterprise by plan").
    bc_quota: int = 15000
    max_copies: int = 5  # each event is posted 1..max_copies times
    pay_share: float = 0.8
    decline_share: float = 0.1  # the rest abandon the cashier
    seed: int = 1
    drain_timeout: float = 120.0
    lease_seconds: int = 30  # shorter than the default 60 s: jobs orphaned by kill -9 come back sooner
    log_level: str = "warning"
    start_concurrency: int = 16
    deliver_concurrency: int = 24


@dataclass
class Result:
    """The figures of one run (one table row) plus notes explaining anything odd."""

    scenario: str
    orders: int = 0
    events: int = 0
    duplicates: int = 0
    faults_503: int = 0
    faults_429: int = 0
    kills: int = 0
    paid: int = 0
    status_puts: int = 0
    anomalies: int = 0
    lost: int = 0
    double_applied: int = 0
    unpaid_marked_paid: int = 0
    five_xx: int = 0
    dead_jobs: int = 0
    queued_left: int = 0
    undelivered: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def faults(self) -> int:
        """Every injected fault: BigCommerce 503s and 429s, and kill -9s."""
        return self.faults_503 + self.faults_429 + self.kills

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing applied twice, no bcpay 5xx, nothing left undone."""
        return not (self.lost or self.double_applied or self.unpaid_marked_paid or self.five_xx
                    or self.dead_jobs or self.queued_left or self.undelivered or self.anomalies)


# --- one run -----------------------------------------------------------------------------------


@dataclass
class Order:
    """One order of the run and what its shopper does."""

    id: int
    cart_id: str
    fate: str  # pay | decline | abandon
    racing: bool = False
    token: str | None = None


@dataclass
class _Copy:
    """One planned delivery of one event; ``retries`` counts re-posts after failures."""

    event_no: int
    retries: int = 0


class Run:
    """Everything one scenario run needs; :meth:`execute` returns its :class:`Result`."""

    def __init__(self, scenario: Scenario, *, say: Say = print, workdir: Path | None = None) -> None:
        self.sc = scenario
        self.say = say
        self.rng = random.Random(scenario.seed)
        self.creds = Secrets.fresh()
        self.fakes = Fakes(self.creds, scenario.seed)
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"bcpay-reliability-{scenario.name}-"))
        self.servers: list[BcpayServer] = []
        self.db_url = ""
        self.env: dict[str, str] = {}
        self.orders: list[Order] = []
        self.by_id: dict[int, Order] = {}
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(15.0), limits=httpx.Limits(max_connections=128))
        self.result = Result(scenario.name, orders=scenario.orders)
        self.answers: Counter[tuple[str, int]] = Counter()
        self.transport_errors: Counter[str] = Counter()
        self.bodies: list[bytes] = []
        self.event_index: dict[str, int] = {}
        self.posts: Counter[int] = Counter()  # notification POSTs per event
        self.acked: set[int] = set()
        self.ops_done = 0
        self.ops_total = scenario.orders * 4  # refined once the deliveries are planned
        self.delivery_done = 0
        self.delivery_total = 1
        self.deliveries_finished = asyncio.Event()
        self._turn = 0
        self.races_won = 0
        self._background: list[asyncio.Task[Any]] = []

    # --- helpers ---

    def _tag(self, text: str) -> None:
        self.say(f"[{self.sc.name}] {text}")

    def _next_server(self) -> BcpayServer:
        self._turn += 1
        return self.servers[self._turn % len(self.servers)]

    def progress(self) -> float:
        """Share of the run's operations (starts and deliveries) done."""
        return self.ops_done / max(1, self.ops_total)

    def _record(self, kind: str, server: BcpayServer, response: httpx.Response) -> None:
        self.answers[(kind, response.status_code)] += 1
        if response.status_code >= 500:
            self.result.five_xx += 1
            if self.result.five_xx <= 10:
                self.result.notes.append(f"{kind} on {server.name}: {response.status_code} {response.text[:200]}")

    # --- set-up ---

    async def _setup(self) -> None:
        await self.fakes.start()
        ports = [free_port() for _ in range(self.sc.servers)]
        public = f"http://{HOST}:{ports[0]}"
        self.env = bcpay_env(db_url=self.db_url, creds=self.creds, fakes=self.fakes, public_url=public,
                             log_level=self.sc.log_level, lease_seconds=self.sc.lease_seconds,
                             poll_every_time=self.sc.poll)
        code = await run_cli("db", "upgrade", env=self.env, cwd=self.workdir, log_path=self.workdir / "cli.log")
        if code != 0:
            raise RuntimeError(f"bcpay db upgrade failed ({code}): see {self.workdir / 'cli.log'}")
        async with open_runtime(load_settings(environ=self.env)) as rt:  # as `bcpay stores add/configure` do
            await stores.register(rt, STORE_HASH, access_token=self.creds.access_token, source="api_account",
                                  scopes=SCOPES)
            await stores.configure_merchant(rt, STORE_HASH, merchant_id=MERCHANT_ID,
                                            api_secret=self.creds.merchant_secret, environment="sandbox")
        # One public URL for every process, as behind a real balancer: it is part of each payment's
        # creation request, and a creation retried on the other server must send the same body.
        for n, port in enumerate(ports):
            name = "server " + "AB"[n] if self.sc.servers > 1 else "server"
            self.servers.append(BcpayServer(name, port, self.sc.workers, self.env, self.workdir / f"serve-{n}.log",
                                            self.workdir))
        await asyncio.gather(*(s.start() for s in self.servers))
        self.fakes.bc.quota = Quota(requests=self.sc.bc_quota, window_ms=30000)
        self.fakes.bc.chaos = Chaos(error_rate=self.sc.error_rate, burst_429_every=self.sc.burst_429_every,
                                    seed=self.sc.seed)
        self._tag(f"{len(self.servers)} bcpay serve process(es) x {self.sc.workers} worker(s) on "
                  f"{self.sc.database}; BigCommerce 503 on {self.sc.error_rate:.0%}, 429 every "
                  f"{self.sc.burst_429_every} calls")

    def _create_orders(self) -> None:
        for _ in range(self.sc.orders):
            cents = self.rng.randint(100, 50_000)
            roll = self.rng.random()
            fate = "pay" if roll < self.sc.pay_share else (
                "decline" if roll < self.sc.pay_share + self.sc.decline_share else "abandon")
            created = self.fakes.bc.create_order(STORE_HASH, total=Decimal(cents) / 100,
                                                 cart_id=f"{self.rng.getrandbits(128):032x}")
            racing = fate == "pay" and self.rng.random() < self.sc.racing_share
            self.orders.append(Order(created["id"], created["cart_id"], fate, racing))
        self.by_id = {o.id: o for o in self.orders}
        self._tag(f"{len(self.orders)} orders created: " + ", ".join(
            f"{n} {k}" for k, n in sorted(Counter(o.fate for o in self.orders).items())))

    # --- starts ---

    async def _start(self, order: Order) -> None:
        body = {"store_hash": STORE_HASH, "order_id": order.id, "cart_id": order.cart_id}
        for attempt in range(START_TRIES):
            server = self._next_server()
            try:
                answer = await self.http.post(server.url + "/api/v1/payments", json=body,
                                              headers={"Origin": STORE_URL})
            except httpx.TransportError:
                self.transport_errors["start"] += 1
                await asyncio.sleep(min(2.0, 0.2 * (attempt + 1)))
                continue
            self._record("start", server, answer)
            if answer.status_code == 200:
                order.token = answer.json()["token"]
                return
            if answer.status_code == 409 and answer.json()["error"]["code"] == "already_paid":
                order.token = answer.json()["payment"]["token"]  # the racing notification won
                self.races_won += 1
                return
            if answer.status_code != 429 and answer.status_code < 500:
                self.result.notes.append(f"start of order {order.id} refused: {answer.status_code} {answer.text[:160]}")
                return
            await asyncio.sleep(min(2.0, 0.2 * (attempt + 1)))
        self.result.notes.append(f"start of order {order.id} gave up after {START_TRIES} tries")

    async def _starts(self) -> None:
        gate = asyncio.Semaphore(self.sc.start_concurrency)

        async def one(order: Order) -> None:
            async with gate:
                await self._start(order)
                self.ops_done += 1
                if self.ops_done % max(1, self.sc.orders // 4) == 0:
                    self._tag(f"started {self.ops_done}/{self.sc.orders}")

        started = time.monotonic()
        await asyncio.gather(*(one(o) for o in self.orders))
        self._tag(f"starts done in {time.monotonic() - started:.1f} s "
                  f"({sum(o.token is not None for o in self.orders)} with a token)")

    # --- notifications ---

    def _body_of(self, event: dict[str, Any]) -> int:
        if event["id"] not in self.event_index:
            self.event_index[event["id"]] = len(self.bodies)
            # Serialised once, as CeleryPay does: every copy and retry sends the same bytes.
            self.bodies.append(json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode())
        return self.event_index[event["id"]]

    async def _post_event(self, event_no: int) -> bool:
        body = self.bodies[event_no]
        timestamp = int(time.time())
        headers = {
            "CeleryPay-Merchant": MERCHANT_ID,
            "CeleryPay-Timestamp": str(timestamp),
            "CeleryPay-Signature": sign_notification(self.creds.merchant_secret, timestamp, body),
            "Content-Type": "application/json",
        }
        server = self._next_server()
        self.posts[event_no] += 1
        try:
            answer = await self.http.post(f"{server.url}/notify/celerypay/{STORE_HASH}", content=body,
                                          headers=headers, timeout=10.0)  # the contract's 10 s to answer
        except httpx.TransportError:
            self.transport_errors["notify"] += 1
            return False
        self._record("notify", server, answer)
        if 200 <= answer.status_code < 300:
            self.acked.add(event_no)
            return True
        return False

    def _race(self, payment: PaymentRecord) -> None:
        """The shopper pays at once and the notification leaves before bcpay has the 201."""
        order = self.by_id.get(int(payment.metadata.get("order_id", "0")))
        if order is None or not order.racing:
            return

        async def go() -> None:
            paid = await self.fakes.cp.pay(payment.id)
            event = next(e for e in reversed(self.fakes.cp.events) if e["data"]["id"] == paid["id"])
            await self._post_event(self._body_of(event))

        self._background.append(asyncio.create_task(go()))

    async def _deliver(self, copies: list[_Copy]) -> None:
        queue: asyncio.Queue[_Copy | None] = asyncio.Queue()
        for copy in copies:
            queue.put_nowait(copy)
        loop = asyncio.get_running_loop()
        self.delivery_total = len(copies)

        async def worker() -> None:
            while (item := await queue.get()) is not None:
                ok = await self._post_event(item.event_no)
                if ok or item.retries >= len(RETRY_DELAYS):
                    self.delivery_done += 1
                    self.ops_done += 1
                    if self.delivery_done % max(1, len(copies) // 4) == 0:
                        self._tag(f"delivered {self.delivery_done}/{len(copies)}")
                    if self.delivery_done == len(copies):
                        self.deliveries_finished.set()
                else:  # CeleryPay retries a failed delivery later, on its schedule
                    loop.call_later(RETRY_DELAYS[item.retries], queue.put_nowait, item)
                    item.retries += 1

        workers = [asyncio.create_task(worker()) for _ in range(self.sc.deliver_concurrency)]
        if copies:
            await self.deliveries_finished.wait()
        self.deliveries_finished.set()
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.gather(*workers)

    def _plan_copies(self) -> list[_Copy]:
        for event in self.fakes.cp.events:
            self._body_of(event)
        copies = [_Copy(n) for n in range(len(self.bodies)) for _ in range(self.rng.randint(1, self.sc.max_copies))]
        self.rng.shuffle(copies)
        self.ops_total = self.sc.orders + len(copies)
        return copies

    # --- what races the burst ---

    def _kill_plan(self) -> list[list[tuple[float, float]]]:
        low, high = self.sc.kills
        plan = []
        for _ in range(self.sc.servers):
            count = self.rng.randint(low, high) if high else 0
            # (progress at which to kill, seconds down before the restart)
            moments = [self.rng.uniform(0.05, 0.9) for _ in range(count - 1)]
            if count:
                moments.append(self.rng.uniform(0.45, 0.9))  # at least one while notifications pour in
            plan.append(sorted((at, self.rng.uniform(0.2, 1.0)) for at in moments))
        return plan

    async def _monkey(self, server: BcpayServer, plan: list[tuple[float, float]]) -> None:
        for at, down in plan:
            while self.progress() < at:
                if self.deliveries_finished.is_set():
                    return
                await asyncio.sleep(0.05)
            await server.kill9()
            self.result.kills += 1
            self._tag(f"kill -9 {server.name} (process group {server.proc.pid if server.proc else '?'}) "
                      f"at {self.progress():.0%}; restart in {down:.1f} s")
            await asyncio.sleep(down)
            await server.start()

    async def _poller(self, tokens: list[str], lane: int) -> None:
        rng = random.Random(self.sc.seed * 100 + lane)
        while not self.deliveries_finished.is_set():
            server = self._next_server()
            try:
                answer = await self.http.get(f"{server.url}/api/v1/payments/{rng.choice(tokens)}",
                                             headers={"Origin": STORE_URL})
            except httpx.TransportError:
                self.transport_errors["poll"] += 1
                await asyncio.sleep(0.2)
                continue
            self._record("poll", server, answer)
            await asyncio.sleep(0.01)

    async def _reconciler(self) -> None:
        for at in self.sc.reconcile_at:
            while self.delivery_done < at * self.delivery_total and not self.deliveries_finished.is_set():
                await asyncio.sleep(0.05)
            self._tag(f"bcpay reconcile --all --fix --since 1d at "
                      f"{self.delivery_done}/{self.delivery_total} deliveries")
            log = self.workdir / "reconcile.log"
            code = await run_cli("reconcile", "--all", "--fix", "--since", "1d", env=self.env, cwd=self.workdir,
                                 log_path=log)
            summary = [line for line in log.read_text(errors="replace").splitlines() if "checked" in line]
            self._tag(f"reconcile exited {code}: {summary[-1] if summary else '(no summary)'}")
            if code != 0:
                self.result.notes.append(f"reconcile exited {code}: see {log}")

    # --- the end ---

    async def _job_states(self) -> dict[str, int]:
        db = Database(self.db_url)
        try:
            async with db.read() as conn:
                rows = await conn.execute(select(jobs.c.state, func.count()).group_by(jobs.c.state))
                return {str(row[0]): int(row[1]) for row in rows}
        finally:
            await db.dispose()

    async def _drain(self) -> dict[str, int]:
        started = time.monotonic()
        while True:
            states = await self._job_states()
            if not states.get("queued") or time.monotonic() - started > self.sc.drain_timeout:
                self._tag(f"outbox after {time.monotonic() - started:.1f} s: {states}")
                return states
            await asyncio.sleep(0.5)

    async def _check(self, states: dict[str, int]) -> None:
        r, bc, cp = self.result, self.fakes.bc, self.fakes.cp
        by_order: dict[int, list[dict[str, Any]]] = {}
        for payment in cp.payments.values():
            by_order.setdefault(int(payment["metadata"]["order_id"]), []).append(payment)
        status_puts: dict[int, list[int]] = {}
        for _, order_id, body in bc.put_log:
            if "status_id" in body:
                status_puts.setdefault(order_id, []).append(int(body["status_id"]))
        paid = {o for o, ps in by_order.items() if any(p["status"] == "succeeded" for p in ps)}
        r.paid = len(paid)
        r.status_puts = sum(len(v) for v in status_puts.values())
        for order in self.orders:
            to_paid = status_puts.get(order.id, []).count(PAID_STATUS)
            if order.id in paid:
                if to_paid == 0 or bc.order(STORE_HASH, order.id)["status_id"] != PAID_STATUS:
                    r.lost += 1
                    r.notes.append(f"lost: order {order.id} paid at CeleryPay, status PUTs {status_puts.get(order.id)}")
                if to_paid > 1:
                    r.double_applied += 1
                    r.notes.append(f"double-applied: order {order.id} status PUTs {status_puts[order.id]}")
            elif to_paid:
                r.unpaid_marked_paid += 1
                r.notes.append(f"unpaid order {order.id} was set paid ({order.fate})")
            if len(by_order.get(order.id, [])) > 1:
                r.notes.append(f"order {order.id} has {len(by_order[order.id])} CeleryPay payments")
        r.dead_jobs, r.queued_left = states.get("dead", 0), states.get("queued", 0)
        r.events = len(self.bodies)
        r.duplicates = sum(self.posts.values()) - len(self.posts)
        r.undelivered = len(self.bodies) - len(self.acked)
        r.faults_503 = sum(1 for call in bc.requests if call.status == 503)
        r.faults_429 = bc.rate_limited
        db = Database(self.db_url)
        try:
            async with db.read() as conn:
                r.anomalies = int((await conn.execute(select(func.count()).select_from(anomalies))).scalar_one())
                applied = {int(row.order_id) for row in await conn.execute(
                    select(payments.c.order_id).where(payments.c.outcome == "applied"))}
        finally:
            await db.dispose()
        if applied != paid:
            r.notes.append(f"bcpay's applied payments differ from CeleryPay's paid orders: "
                           f"{sorted(applied ^ paid)[:10]}")
        polls = sum(n for (kind, _), n in self.answers.items() if kind == "poll")
        if self.sc.racing_share or polls:
            r.notes.append(f"{sum(o.racing for o in self.orders)} payments paid and notified the moment CeleryPay "
                           f"created them ({self.races_won} starts answered already_paid: the notification won); "
                           f"{polls} status polls")
        if self.transport_errors:
            r.notes.append("connection errors (servers down, retried): " + ", ".join(
                f"{k} {n}" for k, n in sorted(self.transport_errors.items())))

    def server_log_findings(self) -> list[str]:
        """Tracebacks and errors the bcpay processes logged."""
        found = []
        for server in self.servers:
            text = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
            tracebacks = text.count("Traceback (most recent call last)")
            errors = len(re.findall(r"^ERROR", text, flags=re.MULTILINE))
            if tracebacks or errors:
                found.append(f"{server.name} logged {tracebacks} traceback(s), {errors} ERROR line(s): "
                             f"{server.log_path}")
        return found

    @contextlib.contextmanager
    def _fake_logs(self) -> Iterator[None]:
        # The fakes' uvicorn errors (a killed bcpay hanging up mid-request) go to a file, not the screen.
        logger = logging.getLogger("uvicorn.error")
        handler = logging.FileHandler(self.workdir / "fakes.log")
        logger.addHandler(handler)
        propagate, logger.propagate = logger.propagate, False
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.propagate = propagate
            handler.close()

    async def execute(self) -> Result:
        """Run the scenario end to end; the servers and database are gone afterwards."""
        with self._fake_logs():
            return await self._execute()

    async def _execute(self) -> Result:
        began = time.monotonic()
        try:
            async with fresh_database(self.sc.database, self.workdir) as url:
                self.db_url = url
                try:
                    await self._setup()
                    await self._play()
                    states = await self._drain()
                finally:
                    await asyncio.gather(*(s.stop() for s in self.servers), return_exceptions=True)
                await self._check(states)
        finally:
            await self.fakes.stop()
            await self.http.aclose()
        self.result.notes.extend(self.server_log_findings())
        self.result.seconds = time.monotonic() - began
        return self.result

    async def _play(self) -> None:
        self._create_orders()
        plans = zip(self.servers, self._kill_plan(), strict=True)
        monkeys = [asyncio.create_task(self._monkey(server, plan)) for server, plan in plans]
        self.fakes.cp.on_create = self._race
        await self._starts()
        await asyncio.gather(*self._background)
        for payment in self.fakes.cp.payments.values():
            order = self.by_id[int(payment["metadata"]["order_id"])]
            if payment["status"] != "pending":
                continue
            if order.fate == "pay":
                await self.fakes.cp.pay(payment["id"])
            elif order.fate == "decline":
                await self.fakes.cp.decline(payment["id"])
        copies = self._plan_copies()
        self._tag(f"{len(self.bodies)} events, {len(copies)} deliveries planned "
                  f"(1-{self.sc.max_copies} each, shuffled)")
        tokens = [o.token for o in self.orders if o.token]
        racers: list[asyncio.Task[None]] = []
        if self.sc.poll and tokens:
            racers += [asyncio.create_task(self._poller(tokens, lane)) for lane in range(6)]
        if self.sc.reconcile_at:
            racers.append(asyncio.create_task(self._reconciler()))
        started = time.monotonic()
        await self._deliver(copies)
        self._tag(f"deliveries done in {time.monotonic() - started:.1f} s")
        await asyncio.gather(*racers, *monkeys)
