"""BigCommerce's refund id on bcpay's refund rows, and existing stores kept off the refund ledger

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 23:50:00

Refunds now go through BigCommerce's own refund ledger both ways (reference
section 12): a refund a merchant makes in the control panel is made at
CeleryPay, and one bcpay makes is written to the ledger.
``refunds.bc_refund_id`` is BigCommerce's refund id for the row, either way:
the refund it came from, or the one bcpay wrote. It is how a refund is never
made twice and how the webhook bcpay's own write fires is told apart.

``payments.refund_from_bigcommerce`` is on by default for new stores; a store
registered before this revision keeps what it had (refunds from bcpay only,
``refund_on_status`` as set), so the upgrade changes no merchant's refunds by
itself: its settings get ``refund_from_bigcommerce = false`` unless they name it.

It adds a nullable column and a settings key older code does not read (it
reads store settings by name), so code from 0008 on runs on it.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

from bcpay.storage.migrate import record_compat

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

KEY = "refund_from_bigcommerce"
_stores = sa.table("stores", sa.column("id", sa.Integer()), sa.column("settings_json", sa.Text()))


def upgrade() -> None:
    with op.batch_alter_table("refunds") as batch_op:
        batch_op.add_column(sa.Column("bc_refund_id", sa.BigInteger(), nullable=True))
    conn = op.get_bind()
    for store_id, raw in conn.execute(sa.select(_stores.c.id, _stores.c.settings_json)).all():
        settings = json.loads(str(raw or "{}"))
        if KEY not in settings:
            settings[KEY] = False
            conn.execute(sa.update(_stores).where(_stores.c.id == store_id)
                         .values(settings_json=json.dumps(settings, sort_keys=True)))
    record_compat(revision, oldest_code="0008")


def downgrade() -> None:
    with op.batch_alter_table("refunds") as batch_op:
        batch_op.drop_column("bc_refund_id")
