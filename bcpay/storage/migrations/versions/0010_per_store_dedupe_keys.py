"""event ids and webhook hashes are unique per store, so one store's traffic cannot silence another's

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27 09:00:00

``events.event_id`` and ``webhook_receipts.hash`` were unique over the whole
database. A store's notification URL takes events signed with that store's
CeleryPay secret; whoever holds one store's secret (its merchant, or a leak)
could send an event with the id of another store's event before CeleryPay
delivered it, and bcpay answered the real one "duplicate" and dropped it. The
same held for BigCommerce webhook hashes. Both keys are now unique per
store: ``(store_id, event_id)`` and ``(store_id, hash)``.

Code from 0008 on runs on it (the oldest code 0009 accepts): its inserts are
``ON CONFLICT DO NOTHING`` without a target, which any unique constraint
serves, and every row it writes carries its store, so a delivery repeated to
one store is still stored once. The downgrade puts the global keys back; it
first deletes the later of any rows that share an event id or hash across
stores (a receipt kept only for deduplication), which the old key forbids.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bcpay.storage.migrate import record_compat

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

KEYS = (("events", "event_id"), ("webhook_receipts", "hash"))


def upgrade() -> None:
    for table, column in KEYS:
        # SQLite changes a constraint only by recreating the table (batch mode).
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_constraint(f"uq_{table}_{column}", type_="unique")
            batch_op.create_unique_constraint(f"uq_{table}_store_id_{column}", ["store_id", column])
    record_compat(revision, oldest_code="0008")


def downgrade() -> None:
    for table, column in KEYS:
        # Names from KEYS above, never input.
        op.execute(sa.text(
            f"DELETE FROM {table} WHERE id IN (SELECT later.id FROM {table} later JOIN {table} earlier "  # noqa: S608
            f"ON earlier.{column} = later.{column} AND earlier.id < later.id)"
        ))
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_constraint(f"uq_{table}_store_id_{column}", type_="unique")
            batch_op.create_unique_constraint(f"uq_{table}_{column}", [column])
