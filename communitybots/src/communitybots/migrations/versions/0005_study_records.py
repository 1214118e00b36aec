"""What a study needs and the records it keeps: questionnaire phases (pre/post), panel
ids, the chat's start, word counts kept through a purge, and the audit log.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("answers", sa.Column("phase", sa.String(8), nullable=False,
                                       server_default="post"))
    op.add_column("messages", sa.Column("words", sa.Integer(), nullable=True))
    op.add_column("participants", sa.Column("panel_id", sa.String(100), nullable=True))
    op.add_column("participants", sa.Column("panel_data", sa.JSON(), nullable=True))
    op.add_column("participants", sa.Column("chat_started_at", sa.DateTime(), nullable=True))
    op.add_column("participants", sa.Column("purged_at", sa.DateTime(), nullable=True))
    op.create_index("ix_participants_panel_id", "participants", ["panel_id"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(120), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("participant", sa.String(32), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_participant", "audit_log", ["participant"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_participant", table_name="audit_log")
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_index("ix_participants_panel_id", table_name="participants")
    for column in ("purged_at", "chat_started_at", "panel_data", "panel_id"):
        op.drop_column("participants", column)
    op.drop_column("messages", "words")
    op.drop_column("answers", "phase")
