"""a store's storefront channels, and the channel of each payment, so every storefront takes OKCloud Pay

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 15:40:00

bcpay knew one site per store (``stores.store_url``) and put its snippet on
channel 1 only: on a multi-storefront store a shopper of another channel was
never sent to the cashier, the snippet there was refused by CORS, and a
shopper who paid was sent back to channel 1's domain (reference section 11).
``channels`` holds each storefront channel of a store with its site's URLs,
the snippet bcpay put there and the merchant's settings for it;
``payments.channel_id`` the order's channel, read when the attempt opens, so
the return hop leads back to that channel's site.

It only adds a table and a nullable column, so code from 0008 on (the oldest
code 0010 accepts) runs on it: older code never reads either, and the rows it
writes leave ``payments.channel_id`` NULL, which this code reads as "the
store's default site", what the older code did.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import bcpay.storage.schema
from bcpay.storage.migrate import record_compat

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "channels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), server_default="", nullable=False),
        sa.Column("platform", sa.String(length=64), server_default="", nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("site_url", sa.String(length=512), server_default="", nullable=False),
        sa.Column("urls_json", sa.Text(), server_default="[]", nullable=False),
        sa.Column("checkout_customized", sa.Boolean(), nullable=True),
        sa.Column("settings_json", sa.Text(), server_default="{}", nullable=False),
        sa.Column("script_uuid", sa.String(length=64), nullable=True),
        sa.Column("script_hash", sa.String(length=128), nullable=True),
        sa.Column("read_at", bcpay.storage.schema.UTCDateTime(), nullable=False),
        sa.Column("updated_at", bcpay.storage.schema.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["store_id"], ["stores.id"], name=op.f("fk_channels_store_id_stores"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channels")),
        sa.UniqueConstraint("store_id", "channel_id", name=op.f("uq_channels_store_id_channel_id")),
    )
    with op.batch_alter_table("payments") as batch_op:
        batch_op.add_column(sa.Column("channel_id", sa.Integer(), nullable=True))
    record_compat(revision, oldest_code="0008")


def downgrade() -> None:
    with op.batch_alter_table("payments") as batch_op:
        batch_op.drop_column("channel_id")
    op.drop_table("channels")
