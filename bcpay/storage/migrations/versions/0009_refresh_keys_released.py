"""done snippet updates let go of their dedupe keys, so a snippet version that comes back is installed again

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 11:45:00

A ``refresh_script`` job's dedupe key (store and snippet version) stayed on
the row once done, so when a store's snippet came back to a version it had
had before (a method name changed and changed back), the worker could queue
no update and the store kept the other version's tag. Done jobs now clear
that key; this clears it on the ones done before.

Data only, but the oldest code it accepts is 0008's, not 0003's: code from
before 0008 does not know refunds held ``in_doubt`` and would count their
amounts as free to refund again, so it must not restart on this schema
(0008 itself named 0003 and let it). Code from 0008 on queues an update
whose key is free again, as the new code does. The downgrade leaves the keys
cleared: a done job's key guards nothing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bcpay.storage.migrate import record_compat

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(sa.text("UPDATE jobs SET dedupe_key = NULL WHERE kind = 'refresh_script' AND state = 'done'"))
    record_compat(revision, oldest_code="0008")


def downgrade() -> None:
    pass  # see the docstring
