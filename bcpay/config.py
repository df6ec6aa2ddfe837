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
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bcpay.config_types import Secret, coerce, show
from bcpay.errors import ConfigError
from bcpay.rules import status_choice_error

ENV_PREFIX = "BCPAY_"
DEFAULT_CONFIG_FILE = "bcpay.toml"


@dataclass(frozen=True)
class AppSettings:
    """The BigCommerce app and the server's public face."""

    public_url: str = "http://127.0.0.1:8000"
    """Where BigCommerce (app callbacks, webhooks), CeleryPay (notifications, the shopper's return) and shoppers
    reach this server. https in production, on port 443 for BigCommerce webhooks; http only on a loopback
    address, which CeleryPay accepts only for a store in its sandbox environment."""
    client_id: str = ""
    """The BigCommerce app's client id (Developer Portal). Only the single-click app needs it (OAuth install,
    /bc/load); stores added with `bcpay stores add` (store-level API accounts) do not."""
    client_secret: Secret = field(default_factory=lambda: Secret(""))
    """The BigCommerce app's client secret: it trades install codes for tokens and verifies /bc/load JWTs and
    BigCommerce's webhook signatures."""
    secret_key: Secret = field(default_factory=lambda: Secret(""))
    """Encrypts the stored access tokens, CeleryPay secrets and webhook secrets (make one with `bcpay keygen`).
    Required, except in sandbox mode; without it nothing stored can be opened again."""
    other_secret_key: Secret = field(default_factory=lambda: Secret(""))
    """A second key that opens stored secrets but never seals: the next key before `bcpay rotate-key`, the
    previous one after, so running processes never meet a value they cannot open. Empty outside a rotation."""
    sandbox: bool = False
    """Sandbox mode: a fixed, public key stands in for an empty secret_key (serve and worker warn at every
    start, doctor fails while a production store is sealed with it). Never for real stores."""
    control_panel_origins: tuple[str, ...] = (
        "https://store-*.mybigcommerce.com",
        "https://login.bigcommerce.com",
    )
    """Origins allowed to frame the settings page (the BigCommerce control panel): scheme://host[:port], where
    "*" in the host stands for the store hash (or, for an unknown store, widens to the parent domain)."""


@dataclass(frozen=True)
class ServerSettings:
    """How ``bcpay serve`` listens and protects itself."""

    host: str = "127.0.0.1"
    """The address `bcpay serve` listens on (0.0.0.0 for every interface; never empty)."""
    port: int = 8000
    """The TCP port `bcpay serve` listens on (1-65535)."""
    workers: int = 1
    """uvicorn worker processes of `bcpay serve` (each runs its own outbox worker when run_worker is on)."""
    proxy_headers: bool = False
    """Trust X-Forwarded-For and X-Forwarded-Proto from forwarded_allow_ips: on behind a TLS reverse proxy."""
    forwarded_allow_ips: str = "127.0.0.1"
    """The proxies (comma-separated addresses) whose X-Forwarded-* headers count, so the client address used for
    rate limits comes only from them."""
    max_body_bytes: int = 65536
    """Request bodies larger than this are refused with 413 before they are read in full."""
    rate_limit_per_ip: int = 120
    """Requests per minute per client address on /api, /pay and /metrics (per process: enforce a hard limit at
    the proxy)."""
    rate_limit_per_store: int = 600
    """Payment starts per minute per store (per process)."""
    failed_lookups_per_minute: int = 300
    """Payment starts that find no such order (or the wrong cart), per store and minute, from all clients
    together; past it, orders bcpay has never seen get 429 for a while, since each look-up spends the store's
    BigCommerce quota. Keep it far above `failed_lookups_per_client`, so one client never reaches it."""
    failed_lookups_per_client: int = 10
    """Payment starts that find no such order, per client address (IPv6: per /64) and minute; past it, that
    client alone gets 429 for a while."""
    failed_lookups_per_order: int = 5
    """Payment starts naming one order id that find no such order (or the wrong cart), per minute; past it,
    that order id gets 429 for a while unless bcpay already knows the order."""
    install_attempts_per_minute: int = 10
    """Installs (GET /bc/auth) per client address and minute: each one makes bcpay call BigCommerce's OAuth
    endpoint."""
    log_format: Literal["text", "json"] = "text"
    """text, or json: one JSON object per line for every line `serve` and `worker` write."""
    log_level: str = "info"
    """critical, error, warning, info or debug."""
    run_worker: bool = True
    """Run the outbox worker inside `bcpay serve`; off when a separate `bcpay worker` does the jobs."""
    metrics_token: Secret = field(default_factory=lambda: Secret(""))
    """When set, GET /metrics answers only requests with "Authorization: Bearer <token>". Required unless the
    server listens on loopback only (`serve` refuses to start without it)."""

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
    """sqlite:///relative.db, sqlite:////absolute/path.db (one host), or postgresql://user:password@host:5432/db
    (several processes or hosts)."""
    pool_size: int = 10
    """PostgreSQL connections each process keeps (every `serve` worker, `bcpay worker` and CLI command)."""
    max_overflow: int = 10
    """PostgreSQL connections a process may open beyond pool_size under load; keep processes x (pool_size +
    max_overflow) under the server's max_connections."""


