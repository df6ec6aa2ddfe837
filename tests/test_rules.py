"""Pure payment rules: state machine, capture checks, order eligibility."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from bcpay import rules


@pytest.mark.parametrize(
    ("current", "new", "forward"),
    [("pending", "succeeded", True), ("pending", "failed", True), ("pending", "expired", True),
     ("pending", "cancelled", True), ("succeeded", "refunded", True), ("succeeded", "partially_refunded", True),
     ("partially_refunded", "refunded", True), ("creating", "pending", True), ("creating", "succeeded", True),
     ("failed", "succeeded", True), ("cancelled", "succeeded", True), ("failed", "expired", False),
     ("succeeded", "failed", False), ("succeeded", "pending", False), ("expired", "pending", False),
     ("expired", "failed", False), ("refunded", "succeeded", False), ("refunded", "partially_refunded", False),
     ("pending", "pending", False), ("succeeded", "succeeded", False), ("pending", "bogus", False)],
)
def test_only_forward_transitions_are_allowed_and_a_capture_always_wins(current: str, new: str, forward: bool) -> None:
    assert rules.is_forward(current, new) is forward


def test_partial_refund_is_forward_only_when_more_was_refunded() -> None:
    assert rules.is_forward("partially_refunded", "partially_refunded", current_refunded=100, new_refunded=300)
    assert not rules.is_forward("partially_refunded", "partially_refunded", current_refunded=300, new_refunded=100)


def test_merchant_order_number_round_trips_and_fits_the_contract() -> None:
    no = rules.merchant_order_no("abc123", 4711, 2)
    assert no == "abc123-4711-2"
    assert rules.parse_merchant_order_no(no) == ("abc123", 4711, 2)
    assert rules.parse_merchant_order_no("evil:1") is None


@dataclass
class Remote:
    merchant_order_no: str = "s1-7-1"
    status: str = "succeeded"
    paid_amount: int | None = 1999
    currency: str = "USD"
    metadata: dict[str, str] = field(default_factory=lambda: {"store_hash": "s1", "order_id": "7"})


@dataclass
class Att:
    merchant_order_no: str = "s1-7-1"
    amount: int = 1999
    currency: str = "USD"
    order_id: int = 7
    token: str = "t"


def test_capture_matches_when_everything_agrees() -> None:
    assert rules.check_capture(Att(), Remote(), "s1").ok


@pytest.mark.parametrize(
    ("remote", "reason"),
    [(Remote(paid_amount=1000), "paid amount 1000 differs from the order total 1999"),
     (Remote(currency="EUR"), "currency EUR differs"),
     (Remote(merchant_order_no="s1-8-1"), "is not this attempt's"),
     (Remote(metadata={"store_hash": "other", "order_id": "7"}), "metadata does not name"),
     (Remote(paid_amount=None), "paid amount None")],
)
def test_capture_mismatches_say_why(remote: Remote, reason: str) -> None:
    check = rules.check_capture(Att(), remote, "s1")
    assert not check.ok and reason in check.reason


@dataclass
class Ord:
    status_id: int = 7
    payment_method: str = "OKCloud Pay"
    cart_id: str | None = "cart-1"
    date_created: datetime = field(default_factory=lambda: datetime(2026, 11, 25, 12, tzinfo=UTC))


NOW = datetime(2026, 11, 25, 13, tzinfo=UTC)


def eligible(order: Ord) -> rules.Refusal | None:
    return rules.check_order_eligible(order, accepted_methods=("OKCloud Pay",), max_age=timedelta(days=1), now=NOW)


def test_cart_match_is_exact() -> None:
    assert rules.cart_matches(Ord(), "cart-1")
    assert not rules.cart_matches(Ord(), "cart-2")
    assert not rules.cart_matches(Ord(cart_id=None), "cart-1")


def test_eligibility_refusals() -> None:
    assert eligible(Ord()) is None
    refusal = eligible(Ord(payment_method="Cash"))
    assert refusal is not None and refusal.code == "wrong_payment_method"
    refusal = eligible(Ord(status_id=11))
    assert refusal is not None and refusal.code == "order_not_awaiting_payment"
    refusal = eligible(Ord(date_created=NOW - timedelta(days=2)))
    assert refusal is not None and refusal.code == "order_too_old"


@pytest.mark.parametrize(("status", "effect"), [(7, "apply"), (1, "apply"), (11, "done"), (5, "cancelled"), (10, "other")])
def test_paid_effect_depends_on_the_order_status(status: int, effect: str) -> None:
    assert rules.paid_effect(status, paid_status_id=11) == effect


def test_refund_status_and_backoff() -> None:
    assert rules.refund_status_id(1999, 1999) == 4
    assert rules.refund_status_id(500, 1999) == 14
    assert [rules.backoff_seconds(n, base=2, cap=60) for n in (1, 2, 3, 6, 10)] == [2, 4, 8, 60, 60]
