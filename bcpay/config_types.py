"""The types a setting can have: :class:`Secret`, and reading a value as its annotation says.

Pure: no I/O, nothing of bcpay's but the error tree. :mod:`bcpay.config` builds
the settings from these; the reference generator (``scripts/docs_reference.py``)
names the types the same way the load errors do.
"""

from __future__ import annotations

import re
import typing
from typing import Any, Literal

from bcpay.errors import ConfigError


class Secret:
    """A string that never shows itself in reprs, str() or log lines."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        """Return the secret value; call only where it is actually used."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def type_name(tp: Any) -> str:
    """How a setting's annotation reads in messages and in the settings reference."""
    names = {int: "integer", float: "number", bool: "boolean", str: "string", Secret: "string"}
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        return "list of strings"
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def show(value: Any) -> str:
    """A value as a message quotes it: strings in double quotes, the rest as their repr."""
    return f'"{value}"' if isinstance(value, str) else repr(value)


ENV_INT = re.compile(r"[+-]?[0-9]+")
ENV_FLOAT = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")


def coerce(path: str, tp: Any, value: Any, *, from_env: bool) -> Any:
    """Check (and for env strings, parse) one value against its annotation."""
    wrong = ConfigError(f"{path}: expected {type_name(tp)}, got {show(value)}")
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise wrong
        return value
    if origin is tuple:
        if from_env and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise wrong
        return tuple(value)
    if tp is bool:
        if from_env and isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
        if not isinstance(value, bool):
            raise wrong
        return value
    if tp is int:
        if from_env and isinstance(value, str):
            # Plain ASCII digits: int() also takes "1_1" and other scripts' digits ("١١").
            if not ENV_INT.fullmatch(value.strip()):
                raise wrong
            return int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong
        return value
    if tp is float:
        if from_env and isinstance(value, str):
            if not ENV_FLOAT.fullmatch(value.strip()) and value.strip().lower() not in ("nan", "inf", "-inf"):
                raise wrong  # the validators below refuse nan and inf by the setting's name
            return float(value.strip())
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong
        return float(value)
    if tp is Secret:
        if isinstance(value, Secret):
            return value
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected string, got {type(value).__name__}")
        return Secret(value)
    if tp is str:
        if not isinstance(value, str):
            raise wrong
        return value
    raise ConfigError(f"{path}: unsupported setting type")  # pragma: no cover