@dataclass(frozen=True)
class BigCommerceSettings:
    """BigCommerce endpoints; only tests and the sandbox change them."""

    api_url: str = "https://api.bigcommerce.com"
    """The BigCommerce API; only tests and the sandbox change it."""
    login_url: str = "https://login.bigcommerce.com"
    """Where app install codes are exchanged (/oauth2/token); only tests and the sandbox change it."""
    timeout: float = 15.0
    """Seconds per BigCommerce request."""
    max_retries: int = 5
    """Retries of a BigCommerce call after a 429, a 502/503/504 or a connection error."""
    shared_quota: Literal["auto", "on", "off"] = "auto"
    """One count of each store's API quota in the database for every process, so several processes together
    stay inside it: on, off, or auto (on with PostgreSQL, off with SQLite, where it would cost a write per
    call)."""


@dataclass(frozen=True)
class CeleryPaySettings:
    """CeleryPay endpoints for the two environments a store can choose."""

    api_url: str = "https://api.celerypay.com"
    """CeleryPay's production environment."""
    sandbox_api_url: str = "https://sandbox.celerypay.com"
    """CeleryPay's sandbox environment (a store chooses its environment)."""
    timeout: float = 15.0
    """Seconds per CeleryPay request."""
    max_retries: int = 4
    """Retries of a CeleryPay call after a 429, a 5xx or a connection error; every POST keeps its
    Idempotency-Key."""


