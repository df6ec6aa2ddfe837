"""The settings reference and ``bcpay.toml.example``, both from the config classes in ``bcpay/config.py``.

Each setting's description is the string right under its field (an attribute docstring, as Sphinx and
mkdocstrings read them)::

    port: int = 8000
    \"\"\"The TCP port `bcpay serve` listens on (1-65535).\"\"\"

A setting without one stops the generator, naming it (:func:`missing_descriptions`).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import json
import textwrap
import typing
from typing import Any

from bcpay import config
from bcpay.config import ENV_PREFIX, Settings
from bcpay.config_types import Secret, type_name
from bcpay.runtime import STORE_OVERRIDES, StorePolicy

Section = type[Any]


class Undocumented(Exception):
    """Settings without a description; the message names each one and where to write it."""


def field_docs(cls: type[Any]) -> dict[str, str]:
    """Each field's description: the string literal right under it in the class body, whitespace folded."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = next(node for node in tree.body if isinstance(node, ast.ClassDef)).body
    docs = {}
    for statement, following in itertools.pairwise(body):
        if (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str) and following.value.value.strip()):
            docs[statement.target.id] = " ".join(following.value.value.split())
    return docs


def sections(settings: type[Any] = Settings) -> dict[str, Section]:
    """The ``bcpay.toml`` sections, by name, in the order the settings class gives them."""
    hints = typing.get_type_hints(settings)
    return {f.name: hints[f.name] for f in dataclasses.fields(settings)}


def missing_descriptions(settings: type[Any] = Settings) -> list[str]:
    """``section.key`` of every setting that has no description in its class."""
    missing = []
    for name, cls in sections(settings).items():
        docs = field_docs(cls)
        missing.extend(f"{name}.{f.name}" for f in dataclasses.fields(cls) if f.name not in docs)
    return missing


def require_descriptions(settings: type[Any] = Settings) -> None:
    """Raise :class:`Undocumented` naming every setting without a description."""
    missing = missing_descriptions(settings)
    if missing:
        raise Undocumented(
            f"settings without a description: {', '.join(missing)}. Write one as a string right under each "
            "field in bcpay/config.py (an attribute docstring), then run the generator again.")


def default_of(f: dataclasses.Field[Any]) -> Any:
    """A field's default value (from its default or its factory)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    assert f.default_factory is not dataclasses.MISSING, f.name
    return f.default_factory()


def toml_value(value: Any) -> str:
    """A default as TOML writes it."""
    if isinstance(value, Secret):
        value = value.get()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def env_name(section: str, key: str) -> str:
    """The environment variable a setting is read from."""
    return f"{ENV_PREFIX}{section}_{key}".upper()


def allowed(path: str, tp: Any) -> str:
    """What loading accepts beyond the type, from the validation tables in bcpay/config.py."""
    if typing.get_origin(tp) is typing.Literal:
        return "one of " + ", ".join(f"`{toml_value(v)}`" for v in typing.get_args(tp))
    for where, low, high in config.RANGES:
        if where == path:
            return f"{number(low)} to {number(high)}"
    if path in config.POSITIVE:
        return "greater than 0"
    return ""


def number(value: float) -> str:
    """A limit as people write it: whole numbers in full (315360000, not 3.1536e+08)."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def type_label(tp: Any) -> str:
    """The type column: as load errors name it, secrets marked."""
    if tp is Secret:
        return "string (secret)"
    if typing.get_origin(tp) is typing.Literal:
        return "string"
    return type_name(tp)


def describe(section: str, f: dataclasses.Field[Any], tp: Any, doc: str) -> str:
    """A setting's description with what the code adds: its limits, whether a store overrides it, secrecy."""
    parts = [doc]
    limits = allowed(f"{section}.{f.name}", tp)
    if limits:
        parts.append(f"Allowed: {limits}.")
    if section == "payments" and f.name in STORE_OVERRIDES:
        parts.append("A store may override it ([per-store settings](#per-store-settings)).")
    if tp is Secret:
        parts.append(f"A secret: give it as `{env_name(section, f.name)}` rather than in the file.")
    return " ".join(parts)


def section_doc(cls: type[Any]) -> str:
    """A section class's docstring as one line of Markdown (reST's double backquotes made single)."""
    return " ".join((cls.__doc__ or "").split()).replace("``", "`")


