"""Every metric bcpay counts is declared with its help and labels in ``bcpay.metrics.Metrics``.

The declarations are what /metrics prints as HELP lines and what docs/reference/metrics.md is
generated from, so a counter incremented anywhere in bcpay must be there, with the labels it is
counted by.
"""

from __future__ import annotations

import ast
from pathlib import Path

from bcpay.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]


def counted(source: str, where: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """(place, metric name, label names) of every ``.inc("name", ...)`` call in a source."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "inc"
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            labels = tuple(sorted(k.arg for k in node.keywords if k.arg and k.arg != "amount"))
            found.append((f"{where}:{node.lineno}", node.args[0].value, labels))
    return found


def undeclared(uses: list[tuple[str, str, tuple[str, ...]]]) -> list[str]:
    """The counts whose metric is not declared, or is counted by other labels than declared."""
    return [f"{where}: {name} {labels}" for where, name, labels in uses
            if name not in Metrics.HELP or tuple(sorted(Metrics.LABELS.get(name, ()))) != labels]


def test_every_counter_bcpay_increments_is_declared_with_its_labels() -> None:
    uses = [use for path in sorted((ROOT / "bcpay").rglob("*.py"))
            for use in counted(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())]
    assert {name for _, name, _ in uses} == set(Metrics.HELP)  # and nothing declared is never counted
    assert undeclared(uses) == []


def test_counters_and_gauges_each_have_help_labels_and_a_prometheus_name() -> None:
    assert set(Metrics.LABELS) == set(Metrics.HELP)
    assert not set(Metrics.GAUGES) & set(Metrics.HELP)
    for name, text in {**Metrics.HELP, **Metrics.GAUGES}.items():
        assert name.startswith("bcpay_") and text.endswith("."), name
    assert all(name.endswith("_total") for name in Metrics.HELP)


def test_an_undeclared_counter_or_label_is_named() -> None:
    """Control: the scan sees a new counter, and a known one counted by a new label."""
    source = 'rt.metrics.inc("bcpay_new_total", kind="x")\nm.inc("bcpay_jobs_total", kind="k", result="r", extra="e")\n'
    assert undeclared(counted(source, "probe.py")) == [
        "probe.py:1: bcpay_new_total ('kind',)", "probe.py:2: bcpay_jobs_total ('extra', 'kind', 'result')"]


def test_the_rendered_page_carries_each_declared_help_line() -> None:
    metrics = Metrics()
    metrics.inc("bcpay_jobs_total", kind="mark_paid", result="done")
    text = metrics.render({name: (help_text, 0) for name, help_text in Metrics.GAUGES.items()})
    assert f"# HELP bcpay_jobs_total {Metrics.HELP['bcpay_jobs_total']}" in text
    assert all(f"# HELP {name} {help_text}" in text for name, help_text in Metrics.GAUGES.items())