@dataclass(frozen=True)
class PaymentSettings:
    """The payment rules every store starts with (stores may override some)."""

    method_name: str = "OKCloud Pay"
    """The offline payment method's display name, as the shopper sees it and BigCommerce reports it on the
    order."""
    accepted_methods: tuple[str, ...] = ()
    """Values of the order's payment_method that bcpay collects for; empty means [method_name]."""
    paid_status_id: int = 11
    """The status a paid order gets: 11 Awaiting Fulfillment, or 2, 3, 8, 9 or 10 (statuses of a paid order)."""
    mismatch_status_id: int = 12
    """The status of an order whose capture does not match it: 12 Manual Verification Required or 13 Disputed
    (a person looks)."""
    expires_in: int = 1800
    """Seconds a cashier page stays payable (CeleryPay accepts 300-86400)."""
    on_expired: Literal["keep", "cancel"] = "keep"
    """What happens to an order whose payment expired unpaid: keep it, or cancel it (status 5, only while still
    Awaiting Payment and paid by no attempt)."""
    return_to: Literal["confirmation", "bcpay"] = "confirmation"
    """Where the shopper lands after the cashier: the store's confirmation page, or bcpay's /pay/{token} page
    (for themes and headless storefronts that do not show the confirmation page again)."""
    max_order_age: int = 86400
    """Seconds after its creation an order can still start a payment."""
    status_poll_interval: int = 3
    """Seconds at least between CeleryPay look-ups per pending payment while the shopper's page polls (each
    look-up is due between 1 and 1.5 times this, drawn per poll); 0 asks on every poll."""
    order_read_interval: int = 5
    """Seconds at least between BigCommerce reads of one order for payment starts, the pay page's "Pay now"
    and pay links, shared by every process (the answer is kept that long); 0 reads on every request."""
    refund_on_status: bool = False
    """Deprecated (goes in the next release; use refund_from_bigcommerce): refund everything left at CeleryPay
    when the merchant sets an order to Refunded in the control panel. Ignored for a store with
    refund_from_bigcommerce on."""
    refund_from_bigcommerce: bool = True
    """Refunds go through BigCommerce's refund ledger both ways: a refund made in the control panel (Refund) is
    made at CeleryPay, and one made with bcpay is recorded in the ledger. Stores registered before the upgrade to
    schema 0013 keep it off until it is turned on for them."""
    refund_duplicates: Literal["manual", "auto"] = "manual"
    """Double and late payments: listed as anomalies for a person to refund (manual), or refunded at once
    (auto)."""
    unstarted_after: int = 3600
    """Seconds after which `bcpay reconcile` lists an order that never reached the cashier."""
    unpaid_hold: int = 0
    """Minutes after it was placed that an order for the method, still Awaiting Payment and paid by no attempt,
    is cancelled (status 5, with a staff note), also one whose snippet never ran; 0 keeps such orders. For
    stores without their own value: a store added while this is 0 gets its own, the payment's expiry plus 30
    minutes, so an upgrade never starts cancelling an existing store's orders."""


@dataclass(frozen=True)
class OutboxSettings:
    """The durable job queue that applies effects to BigCommerce."""

    max_attempts: int = 12
    """Tries of a job before it is dead (then `bcpay jobs retry` or `bcpay jobs discard`)."""
    backoff_base: float = 2.0
    """Seconds before a failed job's first retry; doubles with each attempt."""
    backoff_cap: float = 900.0
    """The longest wait between two tries of a job, in seconds."""
    lease_seconds: int = 60
    """A claimed job must finish within this (minus 5 s), or it is cut short and retried."""
    concurrency: int = 64
    """Jobs in flight per worker (a job mostly waits on BigCommerce, whose pacing still applies)."""
    poll_interval: float = 0.05
    """Seconds between a separate worker's checks for due jobs when idle (a read; jobs queued in the same
    process wake its worker at once)."""
    sweep_interval: int = 60
    """Seconds between the worker's sweeps: expired payments, refunds left open, outdated snippets."""
    event_retention_days: int = 90
    """Days of raw notifications `bcpay events prune` keeps by default (at least 30: dedupe needs them)."""


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
            raise ConfigError(f"{section}: expected a table, got {show(values)}")
        types_ = _field_types(_SECTIONS[section])
        for key, value in values.items():
            path = f"{section}.{key}"
            if key not in types_:
                raise ConfigError(f"{path}: unknown setting (in {origin})")
            raw.setdefault(section, {})[key] = coerce(path, types_[key], value, from_env=from_env)


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
    "server.failed_lookups_per_client", "server.failed_lookups_per_order",
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
    ("payments.order_read_interval", 0, 60),
    ("payments.unstarted_after", 0, 10 * 365 * 86400),
    ("payments.unpaid_hold", 0, 43200),  # 0: keep unpaid orders; at most 30 days
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
            raise ConfigError(f"{path}: expected an http(s) URL, got {show(url)}")
    if not s.database.url.startswith(("sqlite://", "postgresql://", "postgres://", "postgresql+")):
        raise ConfigError(
            f"database.url: expected sqlite:///PATH or postgresql://..., got {show(s.database.url)}"
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
        raise ConfigError(f"server.log_level: expected one of {', '.join(LOG_LEVELS)}, got {show(s.server.log_level)}")
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
