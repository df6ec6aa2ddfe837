"""The records the fake CeleryPay stores: merchants, payments and refunds.

``as_json`` renders the contract's payment and refund objects: every field the
contract lists and nothing else (``customer`` and ``reason`` are accepted but
the contract does not echo them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bcpay.sandbox.celerypay_rules import rfc3339


@dataclass
class Merchant:
    """A merchant account; ``old_secret`` is set during a rotation."""

    merchant_id: str
    api_secret: str = field(repr=False)
    old_secret: str | None = field(default=None, repr=False)
    rotated_at: float = 0.0


@dataclass
class PaymentRecord:
    """A payment as the fake stores it (``as_json`` is the contract's payment object)."""

    id: str
    merchant_id: str
    merchant_order_no: str
    amount: int
    currency: str
    cashier_url: str
    return_url: str
    notify_url: str
    description: str
    metadata: dict[str, str]
    customer: dict[str, str]
    created_at: int
    expires_at: int
    status: str = "pending"
    paid_amount: int | None = None
    refunded_amount: int = 0
    failure_code: str | None = None
    failure_message: str | None = None
    paid_at: int | None = None
    updated_at: int = 0

    def as_json(self) -> dict[str, Any]:
        """The payment object, every contract field and nothing else."""
        return {
            "id": self.id,
            "object": "payment",
            "merchant_order_no": self.merchant_order_no,
            "amount": self.amount,
            "currency": self.currency,
            "status": self.status,
            "paid_amount": self.paid_amount,
            "refunded_amount": self.refunded_amount,
            "cashier_url": self.cashier_url,
            "return_url": self.return_url,
            "notify_url": self.notify_url,
            "description": self.description,
            "metadata": dict(self.metadata),
            "failure_code": self.failure_code,
            "failure_message": self.failure_message,
            "created_at": rfc3339(self.created_at),
            "expires_at": rfc3339(self.expires_at),
            "paid_at": None if self.paid_at is None else rfc3339(self.paid_at),
            "updated_at": rfc3339(self.updated_at),
        }


@dataclass
class RefundRecord:
    """A refund as the fake stores it (``as_json`` is the contract's refund object)."""

    id: str
    merchant_id: str
    payment_id: str
    merchant_refund_no: str
    amount: int
    currency: str
    reason: str
    created_at: int
    status: str = "pending"
    updated_at: int = 0

    def as_json(self) -> dict[str, Any]:
        """The refund object, every contract field and nothing else."""
        return {
            "id": self.id,
            "object": "refund",
            "payment_id": self.payment_id,
            "merchant_refund_no": self.merchant_refund_no,
            "amount": self.amount,
            "currency": self.currency,
            "status": self.status,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
        }
