"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-25 19:36:58.703966
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import bcpay.storage.schema


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('stores',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('store_hash', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=255), server_default='', nullable=False),
    sa.Column('store_url', sa.String(length=512), server_default='', nullable=False),
    sa.Column('control_panel_url', sa.String(length=512), server_default='', nullable=False),
    sa.Column('currency', sa.String(length=3), server_default='', nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('access_token_enc', sa.Text(), nullable=True),
    sa.Column('scopes', sa.Text(), server_default='', nullable=False),
    sa.Column('owner_email', sa.String(length=255), server_default='', nullable=False),
    sa.Column('installed', sa.Boolean(), server_default=sa.text('(true)'), nullable=False),
    sa.Column('celerypay_merchant_id', sa.String(length=64), nullable=True),
    sa.Column('celerypay_secret_enc', sa.Text(), nullable=True),
    sa.Column('celerypay_old_secret_enc', sa.Text(), nullable=True),
    sa.Column('celerypay_old_secret_until', bcpay.storage.schema.UTCDateTime(), nullable=True),
    sa.Column('celerypay_environment', sa.String(length=16), server_default='sandbox', nullable=False),
    sa.Column('webhook_secret_enc', sa.Text(), nullable=True),
    sa.Column('settings_json', sa.Text(), server_default='{}', nullable=False),
    sa.Column('script_uuid', sa.String(length=64), nullable=True),
    sa.Column('script_hash', sa.String(length=128), nullable=True),
    sa.Column('last_notification_at', bcpay.storage.schema.UTCDateTime(), nullable=True),
    sa.Column('installed_at', bcpay.storage.schema.UTCDateTime(), nullable=False),
    sa.Column('uninstalled_at', bcpay.storage.schema.UTCDateTime(), nullable=True),
    sa.Column('updated_at', bcpay.storage.schema.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stores')),
    sa.UniqueConstraint('store_hash', name=op.f('uq_stores_store_hash'))
    )
    op.create_table('events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('store_id', sa.Integer(), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('celerypay_payment_id', sa.String(length=64), nullable=True),
    sa.Column('raw_body', sa.Text(), nullable=False),
    sa.Column('outcome', sa.String(length=32), nullable=False),
    sa.Column('received_at', bcpay.storage.schema.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['store_id'], ['stores.id'], name=op.f('fk_events_store_id_stores')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_events')),
    sa.UniqueConstraint('event_id', name=op.f('uq_events_event_id'))
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_received', ['received_at'], unique=False)

    op.create_table('jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('store_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('dedupe_key', sa.String(length=160), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('run_after', bcpay.storage.schema.UTCDateTime(), nullable=False),
    sa.Column('lease_owner', sa.String(length=64), nullable=True),
    sa.Column('lease_until', bcpay.storage.schema.UTCDateTime(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', bcpay.storage.schema.UTCDateTime(), nullable=False),
    sa.Column('updated_at', bcpay.storage.schema.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['store_id'], ['stores.id'], name=op.f('fk_jobs_store_id_stores')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs')),
    sa.UniqueConstraint('dedupe_key', name=op.f('uq_jobs_dedupe_key'))
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_due', ['state', 'run_after'], unique=False)

    op.create_table('payments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token', sa.String(length=64), nullable=False),
    sa.Column('store_id', sa.Integer(), nullable=False),
    sa.Column('order_id', sa.BigInteger(), nullable=False),
    sa.Column('attempt_no', sa.Integer(), nullable=False),
    sa.Column('merchant_order_no', sa.String(length=64), nullable=False),
    sa.Column('idempotency_key', sa.String(length=64), nullable=False),
    sa.Column('celerypay_id', sa.String(length=64), nullable=True),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('status', sa.String(length=24), nullable=False),
    sa.Column('paid_amount', sa.BigInteger(), nullable=True),
    sa.Column('refunded_amount', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('cashier_url', sa.Text(), nullable=True),
    sa.Column('expires_at', bcpay.storage.schema.UTCDateTime(), nullable=True),
    sa.Column('failure_code', sa.String(length=64), nullable=True),
    sa.Column('failure_message', sa.Text(), nullable=True),
    sa.Column('celerypay_updated_at', bcpay.storage.schema.UTCDateTime(), nullable=True),
    sa.Column('last_checked_at', bcpay.storage.schema.UTCDateTime(), nullable=True),
    sa.Column('outcome', sa.String(length=24), nullable=True),
    sa.Column('created_at', bcpay.storage.schema.UTCDateTime(), nullable=False),
    sa.Column('updated_at', bcpay.storage.schema.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['store_id'], ['stores.id'], name=op.f('fk_payments_store_id_stores')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payments')),
    sa.UniqueConstraint('celerypay_id', name=op.f('uq_payments_celerypay_id')),
    sa.UniqueConstraint('merchant_order_no', name=op.f('uq_payments_merchant_order_no')),
    sa.UniqueConstraint('store_id', 'order_id', 'attempt_no', name=op.f('uq_payments_store_id_order_id_attempt_no')),
    sa.UniqueConstraint('token', name=op.f('uq_payments_token'))
    )
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.create_index('ix_payments_status_expires', ['status', 'expires_at'], unique=False)
        batch_op.create_index('ix_payments_store_order', ['store_id', 'order_id'], unique=False)
        batch_op.create_index('uq_payments_one_open', ['store_id', 'order_id'], unique=True, sqlite_where=sa.text("status IN ('creating', 'pending')"), postgresql_where=sa.text("status IN ('creating', 'pending')"))

    op.create_table('store_users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('store_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('email', sa.String(length=255), server_default='', nullable=False),
    sa.Column('is_owner', sa.Boolean(), server_default=sa.text('(false)'), nullable=False),
    sa.Column('last_seen_at', bcpay.storage.schema.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['store_id'], ['stores.id'], name=op.f('fk_store_users_store_id_stores'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_store_users')),
    sa.UniqueConstraint('store_id', 'user_id', name=op.f('uq_store_users_store_id_user_id'))
    )
    op.create_table('webhook_receipts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('hash', sa.String(length=128), nullable=False),
    sa.Column('store_id', sa.Integer(), nullable=False),
    sa.Column('scope', sa.String(length=64), nullable=False),
    sa.Column('received_at', bcpay.storage.schema.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['store_id'], ['stores.id'], name=op.f('fk_webhook_receipts_store_id_stores')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_receipts')),
    sa.UniqueConstraint('hash', name=op.f('uq_webhook_receipts_hash'))
    )
    op.create_table('anomalies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('store_id', sa.Integer(), nullable=False),
    sa.Column('order_id', sa.BigInteger(), nullable=False),
    sa.Column('payment_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('state', sa.String(length=16), server_default='open', nullable=False),
    sa.Column('detail', sa.Text(), server_default='', nullable=False),
    sa.Column('created_at', bcpay.storage.schema.UTCDateTime(), nullable=False),
    sa.Column('resolved_at', bcpay.storage.schema.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['payment_id'], ['payments.id'], name=op.f('fk_anomalies_payment_id_payments')),
    sa.ForeignKeyConstraint(['store_id'], ['stores.id'], name=op.f('fk_anomalies_store_id_stores')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_anomalies')),
    sa.UniqueConstraint('payment_id', 'kind', name=op.f('uq_anomalies_payment_id_kind'))
    )
    op.create_table('audit_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('store_id', sa.Integer(), nullable=False),
    sa.Column('order_id', sa.BigInteger(), nullable=False),
    sa.Column('payment_id', sa.Integer(), nullable=True),
    sa.Column('from_status_id', sa.Integer(), nullable=True),
    sa.Column('to_status_id', sa.Integer(), nullable=True),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.Text(), server_default='', nullable=False),
    sa.Column('created_at', bcpay.storage.schema.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['payment_id'], ['payments.id'], name=op.f('fk_audit_log_payment_id_payments')),
    sa.ForeignKeyConstraint(['store_id'], ['stores.id'], name=op.f('fk_audit_log_store_id_stores')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index('ix_audit_order', ['store_id', 'order_id'], unique=False)

    op.create_table('refunds',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('payment_id', sa.Integer(), nullable=False),
    sa.Column('merchant_refund_no', sa.String(length=64), nullable=False),
    sa.Column('idempotency_key', sa.String(length=64), nullable=False),
    sa.Column('celerypay_id', sa.String(length=64), nullable=True),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), server_default='', nullable=False),
    sa.Column('created_at', bcpay.storage.schema.UTCDateTime(), nullable=False),
    sa.Column('updated_at', bcpay.storage.schema.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['payment_id'], ['payments.id'], name=op.f('fk_refunds_payment_id_payments')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_refunds')),
    sa.UniqueConstraint('celerypay_id', name=op.f('uq_refunds_celerypay_id')),
    sa.UniqueConstraint('merchant_refund_no', name=op.f('uq_refunds_merchant_refund_no'))
    )


def downgrade() -> None:
    op.drop_table('refunds')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_order')

    op.drop_table('audit_log')
    op.drop_table('anomalies')
    op.drop_table('webhook_receipts')
    op.drop_table('store_users')
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.drop_index('uq_payments_one_open', sqlite_where=sa.text("status IN ('creating', 'pending')"), postgresql_where=sa.text("status IN ('creating', 'pending')"))
        batch_op.drop_index('ix_payments_store_order')
        batch_op.drop_index('ix_payments_status_expires')

    op.drop_table('payments')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_due')

    op.drop_table('jobs')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_received')

    op.drop_table('events')
    op.drop_table('stores')
