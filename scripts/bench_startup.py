"""Benchmarks 4 and 5: ``bcpay --help`` against ``python -c pass``, and the sandbox's ready time.

4. Median wall time of N runs of each command. ``-X importtime`` then names
   the heaviest modules ``bcpay --help`` imports and which bcpay module pulls
   each in, so that the slow imports can be made lazy.
5. ``bcpay sandbox --port-base N`` from process start until the storefront
   and bcpay's /healthz both answer (measured from outside), next to the
   "Ready in" line the sandbox prints itself.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from pathlib import Path

from bench_lib import PYTHON, ROOT, Row, bench_env, free_port_run, http_get, median, spawn

READY = re.compile(rb"Ready in ([0-9.]+) s")


def _wall(argv: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=bench_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True, timeout=60)
    return time.perf_counter() - started


def cli_startup(runs: int) -> tuple[list[Row], list[str]]:
    """Benchmark 4: rows and the import-time findings."""
    with tempfile.TemporaryDirectory(prefix="bcpay-bench-cli-") as tmp:
        cwd = Path(tmp)
        help_argv = [PYTHON, "-m", "bcpay", "--help"]
        # Bytecode as an installed package has it (pip compiles at install): an editable checkout
        # under PYTHONDONTWRITEBYTECODE would otherwise compile bcpay's modules on every run.
        subprocess.run([PYTHON, "-m", "compileall", "-q", str(ROOT / "bcpay")], check=True, timeout=120,
                       stdout=subprocess.DEVNULL)
        _wall(help_argv, cwd)  # warm the file cache once
        bare, helps = [], []
        for _ in range(runs):  # interleaved, so drift hits both alike
            bare.append(_wall([PYTHON, "-c", "pass"], cwd))
            helps.append(_wall(help_argv, cwd))
        base, cli = median(bare), median(helps)
        ratio = cli / base
        notes = [f"cli: median of {runs}: python -c pass {base * 1000:.0f} ms, bcpay --help {cli * 1000:.0f} ms"]
        notes += heavy_imports(cwd)
    row = Row("4 CLI start-up: bcpay --help vs python -c pass",
              f"{cli * 1000:.0f} ms vs {base * 1000:.0f} ms", "< 4x", ratio, ratio < 4,
              {"help_ms": cli * 1000, "python_ms": base * 1000})
    return [row], notes


def heavy_imports(cwd: Path, limit: int = 12) -> list[str]:
    """The slowest third-party imports under ``bcpay --help`` and the bcpay module that imports each."""
    done = subprocess.run([PYTHON, "-X", "importtime", "-m", "bcpay", "--help"], cwd=cwd, env=bench_env(),
                          capture_output=True, text=True, timeout=60, check=False)
    entries: list[tuple[int, int, str]] = []  # (depth, cumulative us, module)
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line[len("import time:"):].split("|")
        try:
            cumulative = int(parts[1])
        except ValueError:
            continue
        name = parts[2].rstrip()
        depth = (len(name) - len(name.lstrip())) // 2
        entries.append((depth, cumulative, name.strip()))
    # importtime prints children before their parent: a module's parent is the next line less deep.
    parent_of: dict[int, int] = {}
    stack: list[int] = []
    for i in range(len(entries) - 1, -1, -1):
        depth = entries[i][0]
        while stack and entries[stack[-1]][0] >= depth:
            stack.pop()
        if stack:
            parent_of[i] = stack[-1]
        stack.append(i)
    total = sum(c for d, c, _ in entries if d == 0)
    found: list[tuple[int, str, str]] = []
    for i, (_depth, cumulative, name) in enumerate(entries):
        if name.startswith("bcpay") or "." in name:
            continue
        importer, j = "", i
        while j in parent_of:
            j = parent_of[j]
            if entries[j][2].startswith("bcpay"):
                importer = entries[j][2]
                break
        if importer:
            found.append((cumulative, name, importer))
    found.sort(reverse=True)
    lines = [f"cli: -X importtime: all imports {total / 1000:.0f} ms; heaviest non-bcpay imports "
             "(cumulative, first importer in bcpay):"]
    lines += [f"cli:   {c / 1000:6.1f} ms  {n:<18} <- {imp}" for c, n, imp in found[:limit]]
    return lines


def sandbox_ready(runs: int, workdir: Path) -> tuple[list[Row], list[str]]:
    """Benchmark 5: median over ``runs`` of outside-measured and self-reported ready times."""
    outside, reported = [], []
    for n in range(runs):
        base = free_port_run(4)
        with tempfile.TemporaryDirectory(prefix="bcpay-bench-sandbox-") as tmp:
            started = time.perf_counter()
            child = spawn(f"sandbox-{n}", [PYTHON, "-m", "bcpay", "sandbox", "--port-base", str(base)], workdir,
                          cwd=Path(tmp))
            try:
                ready_at = None
                deadline = started + 60
                while time.perf_counter() < deadline and child.proc.poll() is None:
                    shop, _ = http_get(f"http://127.0.0.1:{base + 2}/", timeout=1)
                    health, _ = http_get(f"http://127.0.0.1:{base}/healthz", timeout=1) if shop == 200 else (0, b"")
                    if shop == 200 and health == 200:
                        ready_at = time.perf_counter() - started
                        break
                    time.sleep(0.02)
                if ready_at is None:
                    raise RuntimeError(f"the sandbox did not get ready:\n{child.tail()}")
                outside.append(ready_at)
                said = None
                for _ in range(100):  # the banner comes right after the servers answer
                    match = READY.search(child.log.read_bytes())
                    if match:
                        said = float(match.group(1))
                        break
                    time.sleep(0.05)
                if said is not None:
                    reported.append(said)
            finally:
                child.stop()
    out, said = median(outside), median(reported)
    notes = [f"sandbox: ready from outside {', '.join(f'{x:.2f}' for x in outside)} s; "
             f"it printed 'Ready in' {', '.join(f'{x:.1f}' for x in reported) or 'nothing'} s"]
    rows = [Row("5 sandbox ready (process start -> storefront + bcpay answer)",
                f"{out:.2f} s (it prints 'Ready in {said:.1f} s')", "< 10 s", out / 10, out < 10,
                {"outside_s": out, "reported_s": said})]
    return rows, notes
