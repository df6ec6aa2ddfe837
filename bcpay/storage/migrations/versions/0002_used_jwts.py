"""single-use /bc/load links: used JWT ids

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 23:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import bcpay.storage.schema

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "used_jwts",
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("expires_at", bcpay.storage.schema.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_used_jwts")),
    )
    op.create_index("ix_used_jwts_expires", "used_jwts", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_used_jwts_expires", table_name="used_jwts")
    op.drop_table("used_jwts")
