"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import bcpay.storage.schema
from bcpay.storage.migrate import record_compat

${imports if imports else ""}
revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}
    # The oldest code that can run on this schema (migrate.record_compat): for an expand-only migration
    # the oldest code the previous revision accepts, for a contracting one (or when unsure) this revision.
    record_compat(revision, oldest_code=revision)


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
