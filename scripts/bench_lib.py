"""Plumbing shared by the benchmark scripts: processes, ports, load, statistics, tables.

Nothing here knows a benchmark. The load comes from ``wrk`` (closed loop, the
peak) or from ``scripts/bench_load.py`` (open loop at a fixed rate, or closed
loop when wrk is missing), always in a process of its own. Both read one
*request pool* file: records ``<length>\\n<raw HTTP/1.1 request bytes>``, so
each request can differ (a new signed event, a new order) without any work in
the load generator's hot loop.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
HOST = "127.0.0.1"


# --- processes and ports -------------------------------------------------------------


def free_port() -> int:
    """A TCP port nobody listens on right now (loopback)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def free_port_run(count: int, start: int = 20000, stop: int = 60000) -> int:
    """The first of ``count`` consecutive free ports."""
    for base in range(start, stop, count + 3):
        ok = True
        for port in range(base, base + count):
            with socket.socket() as sock:
                try:
                    sock.bind((HOST, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no run of free ports found")


def bench_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: no BCPAY_* leaking in from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BCPAY_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass
class Child:
    """A child process we started, with its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGINT (a graceful uvicorn shutdown), then SIGKILL; this process only."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def tail(self, lines: int = 30) -> str:
        """The end of the child's log, for error messages."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


def spawn(name: str, argv: Sequence[str], workdir: Path, *, cwd: Path | None = None,
          env: dict[str, str] | None = None) -> Child:
    """Start ``argv`` with stdout+stderr to ``workdir/<name>.log``."""
    log = workdir / f"{name}.log"
    handle = log.open("wb")
    proc = subprocess.Popen(list(argv), stdout=handle, stderr=subprocess.STDOUT, cwd=cwd or ROOT,
                            env=env or bench_env(), start_new_session=True)
    handle.close()
    return Child(name, proc, log)


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """A tiny GET (status, body); (0, b"") when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback only
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (OSError, urllib.error.URLError):
        return 0, b""


def http_post_json(url: str, payload: Any, timeout: float = 30.0) -> Any:
    """POST JSON to a control endpoint of our own fakes; the parsed answer."""
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",  # noqa: S310
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback only
        return json.loads(response.read() or b"null")


def wait_http(url: str, child: Child | None = None, timeout: float = 30.0, interval: float = 0.02) -> float:
    """Poll ``url`` until it answers 2xx; seconds waited. Raises with the child's log tail."""
    started = time.perf_counter()
    deadline = started + timeout
    while time.perf_counter() < deadline:
        status, _ = http_get(url, timeout=1.0)
        if 200 <= status < 300:
            return time.perf_counter() - started
        if child is not None and child.proc.poll() is not None:
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{child.tail()}")
        time.sleep(interval)
    raise RuntimeError(f"{url} did not answer within {timeout} s" + (f":\n{child.tail()}" if child else ""))


def wait_file(path: Path, child: Child, timeout: float = 60.0) -> Any:
    """Wait for a child to write its JSON ready file; the parsed content."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            with contextlib.suppress(ValueError):
                return json.loads(path.read_text())
        if child.proc.poll() is not None:
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{child.tail()}")
        time.sleep(0.05)
    raise RuntimeError(f"{child.name} was not ready within {timeout} s:\n{child.tail()}")


def wait_log(child: Child, text: str, timeout: float = 60.0) -> None:
    """Wait until a child's log holds ``text`` (a process that serves no port says it is ready there)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if text in child.log.read_text(errors="replace"):
                return
        if child.proc.poll() is not None:
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{child.tail()}")
        time.sleep(0.05)
    raise RuntimeError(f"{child.name} did not print {text!r} within {timeout} s:\n{child.tail()}")


# --- request pools --------------------------------------------------------------------


def raw_request(method: str, path: str, *, body: bytes = b"", headers: dict[str, str] | None = None,
                host: str = HOST) -> bytes:
    """One HTTP/1.1 keep-alive request as bytes."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def write_pool(path: Path, requests: Iterable[bytes]) -> int:
    """Write a request pool file; the number of records."""
    count = 0
    with path.open("wb") as handle:
        for raw in requests:
            handle.write(f"{len(raw)}\n".encode() + raw)
            count += 1
    return count


def read_pool(path: Path) -> list[bytes]:
    """The records of a request pool file."""
    data = path.read_bytes()
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        nl = data.index(b"\n", pos)
        size = int(data[pos:nl])
        out.append(data[nl + 1: nl + 1 + size])
        pos = nl + 1 + size
    return out


# --- load -----------------------------------------------------------------------------


@dataclass
class LoadResult:
    """What one load run measured (latencies in milliseconds)."""

    tool: str
    requests: int
    errors: int  # non-2xx/3xx answers plus socket errors
    seconds: float
    rps: float
    p50: float
    p99: float
    max: float
    wrapped: int = 0  # requests that reused a pool record (pool too small)
    target_rps: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def brief(self) -> str:
        """One line for the log."""
        rate = f" (target {self.target_rps:.0f})" if self.target_rps else ""
        wrap = f", pool wrapped {self.wrapped}x" if self.wrapped else ""
        return (f"{self.tool}: {self.requests} req in {self.seconds:.1f} s = {self.rps:.0f} req/s{rate}, "
                f"p50 {self.p50:.1f} ms, p99 {self.p99:.1f} ms, max {self.max:.1f} ms, errors {self.errors}{wrap}")


def ensure_wrk(install: bool = True) -> str | None:
    """The wrk binary; installed from Debian when missing and we are root (like scripts/test)."""
    found = shutil.which("wrk")
    if found or not install:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        print("bench: wrk is missing and cannot be installed here; using the Python load generator",
              file=sys.stderr)
        return None
    print("bench: installing wrk (Debian)", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not shutil.which("wrk"):
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return shutil.which("wrk")


WRK_SCRIPT = r"""-- wrk script for scripts/bench.py: send the raw requests of a pool file in order.
-- Pool records are "<length>\n<raw HTTP/1.1 request>"; one wrk thread (-t1) is assumed.
-- done() prints one "BENCH {json}" line the Python side parses.

local pool = {}
local count = 0
local index = 0
wrapped = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(args[1], "rb"))
  while true do
    local size = f:read("*l")
    if size == nil then break end
    count = count + 1
    pool[count] = f:read(tonumber(size))
  end
  f:close()
end

function request()
  index = index + 1
  if index > count then
    index = 1
    wrapped = wrapped + 1
  end
  return pool[index]
end

function done(summary, latency, requests)
  local w = 0
  for _, t in ipairs(threads) do w = w + (t:get("wrapped") or 0) end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"status":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,' ..
    '"p50_us":%d,"p99_us":%d,"max_us":%d,"wrapped":%d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, w))
end
"""


def run_wrk(wrk: str, url: str, pool: Path, *, seconds: float, connections: int) -> LoadResult:
    """Closed loop at full speed: wrk, one thread, ``connections`` keep-alive connections."""
    script = pool.with_suffix(".lua")
    script.write_text(WRK_SCRIPT)
    argv = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
            "-s", str(script), url, "--", str(pool)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}")
    data = json.loads(line[6:])
    secs = data["duration_us"] / 1e6
    errors = sum(data[k] for k in ("status", "connect", "read", "write", "timeout"))
    return LoadResult("wrk", data["requests"], errors, secs, data["requests"] / secs if secs else 0.0,
                      data["p50_us"] / 1000, data["p99_us"] / 1000, data["max_us"] / 1000,
                      wrapped=data["wrapped"])


def run_loadgen(url: str, pool: Path, *, seconds: float, rate: float | None = None, connections: int = 16,
                record: Path | None = None, workdir: Path) -> LoadResult:
    """``bench_load.py`` in its own process: paced at ``rate`` req/s, or closed loop when None."""
    out = workdir / f"load-{time.monotonic_ns()}.json"
    argv = [PYTHON, str(SCRIPTS / "bench_load.py"), url, str(pool), "--seconds", str(seconds),
            "--connections", str(connections), "--out", str(out)]
    if rate is not None:
        argv += ["--rate", f"{rate:.3f}"]
    if record is not None:
        argv += ["--record", str(record)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 90, check=False, env=bench_env())
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"load generator failed ({done.returncode}): {done.stderr[-3000:]}")
    data = json.loads(out.read_text())
    return LoadResult("paced" if rate else "python", data["completed"], data["errors"], data["seconds"],
                      data["rps"], data["p50"], data["p99"], data["max"], wrapped=data["wrapped"],
                      target_rps=rate, extra={"late_starts": data.get("late_starts", 0)})


def peak(wrk: str | None, url: str, pool: Path, *, seconds: float, connections: int, workdir: Path) -> LoadResult:
    """The closed-loop peak with the best tool we have."""
    if wrk:
        return run_wrk(wrk, url, pool, seconds=seconds, connections=connections)
    return run_loadgen(url, pool, seconds=seconds, connections=connections, workdir=workdir)


# --- statistics -------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile (nearest rank); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    """The median, NaN for no values."""
    return statistics.median(values) if values else math.nan


# Runs the command and reports the peak RSS of that child alone. A small launcher is used because
# Linux counts the pages a child had right after fork() in its ru_maxrss: forked from this big
# process (request pools...), every child would seem at least as large as we are.
_RSS_LAUNCHER = """
import os, subprocess, sys, time
out, timeout, argv = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
proc = subprocess.Popen(argv)
deadline = time.monotonic() + timeout
while True:
    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
    if pid:
        break
    if time.monotonic() > deadline:
        proc.kill()
        pid, status, usage = os.wait4(proc.pid, 0)
        break
    time.sleep(0.05)
cpu = usage.ru_utime + usage.ru_stime
open(out, "w").write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss} {cpu}")
"""


def peak_rss_of(argv: Sequence[str], *, env: dict[str, str], cwd: Path, timeout: float,
                stdout: Path) -> tuple[int, int, float, float]:
    """Run a command; (exit status, peak RSS in KiB of that child alone, wall seconds, CPU seconds)."""
    report = stdout.with_suffix(".rss")
    report.unlink(missing_ok=True)
    started = time.perf_counter()
    with stdout.open("wb") as out:
        subprocess.run([sys.executable, "-c", _RSS_LAUNCHER, str(report), str(timeout), *argv], stdout=out,
                       stderr=subprocess.DEVNULL, env=env, cwd=cwd, timeout=timeout + 30, check=False)
    wall = time.perf_counter() - started
    status, rss, cpu = report.read_text().split()
    return int(status), int(rss), wall, float(cpu)


# --- results and the summary table ---------------------------------------------------


@dataclass
class Row:
    """One line of the summary: a figure, its target and its ratio."""

    bench: str
    figure: str
    target: str
    ratio: float  # figure / baseline, or figure / limit
    ok: bool | None  # None: informational, no target
    values: dict[str, float] = field(default_factory=dict)  # the raw numbers, for --json and tests

    def as_json(self) -> dict[str, Any]:
        """For --json."""
        return {"bench": self.bench, "figure": self.figure, "target": self.target,
                "ratio": None if math.isnan(self.ratio) else round(self.ratio, 4), "ok": self.ok,
                "values": {k: (None if math.isnan(v) or math.isinf(v) else round(v, 3))
                           for k, v in self.values.items()}}


def verdict(ok: bool | None) -> str:
    """PASS / FAIL / info."""
    return "info" if ok is None else ("PASS" if ok else "FAIL")


def fmt_ratio(value: float) -> str:
    """A ratio with sensible digits."""
    return "-" if math.isnan(value) else f"{value:.2f}"


def text_table(rows: Sequence[Row]) -> str:
    """The summary as aligned plain text."""
    head = ("benchmark", "figure", "target", "ratio", "result")
    body = [(r.bench, r.figure, r.target, fmt_ratio(r.ratio), verdict(r.ok)) for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=False)]
    line = "  ".join("{:<" + str(w) + "}" for w in widths)
    out = [line.format(*head), line.format(*("-" * w for w in widths))]
    out += [line.format(*r) for r in body]
    return "\n".join(out)


def markdown_table(rows: Sequence[Row]) -> str:
    """The summary as a Markdown table (for the README's Performance section)."""
    out = ["| benchmark | figure | target | ratio | result |", "| --- | --- | --- | ---: | --- |"]
    for r in rows:
        cells = (r.bench, r.figure, r.target, fmt_ratio(r.ratio), verdict(r.ok))
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(out)


@contextlib.contextmanager
def timed(label: str) -> Iterator[None]:
    """Log how long a stage took."""
    started = time.perf_counter()
    log(f"{label} ...")
    yield
    log(f"{label}: {time.perf_counter() - started:.1f} s")


def log(message: str) -> None:
    """Progress on stderr (the table goes to stdout)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
