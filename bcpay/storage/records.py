"""Plain records read from the database (no secrets in their reprs)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class StoreRecord:
    """One BigCommerce store bcpay serves. Secret columns stay encrypted here."""

    id: int
    store_hash: str
    name: str
    store_url: str
    control_panel_url: str
    currency: str
    source: str
    scopes: tuple[str, ...]
    owner_email: str
    installed: bool
    merchant_id: str | None
    environment: str
    settings: dict[str, Any]
    script_uuid: str | None
    script_hash: str | None
    last_notification_at: datetime | None
    installed_at: datetime
    uninstalled_at: datetime | None
    access_token_enc: str | None = field(repr=False, default=None)
    celerypay_secret_enc: str | None = field(repr=False, default=None)
    celerypay_old_secret_enc: str | None = field(repr=False, default=None)
    celerypay_old_secret_until: datetime | None = field(repr=False, default=None)
    webhook_secret_enc: str | None = field(repr=False, default=None)

    @property
    def has_credentials(self) -> bool:
        """True when the store can take payments (token and CeleryPay merchant)."""
        return bool(self.access_token_enc and self.merchant_id and self.celerypay_secret_enc)

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> StoreRecord:
        """Build from a ``stores`` row."""
        return cls(
            id=row["id"],
            store_hash=row["store_hash"],
            name=row["name"],
            store_url=row["store_url"],
            control_panel_url=row["control_panel_url"],
            currency=row["currency"],
            source=row["source"],
            scopes=tuple(s for s in row["scopes"].split() if s),
            owner_email=row["owner_email"],
            installed=bool(row["installed"]),
            merchant_id=row["celerypay_merchant_id"],
            environment=row["celerypay_environment"],
            settings=json.loads(row["settings_json"] or "{}"),
            script_uuid=row["script_uuid"],
            script_hash=row["script_hash"],
            last_notification_at=row["last_notification_at"],
            installed_at=row["installed_at"],
            uninstalled_at=row["uninstalled_at"],
            access_token_enc=row["access_token_enc"],
            celerypay_secret_enc=row["celerypay_secret_enc"],
            celerypay_old_secret_enc=row["celerypay_old_secret_enc"],
            celerypay_old_secret_until=row["celerypay_old_secret_until"],
            webhook_secret_enc=row["webhook_secret_enc"],
        )


@dataclass(frozen=True)
class PaymentRecord:
    """One CeleryPay payment attempt for one order."""

    id: int
    token: str = field(repr=False)
    store_id: int
    order_id: int
    attempt_no: int
    merchant_order_no: str
    idempotency_key: str = field(repr=False)
    celerypay_id: str | None
    amount: int
    currency: str
    status: str
    paid_amount: int | None
    refunded_amount: int
    cashier_url: str | None = field(repr=False)
    expires_at: datetime | None
    failure_code: str | None
    failure_message: str | None
    celerypay_updated_at: datetime | None
    last_checked_at: datetime | None
    outcome: str | None
    created_at: datetime
    updated_at: datetime
    channel_id: int | None = None  # the order's storefront channel; None when older code opened it

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> PaymentRecord:
        """Build from a ``payments`` row."""
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class JobRecord:
    """One durable outbox job."""

    id: int
    store_id: int | None
    kind: str
    payload: dict[str, Any]
    dedupe_key: str | None
    subject: str | None
    state: str
    attempts: int
    run_after: datetime
    lease_owner: str | None
    lease_until: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> JobRecord:
        """Build from a ``jobs`` row."""
        values = {name: row[name] for name in cls.__dataclass_fields__ if name != "payload"}
        return cls(payload=json.loads(row["payload"]), **values)
