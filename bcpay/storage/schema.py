"""The database schema (SQLAlchemy Core), the same on SQLite and PostgreSQL.

Invariants live here as constraints, not only in code:

- one store row per store hash;
- at most one *open* (``creating`` or ``pending``) attempt per order
  (partial unique index ``uq_payments_one_open``);
- ``merchant_order_no``, the CeleryPay payment id and the public token are unique;
- a refund number is unique per payment, not globally: CeleryPay makes
  ``merchant_refund_no`` unique per merchant only, and every store has its own;
- a CeleryPay event id is stored once per store (``(store_id, event_id)`` unique): the dedupe key,
  per store so that one store's events (signed with its own secret) never silence another's; a
  BigCommerce webhook hash likewise;
- an outbox job with a ``dedupe_key`` exists once.

One invariant is not a constraint, because a lease ends with the clock, not
with a write: at most one job per ``jobs.subject`` is leased (``outbox.claim``).

Columns holding CeleryPay's identifiers are at least as wide as the ids
``bcpay.clients.celerypay_models`` accepts (``ID``): a notification that parses
but does not fit its column fails on PostgreSQL, is answered 500 and, after
CeleryPay's 47 hours of retries, is lost. Its free strings (``failure_code``)
have no limit in the contract, so they are ``Text``.

Schema changes go through Alembic migrations in ``bcpay/storage/migrations``;
each records which code can still run on it in ``schema_compat``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, naive UTC in the column.

    SQLite has no time zones and PostgreSQL ``timestamp`` is naive; storing
    naive UTC on both keeps comparisons (lease expiry, next run) portable.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # pragma: no cover - SQLite raw text
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

OPEN_STATUSES = ("creating", "pending")
# A refund request that may or may not have been made at CeleryPay (refunds.py, "in doubt"): its amount
# stays held until CeleryPay's answer or a person settles it. Not a schema change: ``status`` is free text.
REFUND_IN_DOUBT = "in_doubt"
REFUND_IN_DOUBT_ANOMALY = "refund_in_doubt"  # the anomaly that asks a person to settle such a refund
ID = 128  # CeleryPay ids: evt_/ref_ + up to 64 characters (68) fit with room to spare

stores = Table(
    "stores",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("store_hash", String(32), nullable=False, unique=True),
    Column("name", String(255), nullable=False, server_default=""),
    Column("store_url", String(512), nullable=False, server_default=""),
    Column("control_panel_url", String(512), nullable=False, server_default=""),
    Column("currency", String(3), nullable=False, server_default=""),
    Column("source", String(16), nullable=False),  # "app" or "api_account"
    Column("access_token_enc", Text),  # Fernet under app.secret_key; NULL after uninstall
    Column("scopes", Text, nullable=False, server_default=""),
    Column("owner_email", String(255), nullable=False, server_default=""),
    Column("installed", Boolean, nullable=False, server_default=text("true")),
    Column("celerypay_merchant_id", String(64)),
    Column("celerypay_secret_enc", Text),
    Column("celerypay_old_secret_enc", Text),  # accepted on notifications during rotation
    Column("celerypay_old_secret_until", UTCDateTime()),
    Column("celerypay_environment", String(16), nullable=False, server_default="sandbox"),
    Column("webhook_secret_enc", Text),
    Column("settings_json", Text, nullable=False, server_default="{}"),
    Column("script_uuid", String(64)),
    Column("script_hash", String(128)),
    Column("last_notification_at", UTCDateTime()),
    Column("installed_at", UTCDateTime(), nullable=False),
    Column("uninstalled_at", UTCDateTime()),
    Column("updated_at", UTCDateTime(), nullable=False),
)

store_users = Table(
    "store_users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("store_id", ForeignKey("stores.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", BigInteger, nullable=False),
    Column("email", String(255), nullable=False, server_default=""),
    Column("is_owner", Boolean, nullable=False, server_default=text("false")),
    # Allowed by the owner to change money settings (``bcpay.roles``); the owner always may.
    Column("may_act", Boolean, nullable=False, server_default=text("false")),
    Column("last_seen_at", UTCDateTime(), nullable=False),
    UniqueConstraint("store_id", "user_id"),
)

payments = Table(
    "payments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("token", String(64), nullable=False, unique=True),
    Column("store_id", ForeignKey("stores.id"), nullable=False),
    Column("order_id", BigInteger, nullable=False),
    Column("attempt_no", Integer, nullable=False),
    Column("merchant_order_no", String(64), nullable=False, unique=True),
    Column("idempotency_key", String(64), nullable=False),
    Column("celerypay_id", String(64), unique=True),
    Column("amount", BigInteger, nullable=False),  # minor units
    Column("currency", String(3), nullable=False),
    Column("status", String(24), nullable=False),
    Column("paid_amount", BigInteger),
    Column("refunded_amount", BigInteger, nullable=False, server_default="0"),
    Column("cashier_url", Text),
    Column("expires_at", UTCDateTime()),
    Column("failure_code", Text),
    Column("failure_message", Text),
    Column("celerypay_updated_at", UTCDateTime()),
    Column("last_checked_at", UTCDateTime()),
    Column("outcome", String(24)),  # applied | mismatch | duplicate_payment | kept_apart | None
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    # The order's storefront channel (0012): where the shopper is sent back. NULL: written by older code.
    Column("channel_id", Integer),
    UniqueConstraint("store_id", "order_id", "attempt_no"),
    Index("ix_payments_store_order", "store_id", "order_id"),
    Index("ix_payments_status_expires", "status", "expires_at"),
    Index(
        "uq_payments_one_open",
        "store_id",
        "order_id",
        unique=True,
        sqlite_where=text("status IN ('creating', 'pending')"),
        postgresql_where=text("status IN ('creating', 'pending')"),
    ),
)

refunds = Table(
    "refunds",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("payment_id", ForeignKey("payments.id"), nullable=False),
    Column("merchant_refund_no", String(64), nullable=False),
    Column("idempotency_key", String(64), nullable=False),
    Column("celerypay_id", String(ID), unique=True),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),  # requested | pending | in_doubt | succeeded | failed
    Column("reason", Text, nullable=False, server_default=""),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    # BigCommerce's refund id (refund ledger, reference section 12): the refund this one was made for
    # (idempotency key "bc-refund-<id>"), or the one bcpay wrote for it. NULL: not in the ledger (yet);
    # 0: BigCommerce refused to record it (bcpay.refund_ledger.REFUSED).
    Column("bc_refund_id", BigInteger),
    UniqueConstraint("payment_id", "merchant_refund_no"),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("event_id", String(ID), nullable=False),
    Column("store_id", ForeignKey("stores.id"), nullable=False),
    Column("type", String(32), nullable=False),
    Column("celerypay_payment_id", String(64)),
    Column("raw_body", Text, nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
    Index("ix_events_received", "received_at"),
    UniqueConstraint("store_id", "event_id"),  # per store: one store's events never silence another's
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("store_id", ForeignKey("stores.id")),
    Column("kind", String(32), nullable=False),
    Column("payload", Text, nullable=False),
    Column("dedupe_key", String(160), unique=True),
    # What the job is about (``order:<store id>:<order id>``, ``outbox.subject_of``; ``payment:<id>``
    # from 0007's code): the claim never leases a job while another job of its subject is leased.
    # NULL: about nothing in particular, or written before 0007.
    Column("subject", String(64)),
    Column("state", String(16), nullable=False),  # queued | done | dead | cancelled | discarded
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("run_after", UTCDateTime(), nullable=False),
    Column("lease_owner", String(64)),
    Column("lease_until", UTCDateTime()),
    Column("last_error", Text),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index("ix_jobs_due", "state", "run_after"),
    Index("ix_jobs_subject", "subject"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("store_id", ForeignKey("stores.id"), nullable=False),
    Column("order_id", BigInteger, nullable=False),
    Column("payment_id", ForeignKey("payments.id")),
    Column("from_status_id", Integer),
    Column("to_status_id", Integer),
    Column("action", String(32), nullable=False),
    Column("detail", Text, nullable=False, server_default=""),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_audit_order", "store_id", "order_id"),
)

anomalies = Table(
    "anomalies",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("store_id", ForeignKey("stores.id"), nullable=False),
    Column("order_id", BigInteger, nullable=False),
    Column("payment_id", ForeignKey("payments.id"), nullable=False),
    Column("kind", String(32), nullable=False),  # double_payment | paid_after_cancel | refund_in_doubt | ...
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("state", String(16), nullable=False, server_default="open"),  # open | resolved
    Column("detail", Text, nullable=False, server_default=""),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("resolved_at", UTCDateTime()),
    UniqueConstraint("payment_id", "kind"),
)

# /bc/load links are single use: a signed_payload_jwt's jti is kept until the JWT expires.
used_jwts = Table(
    "used_jwts",
    metadata,
    Column("jti", String(64), primary_key=True),
    Column("expires_at", UTCDateTime(), nullable=False),
    Index("ix_used_jwts_expires", "expires_at"),
)

webhook_receipts = Table(
    "webhook_receipts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("hash", String(128), nullable=False),
    Column("store_id", ForeignKey("stores.id"), nullable=False),
    Column("scope", String(64), nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
    UniqueConstraint("store_id", "hash"),
)

# Which code can run on a schema: each migration from 0004 on records the oldest code revision that can
# run on it (migrate.record_compat); a process older than the schema reads its row (migrate.ready_schema).
schema_compat = Table(
    "schema_compat",
    metadata,
    Column("revision", Text, primary_key=True),
    Column("oldest_code", Text, nullable=False),
)

# Each store's BigCommerce quota as every bcpay process spends it (``bcpay.quota``): the end of the
# current window (wall clock, seconds since the epoch) and the requests taken in it.
bc_quota = Table(
    "bc_quota",
    metadata,
    Column("store_hash", String(32), primary_key=True),
    Column("window_end", Float, nullable=False),
    Column("used", Integer, nullable=False),
)

# Every snippet version a bcpay server has served, by the short hash in its URL: after a release (or
# while old and new hosts run side by side) a store's tag may still name an older version, and any
# host serves it from here until the worker has rewritten the tag.
snippet_versions = Table(
    "snippet_versions",
    metadata,
    Column("short_hash", String(16), primary_key=True),
    Column("body", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

# Who changed a store's money settings, and when: the settings page and the CLI (``bcpay.settings_audit``).
settings_audit = Table(
    "settings_audit",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("store_id", ForeignKey("stores.id", ondelete="CASCADE"), nullable=False),
    Column("actor", String(255), nullable=False),  # "user:<id> <email>" or "cli:<os user>"
    Column("action", String(48), nullable=False),
    Column("detail", Text, nullable=False, server_default=""),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_settings_audit_store", "store_id", "id"),
)

# The last BigCommerce read of each order a payment start asked for (``bcpay.order_reads``): a hash of its
# cart id, so a wrong one is refused without a call, and the answer, shared by every process for a few seconds.
order_reads = Table(
    "order_reads",
    metadata,
    Column("store_id", ForeignKey("stores.id", ondelete="CASCADE"), primary_key=True),
    Column("order_id", BigInteger, primary_key=True),
    Column("cart_hash", String(64)),
    Column("snapshot", Text),
    Column("read_at", UTCDateTime(), nullable=False),
)

# A store's storefront channels (multi-storefront, 0012), read from ``GET /v3/channels`` and each one's
# ``GET /v3/channels/{id}/site``: the site's URLs (CORS origins, where a shopper returns), bcpay's snippet on
# that channel, and the merchant's per-channel settings (method names, language). A channel BigCommerce no
# longer lists stays, with status ``deleted``, until its snippet is gone.
channels = Table(
    "channels",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("store_id", ForeignKey("stores.id", ondelete="CASCADE"), nullable=False),
    Column("channel_id", Integer, nullable=False),
    Column("name", String(255), nullable=False, server_default=""),
    Column("platform", String(64), nullable=False, server_default=""),
    Column("status", String(24), nullable=False),
    Column("site_url", String(512), nullable=False, server_default=""),  # primary URL; "" when no site
    Column("urls_json", Text, nullable=False, server_default="[]"),  # [[type, url], ...]
    Column("checkout_customized", Boolean),
    Column("settings_json", Text, nullable=False, server_default="{}"),
    Column("script_uuid", String(64)),
    Column("script_hash", String(128)),
    Column("read_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    UniqueConstraint("store_id", "channel_id"),
)
