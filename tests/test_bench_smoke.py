"""scripts/bench.py works: at toy size it produces every hot-path figure and the CLI figure.

These tests never assert on speed (shared machines drift); only that the
machinery runs end to end and that its figures are present and sane.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
sys.path.insert(0, str(SCRIPTS))

from bench_lib import Row, markdown_table, percentile, raw_request, read_pool, text_table, write_pool  # noqa: E402


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One toy-size run of benchmarks 1 (SQLite) and 4."""
    work = tmp_path_factory.mktemp("bench")
    out = work / "result.json"
    load = "wrk" if shutil.which("wrk") else "python"
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench.py"), "--toy", "--only", "1,4", "--no-postgres", "--load", load,
         "--json", str(out), "--workdir", str(work / "run")],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(out.read_text())
    result["stdout"] = done.stdout
    return result


def _rows(result: dict[str, object]) -> dict[str, dict[str, object]]:
    rows = result["rows"]
    assert isinstance(rows, list)
    return {str(r["bench"]): r for r in rows}


def test_the_toy_run_measures_every_hot_path_against_the_baseline(toy_run: dict[str, object]) -> None:
    """Baseline, generator check, and peak + half-peak rows for notify, status poll and start payment."""
    rows = _rows(toy_run)
    names = [
        "1 SQLite: baseline (bare Starlette JSON)",
        "1 SQLite: load generator keeps up (baseline at 50 %)",
        *(f"1 SQLite: {ep} {kind}" for ep in ("notify", "status-poll", "start-payment")
          for kind in ("req/s", "p99 at 50 % of peak")),
    ]
    assert [n for n in names if n not in rows] == []
    for name in names:
        values = rows[name]["values"]
        assert isinstance(values, dict), name
        assert values["requests"] > 0, name
        assert values["errors"] == 0, name
        assert 0 < values["p50_ms"] <= values["p99_ms"], name
        assert values["rps"] > 0, name
        ratio = rows[name]["ratio"]
        assert isinstance(ratio, float) and math.isfinite(ratio) and ratio > 0, name


def test_the_toy_run_compares_cli_start_up_with_a_bare_interpreter(toy_run: dict[str, object]) -> None:
    """bcpay --help and python -c pass both timed; the ratio is theirs."""
    row = _rows(toy_run)["4 CLI start-up: bcpay --help vs python -c pass"]
    values = row["values"]
    assert isinstance(values, dict)
    assert values["help_ms"] > 0 and values["python_ms"] > 0
    assert row["ratio"] == pytest.approx(values["help_ms"] / values["python_ms"], rel=0.01)


def test_the_toy_run_compares_cli_start_up_with_a_bare_typer_app_of_the_same_shape(
        toy_run: dict[str, object]) -> None:
    """The floor is a Typer app with bcpay's commands and parameters and nothing else; the ratio is theirs."""
    row = _rows(toy_run)["4 CLI start-up: bcpay --help vs its floor (a bare Typer app of the same shape)"]
    values = row["values"]
    assert isinstance(values, dict)
    assert values["commands"] >= 30 and values["parameters"] >= values["commands"]
    assert values["help_ms"] > 0 and values["floor_ms"] > 0
    assert row["ratio"] == pytest.approx(values["help_ms"] / values["floor_ms"], rel=0.01)


def test_the_floor_app_lists_the_same_commands_as_bcpay() -> None:
    """Generated from bcpay's own command tree: every command and group is there by name."""
    import subprocess

    from bench_startup import bare_typer_source

    source, commands, _ = bare_typer_source()
    done = subprocess.run([sys.executable, "-c", source, "--help"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    for name in ("serve", "install-script", "channels", "stores", "refund-resolve"):
        assert f" {name} " in done.stdout
    assert commands >= 30


def test_the_toy_run_prints_the_summary_as_text_and_markdown(toy_run: dict[str, object]) -> None:
    """The summary ends the output, once as a table and once as Markdown."""
    stdout = str(toy_run["stdout"])
    assert "benchmark" in stdout and "| benchmark | figure | target | ratio | result |" in stdout
    assert "notifications" not in stdout or "outcomes" in stdout
    notes = toy_run["notes"]
    assert isinstance(notes, list)
    # Taken as real notifications of known payments (their read-back queued), not refused as unknown.
    assert any("notification outcomes" in n and "queued" in n for n in notes), notes


def test_a_request_pool_round_trips_records_with_newlines_inside() -> None:
    """Pool records keep their bytes, CRLFs included."""
    first = raw_request("POST", "/x", body=b'{"a":1}\n', headers={"Content-Type": "application/json"})
    second = raw_request("GET", "/y")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.pool"
        assert write_pool(path, [first, second]) == 2
        assert read_pool(path) == [first, second]
    assert first.endswith(b'\r\n\r\n{"a":1}\n') and b"Content-Length: 8\r\n" in first


def test_percentile_is_nearest_rank() -> None:
    """p50 of 1..100 is 50, p99 is 99; no values give NaN."""
    values = [float(v) for v in range(100, 0, -1)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50.0, 99.0, 100.0)
    assert math.isnan(percentile([], 50))


def test_tables_show_verdicts_and_escape_pipes() -> None:
    """PASS/FAIL/info per row; a pipe in a figure cannot break the Markdown table."""
    rows = [Row("a", "1 | 2", "< 4x", 0.5, True), Row("b", "x", "-", float("nan"), None),
            Row("c", "y", ">= 0.5", 0.1, False)]
    md = markdown_table(rows)
    assert "| a | 1 \\| 2 | < 4x | 0.50 | PASS |" in md
    assert "| b | x | - | - | info |" in md and "FAIL" in md
    assert text_table(rows).splitlines()[2].split()[-1] == "PASS"
