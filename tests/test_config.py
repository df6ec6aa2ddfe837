"""Settings: precedence, validation messages naming the field, secrets hidden."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from bcpay.config import OTHER_ENV_NAMES, Secret, load_settings, setting_env_names, unknown_env_names
from bcpay.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bcpay.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_apply_without_any_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No file, no env: the documented defaults."""
    monkeypatch.chdir(tmp_path)
    s = load_settings(environ={})
    assert s.payments.method_name == "OKCloud Pay"
    assert s.payments.paid_status_id == 11
    assert s.payments.mismatch_status_id == 12
    assert s.database.url == "sqlite:///bcpay.db"
    assert s.bigcommerce.api_url == "https://api.bigcommerce.com"


def test_precedence_is_cli_over_env_over_file_over_default(tmp_path: Path) -> None:
    """Each layer overrides the one below it, key by key."""
    path = write(tmp_path, "[payments]\npaid_status_id = 9\nexpires_in = 900\nmethod_name = 'File'\n")
    env = {"BCPAY_PAYMENTS_PAID_STATUS_ID": "10", "BCPAY_PAYMENTS_METHOD_NAME": "Env"}
    s = load_settings(path, environ=env, overrides={"payments": {"method_name": "Cli"}})
    assert s.payments.method_name == "Cli"
    assert s.payments.paid_status_id == 10
    assert s.payments.expires_in == 900
    assert s.payments.mismatch_status_id == 12


def test_config_file_comes_from_env_variable_when_no_option(tmp_path: Path) -> None:
    """$BCPAY_CONFIG names the file when --config is absent."""
    path = write(tmp_path, "[server]\nport = 9100\n")
    assert load_settings(environ={"BCPAY_CONFIG": str(path)}).server.port == 9100


def test_wrong_type_names_the_field_path(tmp_path: Path) -> None:
    """The message is the documented one."""
    path = write(tmp_path, '[payments]\npaid_status_id = "x"\n')
    with pytest.raises(ConfigError, match=r'^payments\.paid_status_id: expected integer, got "x"$'):
        load_settings(path, environ={})


def test_env_value_of_wrong_type_names_the_field_path() -> None:
    with pytest.raises(ConfigError, match=r'^payments\.paid_status_id: expected integer, got "x"$'):
        load_settings(environ={"BCPAY_PAYMENTS_PAID_STATUS_ID": "x"})


def test_unknown_key_and_section_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^payments\.paid_status: unknown setting"):
        load_settings(write(tmp_path, "[payments]\npaid_status = 11\n"), environ={})
    with pytest.raises(ConfigError, match=r"^paymnts: unknown section"):
        load_settings(write(tmp_path, "[paymnts]\nx = 1\n"), environ={})


def test_literal_and_range_validation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^payments\.on_expired: expected 'keep' or 'cancel'"):
        load_settings(write(tmp_path, '[payments]\non_expired = "delete"\n'), environ={})
    with pytest.raises(ConfigError, match=r"^payments\.expires_in: CeleryPay accepts 300 to 86400"):
        load_settings(write(tmp_path, "[payments]\nexpires_in = 60\n"), environ={})
    with pytest.raises(ConfigError, match=r"^database\.url: expected sqlite"):
        load_settings(write(tmp_path, '[database]\nurl = "mysql://x"\n'), environ={})


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("BCPAY_SERVER_RATE_LIMIT_PER_IP", "0", r"^server\.rate_limit_per_ip: must be a number greater than 0"),
        ("BCPAY_SERVER_RATE_LIMIT_PER_STORE", "-5", r"^server\.rate_limit_per_store: must be"),
        ("BCPAY_SERVER_INSTALL_ATTEMPTS_PER_MINUTE", "0", r"^server\.install_attempts_per_minute: must be"),
        ("BCPAY_OUTBOX_POLL_INTERVAL", "-1", r"^outbox\.poll_interval: expected 0\.001 to 60"),
        ("BCPAY_OUTBOX_POLL_INTERVAL", "nan", r"^outbox\.poll_interval: expected"),
        ("BCPAY_OUTBOX_BACKOFF_CAP", "inf", r"^outbox\.backoff_cap: must be"),
        ("BCPAY_OUTBOX_SWEEP_INTERVAL", "0", r"^outbox\.sweep_interval: expected 1 to 86400"),
        ("BCPAY_OUTBOX_EVENT_RETENTION_DAYS", "7", r"^outbox\.event_retention_days: expected 30 to 36500"),
        ("BCPAY_BIGCOMMERCE_TIMEOUT", "-2", r"^bigcommerce\.timeout: must be"),
        ("BCPAY_CELERYPAY_MAX_RETRIES", "-1", r"^celerypay\.max_retries: expected 0 to 20"),
        ("BCPAY_SERVER_LOG_LEVEL", "verbose", r"^server\.log_level: expected one of critical, error"),
        ("BCPAY_SERVER_WORKERS", "99999", r"^server\.workers: expected 1 to 64"),
        # Plain ASCII numbers only: int() and float() also take "1_1" and other scripts' digits.
        ("BCPAY_PAYMENTS_PAID_STATUS_ID", "1_1", r"^payments\.paid_status_id: expected integer"),
        ("BCPAY_SERVER_PORT", "\u0668\u0660", r"^server\.port: expected integer"),
        ("BCPAY_BIGCOMMERCE_TIMEOUT", "1_5.0", r"^bigcommerce\.timeout: expected number"),
        ("BCPAY_SERVER_HOST", " ", r"^server\.host: must not be empty"),
        # Statuses that would hide a payment: a paid order Cancelled, or left Awaiting Payment.
        ("BCPAY_PAYMENTS_PAID_STATUS_ID", "5", r"^payments\.paid_status_id: 5 is not a status for a paid order"),
        ("BCPAY_PAYMENTS_PAID_STATUS_ID", "7", r"^payments\.paid_status_id: 7 is not a status for a paid order"),
        ("BCPAY_PAYMENTS_MISMATCH_STATUS_ID", "11", r"^payments\.mismatch_status_id: 11 does not stop the order"),
    ],
)
def test_values_that_would_break_the_server_or_worker_are_refused(variable: str, value: str, message: str) -> None:
    """A zero rate limit divided by zero, a negative poll interval spun the worker, an unknown log level
    crashed uvicorn: each is now a clear error naming the setting."""
    with pytest.raises(ConfigError, match=message):
        load_settings(environ={variable: value})


