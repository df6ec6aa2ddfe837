"""schema_compat: which bcpay can run on a schema

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 10:00:00

During a rolling upgrade over several hosts the operator runs ``bcpay db
upgrade`` with the new release while the other hosts still run the old one.
Until now an old process that restarted then (a crashed uvicorn worker, a
rebooted host) refused the newer schema, and uvicorn stopped that host's other
workers with it: an outage in the middle of the deploy, even when the
migration only added things the old code never reads.

Each migration from this one on records the oldest code revision that can run
on its schema (``migrate.record_compat``). An older process that knows that
revision runs, with a warning; one that does not is refused as before. The
rule for migration authors:

- expand only (new tables, nullable columns or ones with a server default,
  indexes, wider types): name the oldest code the previous revision accepts;
- contracting (drop or rename, NOT NULL or a narrower type on an existing
  column, a constraint old code could break): name the revision itself.

This migration only adds a table that 0003's code never reads, so 0003's code
runs on it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bcpay.storage.migrate import record_compat

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schema_compat",
        sa.Column("revision", sa.Text(), nullable=False),
        sa.Column("oldest_code", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("revision", name=op.f("pk_schema_compat")),
    )
    record_compat(revision, oldest_code="0003")


def downgrade() -> None:
    op.drop_table("schema_compat")
