"""The CLI and HTTP references: every command's --help from the Typer app, the API from /openapi.json."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import typer.main
from typer.testing import CliRunner

from bcpay.cli import app
from bcpay.server.app import routes
from bcpay.server.openapi import document

HELP_WIDTH = 100  # columns the help is laid out in, so the page does not depend on the terminal


def is_group(command: Any) -> bool:
    """Typer ships its own copy of Click, so groups are recognised by shape, not by class."""
    return isinstance(getattr(command, "commands", None), dict)


def commands(group: Any | None = None, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command and group under ``bcpay`` with its path, depth first, by name."""
    group = typer.main.get_command(app) if group is None else group
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        yield path, command
        if is_group(command):
            yield from commands(command, path)


def help_text(path: tuple[str, ...]) -> str:
    """What ``bcpay <path> --help`` prints."""
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(HELP_WIDTH), "TERM": "dumb"})
    if result.exit_code != 0:
        raise RuntimeError(f"bcpay {' '.join(path)} --help exited {result.exit_code}: {result.output}")
    return "\n".join(line.rstrip() for line in result.stdout.strip("\n").splitlines())


def cli_page() -> str:
    """docs/reference/cli.md."""
    lines = [
        "# Command line",
        "",
        "<!-- Generated from the Typer app (bcpay/cli*.py) by scripts/docs_reference.py: edit the help there. -->",
        "",
        "Every `bcpay` command with its `--help`. The conventions every command shares (global options, exit",
        "codes, how errors and numbers are written) are in [the CLI guide](../operations/cli.md).",
        "",
        "## bcpay",
        "",
        "```text",
        help_text(()),
        "```",
        "",
    ]
    for path, _ in commands():
        lines += [f"## bcpay {' '.join(path)}", "", "```text", help_text(path), "```", ""]
    return "\n".join(lines)


# --- HTTP ------------------------------------------------------------------------------------------------


def schema_text(schema: dict[str, Any]) -> str:
    """One line for a JSON schema: its type or the schema it names, and its constraints."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return f"[{name}](#{name.lower()})"
    text = schema.get("type", "any")
    if text == "array" and "items" in schema:
        text = f"array of {schema_text(schema['items'])}"
    facts = []
    for key, shown in (("enum", "one of"), ("pattern", "pattern"), ("minimum", "at least"), ("maximum", "at most"),
                       ("minLength", "length at least"), ("maxLength", "length at most")):
        if key in schema:
            value = schema[key]
            facts.append(f"{shown} " + (", ".join(f"`{v}`" for v in value) if key == "enum" else f"`{value}`"))
    if schema.get("nullable"):
        facts.append("may be null")
    if schema.get("description"):
        facts.append(schema["description"])
    return text + (f" ({'; '.join(facts)})" if facts else "")


def cell(text: str) -> str:
    """Text fit for one Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def operation_lines(path: str, method: str, op: dict[str, Any]) -> list[str]:
    """One operation: summary, parameters, body, answers."""
    lines = [f"### {method.upper()} {path}", "", f"{op.get('summary', '')}. Operation id: `{op.get('operationId', '')}`.",
             ""]
    if op.get("parameters"):
        lines += ["| parameter | in | required | schema |", "| --- | --- | --- | --- |"]
        lines += [f"| `{p['name']}` | {p['in']} | {'yes' if p.get('required') else 'no'} | "
                  f"{cell(schema_text(p.get('schema', {})))} |" for p in op["parameters"]]
        lines.append("")
    body = op.get("requestBody")
    if body:
        for media, content in body.get("content", {}).items():
            lines += [f"Body ({media}{', required' if body.get('required') else ''}): "
                      f"{schema_text(content.get('schema', {}))}.", ""]
    lines += ["| answer | meaning | body |", "| --- | --- | --- |"]
    for status, answer in op.get("responses", {}).items():
        shown = "; ".join(f"{media}: {schema_text(c.get('schema', {}))}" for media, c in answer.get("content", {}).items())
        lines.append(f"| {status} | {cell(answer.get('description', ''))} | {cell(shown) or '-'} |")
    return [*lines, ""]


def route_path(path: str) -> str:
    """A Starlette route path as OpenAPI writes it (``{hash:str}`` -> ``{hash}``)."""
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", path)


def other_routes(doc: dict[str, Any]) -> list[str]:
    """The routes /openapi.json leaves out (pages and forms), each with its handler's own summary."""
    lines = []
    for route in routes():
        path = route_path(route.path)
        for method in sorted((route.methods or set()) - {"HEAD"}):
            if method.lower() in doc["paths"].get(path, {}):
                continue
            summary = " ".join((route.endpoint.__doc__ or "").split())
            summary = summary.split(": ", 1)[1] if ": " in summary else summary
            lines.append(f"| `{method} {path}` | {cell(summary)} |")
    return lines


def http_page() -> str:
    """docs/reference/http-api.md."""
    doc = document()
    lines = [
        "# HTTP API",
        "",
        "<!-- Generated from bcpay/server/openapi.py and the routes by scripts/docs_reference.py. -->",
        "",
        f"{doc['info']['description']} This page is the OpenAPI document every bcpay server serves at",
        "`/openapi.json` (version " + doc["info"]["version"] + "), written out; the test suite fuzzes the live",
        "server against it. Errors are `{\"error\": {\"code\": \"...\", \"message\": \"...\"}}` with a stable `code`:",
        "[Error codes](errors.md) lists them. Who calls which route, and why, is in",
        "[Requests and routes](../how-it-works/requests.md).",
        "",
        "## Operations",
        "",
    ]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            lines += operation_lines(path, method, op)
    lines += ["## Schemas", ""]
    for name, schema in doc["components"]["schemas"].items():
        required = set(schema.get("required", []))
        lines += [f"### {name}", "", "| field | required | schema |", "| --- | --- | --- |"]
        for field_name, field_schema in schema.get("properties", {}).items():
            lines.append(f"| `{field_name}` | {'yes' if field_name in required else 'no'} | "
                         f"{cell(schema_text(field_schema))} |")
        lines.append("")
    lines += ["## Pages and forms", "",
              "Routes outside the JSON API: HTML pages for shoppers and merchants, the settings page's forms",
              "(session cookie and CSRF token) and the snippet's own files.", "",
              "| route | what it does |", "| --- | --- |", *other_routes(doc), ""]
    lines += ["## The document", "", '??? example "/openapi.json"', "", "    ```json",
              *[f"    {line}" for line in json.dumps(doc, indent=2, ensure_ascii=False).splitlines()], "    ```", ""]
    return "\n".join(lines)
