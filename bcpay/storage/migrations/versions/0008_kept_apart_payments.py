"""captures kept apart from a cancelled or deleted order say so, so their refunds leave the order alone

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 09:30:00

A payment captured after the merchant cancelled its order (``paid_after_cancel``)
or deleted it (``order_gone``) kept the outcome ``applied``, so a refund of it
moved the Cancelled order to Refunded (``effects.refund_status`` skips only
payments that did not pay their order). Such payments are now marked
``kept_apart`` when the worker meets them; this fills in the ones recorded
before, found by their anomaly.

Data only. Code from 0003 on runs on it: older code reads ``kept_apart`` as
"not the payment that paid the order" wherever it looks at the outcome (its
refund_status skips it, its double-payment check does not count it), as the
new code does. The downgrade leaves the rows as they are: the old code
treats them right, and no row can be told from one the new code marked.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bcpay.storage.migrate import record_compat

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(sa.text(
        "UPDATE payments SET outcome = 'kept_apart' WHERE outcome = 'applied' AND id IN "
        "(SELECT payment_id FROM anomalies WHERE kind IN ('paid_after_cancel', 'order_gone'))"
    ))
    record_compat(revision, oldest_code="0003")


def downgrade() -> None:
    pass  # see the docstring: the rows stay kept apart
