"""Abuse guards: a shared throttle table, known researcher devices, disabled accounts,
participant activity (active time, idle expiry, session end), flood groups and exclusion.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "throttle",
        sa.Column("scope", sa.String(16), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.DateTime(), nullable=False),
        sa.Column("last_at", sa.DateTime(), nullable=False),
        sa.Column("blocked_until", sa.DateTime(), nullable=True),
        sa.Column("tag", sa.String(16), nullable=True),
    )
    op.create_index("ix_throttle_last_at", "throttle", ["last_at"])
    op.create_table(
        "admin_devices",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("admin_id", sa.Integer(),
                  sa.ForeignKey("admins.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_admin_devices_admin_id", "admin_devices", ["admin_id"])
    with op.batch_alter_table("admins") as batch:
        batch.add_column(sa.Column("disabled_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("participants") as batch:
        batch.add_column(sa.Column("last_active_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("active_s", sa.Float(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("session_ended_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("origin_group", sa.String(16), nullable=True))
        batch.add_column(sa.Column("excluded_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("exclusion_reason", sa.String(200), nullable=True))
    op.create_index("ix_participants_origin_group", "participants", ["origin_group"])


def downgrade() -> None:
    op.drop_index("ix_participants_origin_group", table_name="participants")
    with op.batch_alter_table("participants") as batch:
        for column in ("exclusion_reason", "excluded_at", "origin_group", "session_ended_at",
                       "active_s", "last_active_at"):
            batch.drop_column(column)
    with op.batch_alter_table("admins") as batch:
        batch.drop_column("disabled_at")
    op.drop_index("ix_admin_devices_admin_id", table_name="admin_devices")
    op.drop_table("admin_devices")
    op.drop_index("ix_throttle_last_at", table_name="throttle")
    op.drop_table("throttle")
