"""every snippet version served, so a store's tag never names a file that answers 404

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 07:00:00

The snippet is served at ``/static/inject.<hash>.js`` and each store's Script
Manager tag names that hash (with SRI). A server only had its own version, so
after a release every store loaded a 404 (no panel: the order stayed unpaid)
until the worker rewrote its tag, and while old and new hosts ran side by
side each answered 404 for the other's tags. ``snippet_versions`` keeps every
version a server has served. It only adds a table, so code from 0003 on runs
on it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import bcpay.storage.schema
from bcpay.storage.migrate import record_compat

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "snippet_versions",
        sa.Column("short_hash", sa.String(length=16), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", bcpay.storage.schema.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("short_hash", name=op.f("pk_snippet_versions")),
    )
    record_compat(revision, oldest_code="0003")


def downgrade() -> None:
    op.drop_table("snippet_versions")
