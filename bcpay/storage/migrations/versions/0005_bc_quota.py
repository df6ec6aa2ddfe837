"""one BigCommerce quota count per store, shared by every bcpay process

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 06:00:00

Each process's rate limiter knows only what BigCommerce told it. With several
processes working one store (``serve --workers``, a separate ``bcpay worker``,
several hosts) each spent all of what was left at every window turnover, and
the store answered 429s in every window. ``bc_quota`` holds the current
window's end and the requests taken in it (``bcpay.quota``). It only adds a
table the previous version never reads, so code from 0003 on runs on it
(those processes pace themselves alone until they are upgraded).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bcpay.storage.migrate import record_compat

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bc_quota",
        sa.Column("store_hash", sa.String(length=32), nullable=False),
        sa.Column("window_end", sa.Float(), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("store_hash", name=op.f("pk_bc_quota")),
    )
    record_compat(revision, oldest_code="0003")


def downgrade() -> None:
    op.drop_table("bc_quota")
