"""Settings: typed, frozen, validated at start-up.

Precedence, highest first (the one place this is decided):

1. values given on the command line (``load_settings(overrides=...)``);
2. environment variables ``BCPAY_<SECTION>_<KEY>`` (upper case), e.g.
   ``BCPAY_PAYMENTS_PAID_STATUS_ID=11``;
3. the TOML file: ``--config PATH``, else ``$BCPAY_CONFIG``, else ``./bcpay.toml``
   when it exists;
4. the defaults written on the dataclasses below.

Unknown keys and wrong types are errors that name the field path, e.g.
``payments.paid_status_id: expected integer, got "x"``. Secrets are wrapped in
:class:`Secret`, which never shows its value in ``repr``/``str``/logs.

A ``BCPAY_*`` variable that is neither a setting nor one of
:data:`OTHER_ENV_NAMES` is ignored by loading, but :func:`unknown_env_names`
names it (with the setting it probably meant) for ``serve`` and ``worker`` to
warn about and ``bcpay doctor`` to report: not a load error, because a
variable meant for something else must not stop a running fleet from restarting.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bcpay.errors import ConfigError
from bcpay.rules import status_choice_error

ENV_PREFIX = "BCPAY_"
DEFAULT_CONFIG_FILE = "bcpay.toml"


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


@dataclass(frozen=True)
class AppSettings:
    """The BigCommerce app and the server's public face."""

    public_url: str = "http://127.0.0.1:8000"
    client_id: str = ""
    client_secret: Secret = field(default_factory=lambda: Secret(""))
    secret_key: Secret = field(default_factory=lambda: Secret(""))
    # A second key that opens stored secrets but never seals: the next key before `rotate-key`,
    # the previous one after, so running processes never meet a value they cannot open.
    other_secret_key: Secret = field(default_factory=lambda: Secret(""))
    sandbox: bool = False
    control_panel_origins: tuple[str, ...] = (
        "https://store-*.mybigcommerce.com",
        "https://login.bigcommerce.com",
    )


