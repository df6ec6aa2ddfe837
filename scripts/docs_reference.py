#!/usr/bin/env python3
"""The handbook's reference pages and bcpay.toml.example, generated from the code.

    .venv/bin/python scripts/docs_reference.py           # write every generated file
    .venv/bin/python scripts/docs_reference.py --check   # exit 1 naming each stale file, write nothing

Run it after adding or changing a setting, a command, an option, a route, an error code, a metric or
a step of the payment's state machine; tests/test_docs.py fails while a generated file is stale. The
files and what each is made from:

- docs/reference/settings.md and bcpay.toml.example: the config classes (bcpay/config.py), each
  setting's description being the string right under its field; a setting without one stops the run;
- docs/reference/cli.md: every command's --help (the Typer app);
- docs/reference/http-api.md: bcpay/server/openapi.py (what /openapi.json serves) and the routes;
- docs/reference/errors.md: bcpay.errors.CODES;
- docs/reference/metrics.md: bcpay.metrics.Metrics;
- docs/how-it-works/state-machine.md: bcpay.rules.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
COMMAND = ".venv/bin/python scripts/docs_reference.py"


def errors_page() -> str:
    """docs/reference/errors.md."""
    from bcpay.errors import CODES

    lines = [
        "# Error codes",
        "",
        "<!-- Generated from bcpay.errors.CODES by scripts/docs_reference.py: edit the catalogue there. -->",
        "",
        "Every `code` bcpay puts in an error answer, `{\"error\": {\"code\": \"...\", \"message\": \"...\"}}`, with",
        "the HTTP statuses it comes with. The message is for people and may change; the code is stable. The CLI",
        "prints the message and exits 2 when the code's status is 400 (the input is wrong), 1 otherwise. An",
        "upstream error may carry BigCommerce's or CeleryPay's own code instead (CeleryPay's are in its API",
        "contract, e.g. `duplicate_order_no`, `idempotency_conflict`).",
        "",
        "| code | HTTP status | meaning |",
        "| --- | --- | --- |",
    ]
    for code in sorted(CODES):
        entry, meaning = CODES[code], CODES[code].meaning.replace("|", "\\|")
        lines.append(f'| <a id="{code}"></a>`{code}` | {", ".join(map(str, entry.statuses))} | {meaning} |')
    return "\n".join([*lines, ""])


def metrics_page() -> str:
    """docs/reference/metrics.md; the tables between the markers are included by the operations page."""
    from bcpay.metrics import Metrics

    lines = [
        "# Metrics",
        "",
        "<!-- Generated from bcpay.metrics.Metrics by scripts/docs_reference.py. -->",
        "",
        "`GET /metrics` answers in the Prometheus text format. Counters are kept per process (scrape every",
        "process); gauges are read from the database at each scrape, so every process gives the same values.",
        "A counter appears once it has counted something.",
        "",
        "<!-- --8<-- [start:tables] -->",
        "| counter | labels | what it counts |",
        "| --- | --- | --- |",
    ]
    for name, text in Metrics.HELP.items():
        labels = ", ".join(f"`{label}`" for label in Metrics.LABELS[name]) or "-"
        lines.append(f"| `{name}` | {labels} | {text} |")
    lines += ["", "| gauge | what it reads |", "| --- | --- |"]
    lines += [f"| `{name}` | {text} |" for name, text in Metrics.GAUGES.items()]
    lines += ["<!-- --8<-- [end:tables] -->", ""]
    return "\n".join(lines)


# Notes on the steps of the diagram, by (from, to); a note whose step left the code is not drawn.
STEP_NOTES = {
    ("failed", "succeeded"): "signed capture wins",
    ("expired", "succeeded"): "signed capture wins",
    ("cancelled", "succeeded"): "signed capture wins",
    ("partially_refunded", "partially_refunded"): "more refunded",
}


def state_machine_page() -> str:
    """docs/how-it-works/state-machine.md."""
    from bcpay import rules

    steps = rules.transitions()
    lines = [
        "# The payment's state machine",
        "",
        "<!-- Generated from bcpay/rules.py by scripts/docs_reference.py. -->",
        "",
        "Each payment attempt has one state. CeleryPay's states and steps are its contract's; bcpay adds",
        "`creating`, the state of an attempt before CeleryPay has answered its creation. A notification, a",
        "status poll or `bcpay reconcile` moves an attempt only forward along these arrows",
        "(`rules.is_forward`); anything else is an old or repeated message and changes nothing. A signed capture",
        "for an attempt bcpay holds as failed, expired or cancelled wins: CeleryPay never captures after those,",
        "so bcpay's own state was inferred (a creation it thought lost).",
        "",
        "```mermaid",
        "stateDiagram-v2",
        f"    [*] --> {rules.CREATING}",
    ]
    for current, new in steps:
        note = STEP_NOTES.get((current, new))
        lines.append(f"    {current} --> {new}" + (f": {note}" if note else ""))
    finals = sorted(state for state in {*rules.REMOTE_STATUSES, rules.CREATING}
                    if not any(current == state for current, _ in steps))
    lines += [f"    {state} --> [*]" for state in finals]
    lines += [
        "```",
        "",
        "| group | states | what the order gets |",
        "| --- | --- | --- |",
        f"| open | {', '.join(f'`{s}`' for s in sorted(rules.OPEN))} | stays Awaiting Payment |",
        f"| paid | {', '.join(f'`{s}`' for s in sorted(rules.PAID))} | the paid status "
        f"(`payments.paid_status_id`: one of {', '.join(map(str, sorted(rules.PAID_STATUSES)))}), or the "
        f"mismatch status (one of {', '.join(map(str, sorted(rules.MISMATCH_STATUSES)))}) when the capture "
        "does not match the order; refunds move it to Refunded (4) or Partially Refunded (14) |",
        f"| unpaid and final | {', '.join(f'`{s}`' for s in sorted(rules.UNPAID_FINAL))} | stays Awaiting Payment "
        "(the shopper may try again), or Cancelled (5) on expiry with `payments.on_expired = \"cancel\"` |",
        "",
        "Every step of the diagram, as `rules.transitions()` gives it:",
        "",
        "| from | to |",
        "| --- | --- |",
        *[f"| `{current}` | `{new}` |" for current, new in steps],
        "",
    ]
    return "\n".join(lines)


def outputs() -> dict[str, Callable[[], str]]:
    """Every generated file (relative to the repository) and what makes it."""
    from docs_interfaces import cli_page, http_page
    from docs_settings import settings_page, toml_example

    return {
        "docs/reference/settings.md": settings_page,
        "bcpay.toml.example": toml_example,
        "docs/reference/cli.md": cli_page,
        "docs/reference/http-api.md": http_page,
        "docs/reference/errors.md": errors_page,
        "docs/reference/metrics.md": metrics_page,
        "docs/how-it-works/state-machine.md": state_machine_page,
    }


def stale(root: Path = ROOT) -> list[str]:
    """The generated files whose content on disk is not what the code makes now."""
    found = []
    for name, make in outputs().items():
        path = root / name
        if not path.exists() or path.read_text(encoding="utf-8") != make():
            found.append(name)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale files (exit 1 if any)")
    args = parser.parse_args(argv)
    from docs_settings import Undocumented

    try:
        if args.check:
            names = stale()
            for name in names:
                print(f"{name} is stale: run {COMMAND}", file=sys.stderr)
            return 1 if names else 0
        for name, make in outputs().items():
            path = ROOT / name
            text = make()
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
                print(f"wrote {name}")
    except Undocumented as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
