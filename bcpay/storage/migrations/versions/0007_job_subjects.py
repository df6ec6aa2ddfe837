"""jobs name what they are about, so two processes never run jobs of one payment at once

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 08:00:00

A worker ran the jobs of one payment (or one order) one at a time only inside
its own process. With a separate ``bcpay worker`` beside ``serve``, or several
hosts, two refunds' status jobs were claimed by two processes, both read the
order's old status and both wrote it: two PUTs, two staff notes.
``jobs.subject`` (``payment:<id>``, else ``order:<store id>:<order id>``, else
NULL; later code names the order first, so all jobs of one order share it:
``outbox.subject_of``) is written at enqueue, and the claim leases no job while another job of
its subject is leased (``outbox.claim``); the index serves that check.

Code from 0003 on runs on it. The column is nullable with no default and the
index constrains nothing, so the old code's inserts (which leave it NULL) and
its claims (which never read it) work as before. A NULL subject means "about
nothing in particular" to the new claim (``NULL = NULL`` is never true), so
the jobs the old code writes are claimed exactly as before the upgrade, and an
old process still claiming beside new ones runs jobs of one payment at once no
more often than before the upgrade: the new rule only does not cover it yet.
Existing rows are not filled in: a job queued before the upgrade is claimed
as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bcpay.storage.migrate import record_compat

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("subject", sa.String(length=64), nullable=True))
    op.create_index(op.f("ix_jobs_subject"), "jobs", ["subject"], unique=False)
    record_compat(revision, oldest_code="0003")


def downgrade() -> None:
    op.drop_index(op.f("ix_jobs_subject"), table_name="jobs")
    # SQLite drops a column only by recreating the table (batch mode).
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("subject")