@dataclass(frozen=True)
class ServerSettings:
    """How ``bcpay serve`` listens and protects itself."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    proxy_headers: bool = False
    forwarded_allow_ips: str = "127.0.0.1"
    max_body_bytes: int = 65536
    rate_limit_per_ip: int = 120
    rate_limit_per_store: int = 600
    # Order look-ups from the public API that find no such order (or the wrong cart), per store and
    # minute; past it, orders bcpay has never seen wait (each look-up spends the store's BigCommerce quota).
    failed_lookups_per_minute: int = 30
    # Installs (GET /bc/auth) per client IP and minute: each one makes bcpay call BigCommerce's OAuth endpoint.
    install_attempts_per_minute: int = 10
    log_format: Literal["text", "json"] = "text"
    log_level: str = "info"
    run_worker: bool = True
    # Set: /metrics wants it as a Bearer token. Required unless the server listens on loopback only.
    metrics_token: Secret = field(default_factory=lambda: Secret(""))

    def on_loopback(self) -> bool:
        """True when ``host`` is a loopback address (or ``localhost``): nothing off this machine connects."""
        host = self.host.strip().strip("[]")
        if host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:  # a host name: it may resolve to anything
            return False

    def metrics_open(self) -> bool:
        """True when ``/metrics`` may answer without a token: none is set and only this machine connects."""
        return not self.metrics_token and self.on_loopback()


@dataclass(frozen=True)
class DatabaseSettings:
    """Where bcpay keeps its state."""

    url: str = "sqlite:///bcpay.db"
    # PostgreSQL connections per process: every `serve` worker, `bcpay worker` and CLI command opens up to
    # pool_size + max_overflow; keep processes x that under the server's max_connections.
    pool_size: int = 10
    max_overflow: int = 10


@dataclass(frozen=True)
class BigCommerceSettings:
    """BigCommerce endpoints; only tests and the sandbox change them."""

    api_url: str = "https://api.bigcommerce.com"
    login_url: str = "https://login.bigcommerce.com"
    timeout: float = 15.0
    max_retries: int = 5
    # Every process takes its requests from one count per store in the database, so several
    # processes together stay inside the store's quota. "auto": on with PostgreSQL (several
    # processes or hosts), off with SQLite (one host; the count would cost a write per call).
    shared_quota: Literal["auto", "on", "off"] = "auto"


@dataclass(frozen=True)
class CeleryPaySettings:
    """CeleryPay endpoints for the two environments a store can choose."""

    api_url: str = "https://api.celerypay.com"
    sandbox_api_url: str = "https://sandbox.celerypay.com"
    timeout: float = 15.0
    max_retries: int = 4


@dataclass(frozen=True)
class PaymentSettings:
    """The payment rules every store starts with (stores may override some)."""

    method_name: str = "OKCloud Pay"
    accepted_methods: tuple[str, ...] = ()
    paid_status_id: int = 11
    mismatch_status_id: int = 12
    expires_in: int = 1800
    on_expired: Literal["keep", "cancel"] = "keep"
    return_to: Literal["confirmation", "bcpay"] = "confirmation"
    max_order_age: int = 86400
    status_poll_interval: int = 3
    refund_on_status: bool = False
    refund_duplicates: Literal["manual", "auto"] = "manual"
    unstarted_after: int = 3600


@dataclass(frozen=True)
class OutboxSettings:
    """The durable job queue that applies effects to BigCommerce."""

    max_attempts: int = 12
    backoff_base: float = 2.0
    backoff_cap: float = 900.0
    lease_seconds: int = 60
    concurrency: int = 64
    poll_interval: float = 0.05
    sweep_interval: int = 60
    event_retention_days: int = 90


@dataclass(frozen=True)
class Settings:
    """Every setting bcpay reads, grouped by ``bcpay.toml`` section."""

    app: AppSettings = field(default_factory=AppSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    bigcommerce: BigCommerceSettings = field(default_factory=BigCommerceSettings)
    celerypay: CeleryPaySettings = field(default_factory=CeleryPaySettings)
    payments: PaymentSettings = field(default_factory=PaymentSettings)
    outbox: OutboxSettings = field(default_factory=OutboxSettings)

    @property
    def accepted_methods(self) -> tuple[str, ...]:
        """The order ``payment_method`` values bcpay acts for."""
        return self.payments.accepted_methods or (self.payments.method_name,)

    def require_metrics_token(self) -> None:
        """Refuse to serve ``/metrics`` (outbox depth, traffic per route) beyond loopback without a token."""
        if not self.server.metrics_token and not self.server.on_loopback():
            raise ConfigError(
                f"server.metrics_token: required when server.host is not a loopback address (it is "
                f"{self.server.host!r}): /metrics would answer anyone; set it (e.g. BCPAY_SERVER_METRICS_TOKEN) "
                "or listen on 127.0.0.1"
            )

    def require_secret_key(self) -> None:
        """Refuse to run without ``app.secret_key``, except in sandbox mode."""
        if not self.app.secret_key and not self.app.sandbox:
            raise ConfigError(
                "app.secret_key: required (generate one with `bcpay keygen`)"
            )


# --- loading -----------------------------------------------------------------

_SECTIONS: dict[str, type[Any]] = typing.get_type_hints(Settings)


def _type_name(tp: Any) -> str:
    names = {int: "integer", float: "number", bool: "boolean", str: "string", Secret: "string"}
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        return "list of strings"
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _show(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


ENV_INT = re.compile(r"[+-]?[0-9]+")
ENV_FLOAT = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _coerce(path: str, tp: Any, value: Any, *, from_env: bool) -> Any:
    """Check (and for env strings, parse) one value against its annotation."""
    wrong = ConfigError(f"{path}: expected {_type_name(tp)}, got {_show(value)}")
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


def _field_types(cls: type[Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _merge(
    raw: dict[str, dict[str, Any]], source: Mapping[str, Any], *, from_env: bool, origin: str
) -> None:
    for section, values in source.items():
        if section not in _SECTIONS:
            raise ConfigError(f"{section}: unknown section (in {origin})")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{section}: expected a table, got {_show(values)}")
        types_ = _field_types(_SECTIONS[section])
        for key, value in values.items():
            path = f"{section}.{key}"
            if key not in types_:
                raise ConfigError(f"{path}: unknown setting (in {origin})")
            raw.setdefault(section, {})[key] = _coerce(path, types_[key], value, from_env=from_env)


def _env_values(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Map ``BCPAY_<SECTION>_<KEY>`` variables to sections; other BCPAY_ names are ignored."""
    found: dict[str, dict[str, str]] = {}
    for section, cls in _SECTIONS.items():
        for key in _field_types(cls):
            name = f"{ENV_PREFIX}{section}_{key}".upper()
            if name in environ:
                found.setdefault(section, {})[key] = environ[name]
    return found


