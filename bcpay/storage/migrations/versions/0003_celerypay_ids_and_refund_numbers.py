"""CeleryPay ids fit their columns; refund numbers are unique per payment

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 10:00:00

- ``events.event_id`` and ``refunds.celerypay_id`` were ``VARCHAR(64)`` while
  the parser accepts ``evt_``/``ref_`` + 64 characters: on PostgreSQL such an
  event failed its insert, was answered 500 and was lost after CeleryPay's
  retries. They become ``VARCHAR(128)``; ``payments.failure_code``, a free
  string in the contract, becomes ``TEXT``.
- ``refunds.merchant_refund_no`` was unique across all stores, but CeleryPay
  makes it unique per merchant only (contract, "POST /v1/payments/{id}/refunds")
  and every store has its own merchant: two stores' "R1" collided. It becomes
  unique per payment.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _widen(table: str, column: str, old: sa.types.TypeEngine[str], new: sa.types.TypeEngine[str], *,
           nullable: bool) -> None:
    """ALTER COLUMN TYPE on PostgreSQL; nothing on SQLite.

    SQLite does not enforce a VARCHAR length (VARCHAR(64) and TEXT both have
    TEXT affinity and store any length), so the old declaration already holds
    the longer ids; recreating ``payments`` or ``events`` in batch mode to
    change only that text would copy every row for nothing. On PostgreSQL a
    longer VARCHAR or TEXT is a catalogue change, with no table rewrite.
    """
    if op.get_bind().dialect.name == "sqlite":
        return
    op.alter_column(table, column, type_=new, existing_type=old, existing_nullable=nullable)


def upgrade() -> None:
    _widen("events", "event_id", sa.String(length=64), sa.String(length=128), nullable=False)
    _widen("payments", "failure_code", sa.String(length=64), sa.Text(), nullable=True)
    # A constraint change needs batch mode on SQLite (the table is recreated and
    # its rows copied); refunds is small and nothing references it. The wider
    # celerypay_id rides along so SQLite's declaration matches the model too.
    with op.batch_alter_table("refunds") as batch_op:
        batch_op.alter_column(
            "celerypay_id", type_=sa.String(length=128), existing_type=sa.String(length=64), existing_nullable=True
        )
        batch_op.drop_constraint(op.f("uq_refunds_merchant_refund_no"), type_="unique")
        batch_op.create_unique_constraint(
            op.f("uq_refunds_payment_id_merchant_refund_no"), ["payment_id", "merchant_refund_no"]
        )


def downgrade() -> None:
    # Fails (and changes nothing) when the data no longer fits 0002's schema:
    # the same refund number in two stores, or an id longer than 64 characters.
    with op.batch_alter_table("refunds") as batch_op:
        batch_op.drop_constraint(op.f("uq_refunds_payment_id_merchant_refund_no"), type_="unique")
        batch_op.create_unique_constraint(op.f("uq_refunds_merchant_refund_no"), ["merchant_refund_no"])
        batch_op.alter_column(
            "celerypay_id", type_=sa.String(length=64), existing_type=sa.String(length=128), existing_nullable=True
        )
    _widen("payments", "failure_code", sa.Text(), sa.String(length=64), nullable=True)
    _widen("events", "event_id", sa.String(length=128), sa.String(length=64), nullable=False)
