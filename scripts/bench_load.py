"""A small HTTP/1.1 load generator for scripts/bench.py, run in its own process.

    bench_load.py URL POOL --seconds S [--rate R] [--connections C] --out result.json [--record sends.json]

With ``--rate`` it is open loop: request *i* is due at ``start + i / R`` and
its latency is measured from that due time, so a slow server cannot hide its
queueing by slowing the sender (no coordinated omission). Without it, C
connections send back to back (closed loop, the fallback when wrk is
missing). Requests come from a pool file (see bench_lib); each is sent once
unless the pool runs out. Raw asyncio protocols, no HTTP library: the
generator costs a few tens of microseconds per request, which bench.py shows
by its throughput against the bare baseline endpoint. Bounded in time and count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_lib import percentile, read_pool


class Conn(asyncio.Protocol):
    """One keep-alive connection that answers one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.need = -1  # bytes of the full answer once its head is parsed
        self.status = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.need < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1").lower()
            self.status = int(head[9:12])
            length = 0
            for line in head.split("\r\n")[1:]:
                if line.startswith("content-length:"):
                    length = int(line[15:].strip())
            self.need = end + 4 + length
        if len(self.buffer) >= self.need and self.waiter is not None and not self.waiter.done():
            del self.buffer[: self.need]
            self.need = -1
            self.waiter.set_result(self.status)

    async def send(self, raw: bytes) -> int:
        """Send one request and wait for its status."""
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter


async def run(args: argparse.Namespace) -> dict[str, object]:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    pool = read_pool(Path(args.pool))
    loop = asyncio.get_running_loop()
    idle: list[Conn] = []
    opened = 0
    latencies: list[float] = []
    sends: list[tuple[int, float, float, int]] = []  # (pool index, wall time due, wall time done, status)
    errors = 0
    wrapped = 0
    late_starts = 0
    available = asyncio.Condition()

    async def connection() -> Conn:
        nonlocal opened
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        if opened < args.connections:
            opened += 1
            _, conn = await loop.create_connection(Conn, host, port)
            return conn
        async with available:
            await available.wait_for(lambda: bool(idle))
        return await connection()

    async def one(index: int, due: float) -> None:
        nonlocal errors
        conn = await connection()
        status = 0
        try:
            status = await asyncio.wait_for(conn.send(pool[index % len(pool)]), timeout=10)
        except (OSError, ConnectionError, TimeoutError):
            conn.closed = True
        done = time.perf_counter()
        if not conn.closed:
            idle.append(conn)
            async with available:
                available.notify()
        if not 200 <= status < 400:
            errors += 1
        latencies.append((done - due) * 1000)
        if args.record:
            sends.append((index, wall0 + (due - t0), wall0 + (done - t0), status))

    t0 = time.perf_counter()
    wall0 = time.time()
    end = t0 + args.seconds
    tasks: set[asyncio.Task[None]] = set()
    index = 0
    if args.rate:
        interval = 1.0 / args.rate
        total = math.floor(args.seconds * args.rate)
        while index < total:
            due = t0 + index * interval
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
            elif now - due > 0.005:
                late_starts += 1  # the generator itself fell behind (reported)
            if index >= len(pool) and index % len(pool) == 0:
                wrapped += 1
            task = asyncio.create_task(one(index, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            index += 1
    else:
        async def worker() -> None:
            nonlocal index, wrapped
            while time.perf_counter() < end:
                mine = index
                index += 1
                if mine >= len(pool) and mine % len(pool) == 0:
                    wrapped += 1
                await one(mine, time.perf_counter())

        await asyncio.gather(*(worker() for _ in range(args.connections)))
    if tasks:
        await asyncio.wait(tasks, timeout=15)
    elapsed = time.perf_counter() - t0
    if args.record:
        Path(args.record).write_text(json.dumps(sends))
    return {
        "completed": len(latencies), "errors": errors, "seconds": elapsed,
        "rps": len(latencies) / elapsed if elapsed else 0.0,
        "p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
        "max": max(latencies, default=math.nan), "wrapped": wrapped, "late_starts": late_starts,
        "connections_opened": opened,
    }


def main() -> None:
    """Parse arguments, run, write the result JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("pool")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--rate", type=float)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--out", required=True)
    parser.add_argument("--record")
    args = parser.parse_args()
    if not 0 < args.seconds <= 600:
        parser.error("--seconds must be in (0, 600]")
    result = asyncio.run(run(args))
    Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