# BCPAY_ names that are not settings, never reported as unknown: the config file, the secrets
# commands read instead of an argument, and the scripts' and tests' own (tests/test_config.py finds
# every BCPAY_ name in the repository and holds it to this list or the settings).
OTHER_ENV_NAMES = frozenset({
    "BCPAY_CONFIG",  # config_path
    "BCPAY_ACCESS_TOKEN",  # bcpay stores add
    "BCPAY_CELERYPAY_SECRET",  # bcpay stores configure
    "BCPAY_NEW_KEY",  # bcpay rotate-key --new-key-env, as its help and doctor spell it
    "BCPAY_VENV",  # scripts/test
    "BCPAY_TEST_PG",  # tests/conftest.py
    "BCPAY_RELIABILITY_PG",  # scripts/reliability_world.py
    "BCPAY_UPDATE_SCREENSHOTS",  # tests/browser
})
SHOWN_NAME_LENGTH = 80


def setting_env_names() -> list[str]:
    """Every ``BCPAY_<SECTION>_<KEY>`` name a setting is read from."""
    return [f"{ENV_PREFIX}{section}_{key}".upper() for section, cls in _SECTIONS.items() for key in _field_types(cls)]


def _shown_name(name: str) -> str:
    """A variable's name fit for one log line: control and undecodable characters escaped, cut short."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)
    return shown if len(shown) <= SHOWN_NAME_LENGTH else shown[:SHOWN_NAME_LENGTH] + "…"


def unknown_env_names(environ: Mapping[str, str]) -> list[str]:
    """One warning per ``BCPAY_*`` variable loading ignores, naming the likely intended one; never a value.

    The prefix is matched in any case (``bcpay_server_port`` is ignored too: names are upper case).
    """
    known = {*setting_env_names(), *OTHER_ENV_NAMES}
    # Compared without the prefix every name shares, which would make any two look alike.
    stems = {name.removeprefix(ENV_PREFIX): name for name in sorted(known)}
    found = []
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX) or name in known:
            continue
        stem = name.upper().removeprefix(ENV_PREFIX)
        close = difflib.get_close_matches(stem, list(stems), n=1, cutoff=0.6) if stem else []
        hint = f" (did you mean {stems[close[0]]}?)" if close else ""
        found.append(f"{_shown_name(name)} is not a bcpay setting and is ignored{hint}")
    return found


def config_path(explicit: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Path | None:
    """The file to read: ``--config``, else ``$BCPAY_CONFIG``, else ``./bcpay.toml`` if present."""
    if explicit:
        return Path(explicit)
    if environ.get("BCPAY_CONFIG"):
        return Path(environ["BCPAY_CONFIG"])
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.exists() else None


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Build :class:`Settings` from defaults, file, environment and overrides."""
    env = os.environ if environ is None else environ
    raw: dict[str, dict[str, Any]] = {}
    file = config_path(path, env)
    if file is not None:
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {file}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from None
        except OSError as exc:  # a directory, no permission...
            raise ConfigError(f"cannot read the config file {file}: {exc.strerror or exc}") from None
        _merge(raw, data, from_env=False, origin=str(file))
    _merge(raw, _env_values(env), from_env=True, origin="environment")
    if overrides:
        _merge(raw, overrides, from_env=False, origin="command line")
    return _build(raw)


def _build(raw: Mapping[str, Mapping[str, Any]]) -> Settings:
    sections = {name: cls(**raw.get(name, {})) for name, cls in _SECTIONS.items()}
    settings = Settings(**sections)
    _validate(settings)
    return settings


def replace(settings: Settings, **sections: Mapping[str, Any]) -> Settings:
    """A copy of ``settings`` with some keys changed (validated like a file)."""
    raw: dict[str, dict[str, Any]] = {
        name: {f.name: getattr(getattr(settings, name), f.name) for f in dataclasses.fields(cls)}
        for name, cls in _SECTIONS.items()
    }
    _merge(raw, sections, from_env=False, origin="replace()")
    return _build(raw)


LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
# Numbers a running server or worker breaks on (a zero rate limit divides by zero, a negative
# poll interval spins the worker): refused at load, with the setting's name.
POSITIVE = (
    "server.workers", "server.max_body_bytes", "server.rate_limit_per_ip", "server.rate_limit_per_store",
    "server.failed_lookups_per_minute", "server.install_attempts_per_minute",
    "bigcommerce.timeout", "celerypay.timeout", "outbox.max_attempts", "outbox.lease_seconds",
    "outbox.concurrency", "outbox.backoff_base", "outbox.backoff_cap", "payments.max_order_age",
    "database.pool_size",
)
RANGES = (
    ("server.workers", 1, 64),
    ("database.max_overflow", 0, 1000),
    ("bigcommerce.max_retries", 0, 20),
    ("celerypay.max_retries", 0, 20),
    ("outbox.poll_interval", 0.001, 60),
    ("outbox.sweep_interval", 1, 86400),
    ("outbox.event_retention_days", 30, 36500),  # dedupe by event id needs 30 days
    ("payments.status_poll_interval", 0, 3600),  # 0: ask CeleryPay on every poll
    ("payments.unstarted_after", 0, 10 * 365 * 86400),
)


def _value(settings: Settings, path: str) -> float:
    section, key = path.split(".")
    value: float = getattr(getattr(settings, section), key)
    return value


def _validate(s: Settings) -> None:
    def positive(path: str, value: float) -> None:
        if not math.isfinite(value) or value <= 0:  # nan and inf pass a plain "> 0"
            raise ConfigError(f"{path}: must be a number greater than 0, got {value!r}")

    def within(path: str, value: float, low: float, high: float) -> None:
        if not math.isfinite(value) or not low <= value <= high:
            raise ConfigError(f"{path}: expected {low:g} to {high:g}, got {value!r}")

    for path, url in (
        ("app.public_url", s.app.public_url),
        ("bigcommerce.api_url", s.bigcommerce.api_url),
        ("bigcommerce.login_url", s.bigcommerce.login_url),
        ("celerypay.api_url", s.celerypay.api_url),
        ("celerypay.sandbox_api_url", s.celerypay.sandbox_api_url),
    ):
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{path}: expected an http(s) URL, got {_show(url)}")
    if not s.database.url.startswith(("sqlite://", "postgresql://", "postgres://", "postgresql+")):
        raise ConfigError(
            f"database.url: expected sqlite:///PATH or postgresql://..., got {_show(s.database.url)}"
        )
    if not 1 <= s.server.port <= 65535:
        raise ConfigError(f"server.port: expected 1-65535, got {s.server.port}")
    if not 300 <= s.payments.expires_in <= 86400:
        raise ConfigError(
            f"payments.expires_in: CeleryPay accepts 300 to 86400 seconds, got {s.payments.expires_in}"
        )
    wrong_status = status_choice_error(s.payments.paid_status_id, s.payments.mismatch_status_id)
    if wrong_status:
        raise ConfigError("payments." + wrong_status)
    if not s.server.host.strip():
        raise ConfigError("server.host: must not be empty (an empty host listens on every interface)")
    if not s.payments.method_name.strip():
        raise ConfigError("payments.method_name: must not be empty")
    if s.server.log_level.lower() not in LOG_LEVELS:
        raise ConfigError(f"server.log_level: expected one of {', '.join(LOG_LEVELS)}, got {_show(s.server.log_level)}")
    for path in POSITIVE:
        positive(path, _value(s, path))
    for path, low, high in RANGES:
        within(path, _value(s, path), low, high)
    if s.app.secret_key or s.app.other_secret_key:
        from bcpay.crypto import check_key

        for path, key in (("app.secret_key", s.app.secret_key), ("app.other_secret_key", s.app.other_secret_key)):
            if key:
                check_key(key.get(), path)


__all__ = [
    "AppSettings",
    "BigCommerceSettings",
    "CeleryPaySettings",
    "DatabaseSettings",
    "OutboxSettings",
    "PaymentSettings",
    "Secret",
    "ServerSettings",
    "Settings",
    "config_path",
    "load_settings",
    "replace",
    "setting_env_names",
    "unknown_env_names",
]
