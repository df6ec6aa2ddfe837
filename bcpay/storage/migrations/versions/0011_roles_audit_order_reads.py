"""who may act on a store's money settings, who did what, and the last read of each order

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 15:45:00

Any control-panel user who opened the app could change the CeleryPay
credentials, refund and resolve anomalies. ``store_users.may_act`` marks the
users the store owner allows besides the owner (``bcpay.roles``); it defaults
to false, so nobody gains a right by the upgrade. ``settings_audit`` keeps
who changed what and when, from the settings page and the CLI.

Each payment start read the order from BigCommerce, junk included, and a
"Pay now" read it twice: 60 posts cost 120 calls of the store's quota.
``order_reads`` keeps, per order, a hash of its cart id (a wrong cart id for
a known order is refused without a call) and the last answer with its time,
so every process shares one read per order every few seconds
(``bcpay.order_reads``).

It only adds two tables and a column with a server default, so code from
0008 on (the oldest code 0010 accepts) runs on it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import bcpay.storage.schema
from bcpay.storage.migrate import record_compat

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("store_users") as batch_op:
        batch_op.add_column(sa.Column("may_act", sa.Boolean(), nullable=False, server_default=sa.text("false")))
    op.create_table(
        "settings_audit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=48), nullable=False),
        sa.Column("detail", sa.Text(), server_default="", nullable=False),
        sa.Column("created_at", bcpay.storage.schema.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["store_id"], ["stores.id"], name=op.f("fk_settings_audit_store_id_stores"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settings_audit")),
    )
    op.create_index("ix_settings_audit_store", "settings_audit", ["store_id", "id"])
    op.create_table(
        "order_reads",
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.BigInteger(), nullable=False),
        sa.Column("cart_hash", sa.String(length=64), nullable=True),
        sa.Column("snapshot", sa.Text(), nullable=True),
        sa.Column("read_at", bcpay.storage.schema.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["store_id"], ["stores.id"], name=op.f("fk_order_reads_store_id_stores"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("store_id", "order_id", name=op.f("pk_order_reads")),
    )
    record_compat(revision, oldest_code="0008")


def downgrade() -> None:
    op.drop_table("order_reads")
    op.drop_index("ix_settings_audit_store", table_name="settings_audit")
    op.drop_table("settings_audit")
    with op.batch_alter_table("store_users") as batch_op:
        batch_op.drop_column("may_act")
