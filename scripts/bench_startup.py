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
from typing import Any

from bench_lib import PYTHON, ROOT, Row, bench_env, free_port_run, http_get, median, spawn

READY = re.compile(rb"Ready in ([0-9.]+) s")


def _wall(argv: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=bench_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True, timeout=60)
    return time.perf_counter() - started


def bare_typer_source() -> tuple[str, int, int]:
    """A Typer app with bcpay's command tree (groups, commands, each option and argument by name) and nothing
    else: the framework's floor for ``--help``. Returns the source, the number of commands and of parameters."""
    import typer

    from bcpay.cli import app

    # bcpay's own Typer settings (plain help, no completion, no pretty tracebacks): the floor differs in work.
    settings = "add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None, no_args_is_help=True"
    lines = ["import typer", "", f"root = typer.Typer({settings}, help={(app.info.help or '')!r})"]
    counts = [0, 0]

    def walk(group: Any, var: str, prefix: str) -> None:
        for name, command in sorted(group.commands.items()):
            ident = f"{prefix}_{name}".replace("-", "_")
            if hasattr(command, "commands"):  # a group (Typer vendors its own click)
                lines.append(f"{ident} = typer.Typer(no_args_is_help=True, help={(command.help or '')!r})")
                lines.append(f"{var}.add_typer({ident}, name={name!r})")
                walk(command, ident, ident)
                continue
            counts[0] += 1
            params = []
            for param in command.params:
                if param.name in (None, "ctx"):
                    continue
                counts[1] += 1
                kind = "Argument" if type(param).__name__.endswith("Argument") else "Option"
                params.append(f"{param.name}: str = typer.{kind}(None, help={(getattr(param, 'help', '') or '')!r})")
            lines.append(f"@{var}.command({name!r})")
            lines.append(f"def {ident}({', '.join(params)}) -> None:")
            lines.append(f"    {(command.help or name).splitlines()[0]!r}")
            lines.append("")

    walk(typer.main.get_command(app), "root", "c")
    lines += ["", "root()"]
    return "\n".join(lines) + "\n", counts[0], counts[1]


def cli_startup(runs: int) -> tuple[list[Row], list[str]]:
    """Benchmark 4: rows and the import-time findings."""
    with tempfile.TemporaryDirectory(prefix="bcpay-bench-cli-") as tmp:
        cwd = Path(tmp)
        help_argv = [PYTHON, "-m", "bcpay", "--help"]
        source, commands, params = bare_typer_source()
        (cwd / "bare_cli.py").write_text(source, encoding="utf-8")
        bare_cli_argv = [PYTHON, str(cwd / "bare_cli.py"), "--help"]
        _wall(bare_cli_argv, cwd)  # compiles nothing heavy; warms typer's files
        # Bytecode as an installed package has it (pip compiles at install): an editable checkout
        # under PYTHONDONTWRITEBYTECODE would otherwise compile bcpay's modules on every run.
        subprocess.run([PYTHON, "-m", "compileall", "-q", str(ROOT / "bcpay")], check=True, timeout=120,
                       stdout=subprocess.DEVNULL)
        _wall(help_argv, cwd)  # warm the file cache once
        bare, helps, floors = [], [], []
        for _ in range(runs):  # interleaved, so drift hits all alike
            bare.append(_wall([PYTHON, "-c", "pass"], cwd))
            helps.append(_wall(help_argv, cwd))
            floors.append(_wall(bare_cli_argv, cwd))
        base, cli, floor = median(bare), median(helps), median(floors)
        ratio = cli / base
        notes = [f"cli: median of {runs}: python -c pass {base * 1000:.0f} ms, bcpay --help {cli * 1000:.0f} ms, "
                 f"a bare Typer app of the same {commands} commands and {params} parameters {floor * 1000:.0f} ms"]
        notes += heavy_imports(cwd)
    rows = [
        Row("4 CLI start-up: bcpay --help vs python -c pass",
            f"{cli * 1000:.0f} ms vs {base * 1000:.0f} ms", "< 4x", ratio, ratio < 4,
            {"help_ms": cli * 1000, "python_ms": base * 1000}),
        Row("4 CLI start-up: bcpay --help vs its floor (a bare Typer app of the same shape)",
            f"{cli * 1000:.0f} ms vs {floor * 1000:.0f} ms", "<= 1.5x", cli / floor, cli / floor <= 1.5,
            {"help_ms": cli * 1000, "floor_ms": floor * 1000, "commands": commands, "parameters": params}),
    ]
    return rows, notes


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
        base = free_port_run(5)  # bcpay, the API, two storefront channels, CeleryPay
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