def test_a_zero_status_poll_interval_is_allowed() -> None:
    """0 means: ask CeleryPay on every poll (tests and debugging)."""
    assert load_settings(environ={"BCPAY_PAYMENTS_STATUS_POLL_INTERVAL": "0"}).payments.status_poll_interval == 0


def test_invalid_toml_and_missing_file_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[payments\n"), environ={})
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml", environ={})
    with pytest.raises(ConfigError, match=f"cannot read the config file {tmp_path}: Is a directory"):
        load_settings(tmp_path, environ={})


def test_lists_and_booleans_from_environment() -> None:
    s = load_settings(environ={
        "BCPAY_PAYMENTS_ACCEPTED_METHODS": "OKCloud Pay, Pay in Store",
        "BCPAY_PAYMENTS_REFUND_ON_STATUS": "yes",
    })
    assert s.payments.accepted_methods == ("OKCloud Pay", "Pay in Store")
    assert s.payments.refund_on_status is True
    assert s.accepted_methods == ("OKCloud Pay", "Pay in Store")


def test_secrets_never_show_in_repr_str_or_logs(caplog: pytest.LogCaptureFixture, secret_key: str) -> None:
    """repr(settings), str() and a log line carry no secret value."""
    s = load_settings(environ={
        "BCPAY_APP_CLIENT_SECRET": "client-secret-value-123",
        "BCPAY_APP_SECRET_KEY": secret_key,
    })
    text = repr(s) + str(s.app) + str(s.app.client_secret)
    with caplog.at_level(logging.INFO):
        logging.getLogger("bcpay.test").info("settings: %s %r", s, s.app.secret_key)
    for leaked in ("client-secret-value-123", secret_key):
        assert leaked not in text
        assert leaked not in caplog.text
    assert s.app.client_secret.get() == "client-secret-value-123"
    assert "**********" in repr(s.app.client_secret)


def test_bad_secret_key_is_rejected_without_echoing_it() -> None:
    with pytest.raises(ConfigError, match=r"^app\.secret_key: not a valid key") as info:
        load_settings(environ={"BCPAY_APP_SECRET_KEY": "hunter2-not-a-key"})
    assert "hunter2" not in str(info.value)


def test_secret_key_required_outside_sandbox() -> None:
    s = load_settings(environ={})
    with pytest.raises(ConfigError, match=r"^app\.secret_key: required"):
        s.require_secret_key()
    load_settings(environ={"BCPAY_APP_SANDBOX": "true"}).require_secret_key()


def test_secret_equality_and_truthiness() -> None:
    assert Secret("a") == Secret("a") and Secret("a") != Secret("b")
    assert not Secret("") and Secret("x")


# --- BCPAY_* names that are no setting ---------------------------------------------------------------


def test_a_misspelled_setting_variable_is_named_with_the_one_it_meant() -> None:
    """BCPAY_PAYMENTS_PAID_STATUS (no _ID) still loads the default, and is reported with the right name."""
    environ = {"BCPAY_PAYMENTS_PAID_STATUS": "2"}
    assert load_settings(environ=environ).payments.paid_status_id == 11
    assert unknown_env_names(environ) == [
        "BCPAY_PAYMENTS_PAID_STATUS is not a bcpay setting and is ignored "
        "(did you mean BCPAY_PAYMENTS_PAID_STATUS_ID?)"]


def test_an_unknown_variable_is_reported_by_name_never_by_value() -> None:
    """Values may be secrets: a misspelled secret key shows its name only."""
    warnings = unknown_env_names({"BCPAY_APP_SECRET": "hunter2-the-real-key", "BCPAY_HOME": "/opt/hunter2"})
    assert warnings == [
        "BCPAY_APP_SECRET is not a bcpay setting and is ignored (did you mean BCPAY_APP_SECRET_KEY?)",
        "BCPAY_HOME is not a bcpay setting and is ignored",  # nothing close: no guess
    ]
    assert "hunter2" not in "".join(warnings)


def test_settings_and_the_names_read_elsewhere_are_not_reported() -> None:
    """Every setting's variable, $BCPAY_CONFIG, the secrets commands read, the scripts' own; other prefixes."""
    environ = dict.fromkeys([*setting_env_names(), *OTHER_ENV_NAMES, "HOME", "XBCPAY_Y", "BCPA_Y"], "x")
    assert unknown_env_names(environ) == []


def test_every_bcpay_name_in_the_repository_is_a_setting_or_read_elsewhere() -> None:
    """A new BCPAY_ variable read by a command or script must join OTHER_ENV_NAMES, or every start warns of it."""
    deliberate = {"BCPAY_PAYMENTS_PAID_STATUS"}  # the handbook's example of a misspelling (operations/configuration.md)
    known = {*setting_env_names(), *OTHER_ENV_NAMES, *deliberate}
    found: dict[str, str] = {}
    for path in ROOT.rglob("*"):
        relative = path.relative_to(ROOT)
        if (not path.is_file() or relative.parts[0].startswith(".") or path.suffix in (".png", ".db")
                or (relative.parts[0] == "tests" and path.name.startswith("test_"))):  # tests misspell on purpose
            continue
        for name in re.findall(r"BCPAY_[A-Z0-9_]*[A-Z0-9]", path.read_text(encoding="utf-8", errors="replace")):
            found.setdefault(name, str(relative))
    assert "BCPAY_CELERYPAY_SECRET" in found and "BCPAY_TEST_PG" in found  # the scan reads what it should
    assert {name: where for name, where in found.items() if name not in known} == {}


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("BCPAY_", "BCPAY_ is not a bcpay setting and is ignored"),
        ("bcpay_server_port", "bcpay_server_port is not a bcpay setting and is ignored "
                              "(did you mean BCPAY_SERVER_PORT?)"),
        ("BCPAY_SERVER__PORT", "BCPAY_SERVER__PORT is not a bcpay setting and is ignored "
                               "(did you mean BCPAY_SERVER_PORT?)"),
        ("BCPAY_SËRVER_PORT", "BCPAY_SËRVER_PORT is not a bcpay setting and is ignored "
                              "(did you mean BCPAY_SERVER_PORT?)"),
        ("BCPAY_X\nINFO forged line", "BCPAY_X\\nINFO forged line is not a bcpay setting and is ignored"),
        ("BCPAY_\udcff", "BCPAY_\\udcff is not a bcpay setting and is ignored"),  # undecodable byte
        ("BCPAY_" + "PORT" * 25_000, "BCPAY_" + ("PORT" * 25_000)[:74] + "… is not a bcpay setting and is ignored"),
    ],
)
def test_odd_variable_names_stay_one_short_printable_line(name: str, shown: str) -> None:
    """Empty after the prefix, lower case, other scripts, a newline, an undecodable byte, 100 kB: one line each."""
    assert unknown_env_names({name: "value"}) == [shown]


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LOCALHOST", True), ("0.0.0.0", False), ("::", False), ("10.0.0.1", False), ("bcpay.internal", False),
])
def test_only_a_loopback_host_serves_metrics_without_a_token(host: str, loopback: bool) -> None:
    settings = load_settings(environ={}, overrides={"server": {"host": host}, "app": {"sandbox": True}})
    assert settings.server.on_loopback() is loopback and settings.server.metrics_open() is loopback
    if loopback:
        settings.require_metrics_token()
    else:
        with pytest.raises(ConfigError, match=r"^server\.metrics_token: required when server\.host is not a loopback"):
            settings.require_metrics_token()
    with_token = load_settings(environ={}, overrides={"server": {"host": host, "metrics_token": "m" * 32}})
    with_token.require_metrics_token()
    assert not with_token.server.metrics_open()