def cell(text: str) -> str:
    """Text fit for one Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def settings_page(settings: type[Any] = Settings) -> str:
    """docs/reference/settings.md."""
    require_descriptions(settings)
    lines = [
        "# Settings",
        "",
        "<!-- Generated from bcpay/config.py by scripts/docs_reference.py: edit the code, not this page. -->",
        "",
        "Every setting bcpay reads, by `bcpay.toml` section, with its type, default and environment variable.",
        "Precedence, highest first: command-line options, then the environment (`BCPAY_<SECTION>_<KEY>`), then",
        "the file (`--config PATH`, else `$BCPAY_CONFIG`, else `./bcpay.toml`), then the defaults below.",
        "Unknown keys in the file are errors; see [Configuration](../operations/configuration.md) for the rules",
        "around them. In the environment a list is comma-separated and a boolean is 1, true, yes or on (0, false,",
        "no, off or empty for false). [`bcpay.toml.example`](#bcpaytomlexample) is generated from the same",
        "classes.",
        "",
    ]
    for name, cls in sections(settings).items():
        docs, hints = field_docs(cls), typing.get_type_hints(cls)
        lines += [f"## [{name}]", "", section_doc(cls), ""]
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            lines += [f"### {name}.{f.name} {{#{name}.{f.name}}}", "",
                      f"{type_label(tp)} · default `{toml_value(default_of(f))}` · `{env_name(name, f.name)}`", "",
                      describe(name, f, tp, docs[f.name]), ""]
    lines += store_settings_section(settings)
    lines += ["## bcpay.toml.example", "",
              "The example file at the root of the repository, generated from the same descriptions:", "",
              '??? example "bcpay.toml.example"', "", "    ```toml",
              *[f"    {line}".rstrip() for line in toml_example(settings).rstrip("\n").splitlines()], "    ```", ""]
    return "\n".join(lines)


def store_settings_section(settings: type[Any]) -> list[str]:
    """The per-store overrides (``runtime.STORE_OVERRIDES``): what each follows when a store does not set it."""
    payments = {f.name for f in dataclasses.fields(sections(settings)["payments"])}
    own = field_docs(StorePolicy)
    lines = ["## Per-store settings", "",
             "A store may set these for itself (the settings page, `bcpay stores configure STORE --<setting>`);",
             "`bcpay stores configure STORE --reset <setting>` drops the store's value so it follows the global",
             "one again. Stored in the database with the store, not in `bcpay.toml`.", "",
             "| store setting | when the store does not set it |", "| --- | --- |"]
    missing = []
    for key in STORE_OVERRIDES:
        if key in payments:
            lines.append(f"| `{key}` | follows [`payments.{key}`](#payments.{key}) |")
        elif key in own:
            lines.append(f"| `{key}` | {cell(own[key])} |")
        else:
            missing.append(key)
    if missing:
        raise Undocumented(f"store settings without a description: {', '.join(missing)}. Write one as a string "
                           "right under the field of bcpay.runtime.StorePolicy.")
    return [*lines, ""]


EXAMPLE_HEAD = """\
# bcpay configuration: every setting, with its default. Copy to bcpay.toml and edit.
# Generated from bcpay/config.py by scripts/docs_reference.py (edit the descriptions there).
#
# Precedence (highest first): command-line options > environment variables
# BCPAY_<SECTION>_<KEY> (e.g. BCPAY_PAYMENTS_PAID_STATUS_ID=11) > this file >
# built-in defaults. The file is --config PATH, else $BCPAY_CONFIG, else
# ./bcpay.toml. Unknown keys are errors. Secrets are best given by environment.
"""


def comment(text: str) -> list[str]:
    """Text as TOML comment lines of at most 100 characters."""
    return ["# " + line for line in textwrap.wrap(text, width=98, break_long_words=False, break_on_hyphens=False)]


def toml_example(settings: type[Any] = Settings) -> str:
    """bcpay.toml.example: each section, each setting's description as a comment above it, its default."""
    require_descriptions(settings)
    lines = [EXAMPLE_HEAD]
    for name, cls in sections(settings).items():
        docs, hints = field_docs(cls), typing.get_type_hints(cls)
        lines += [f"[{name}]", *comment(section_doc(cls))]
        for f in dataclasses.fields(cls):
            lines += ["", *comment(describe(name, f, hints[f.name], docs[f.name]).replace(
                " ([per-store settings](#per-store-settings))", " (settings page, `bcpay stores configure`)")),
                f"{f.name} = {toml_value(default_of(f))}"]
        lines.append("")
    return "\n".join(lines)
