"""Wizard-of-Oz condition: operator turns (who wrote them, the CTM's suggestion beside
them), the pending suggestion of a conversation, operator presence, and the claims that
let only one operator answer a conversation.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "wizard_claims",
        sa.Column("participant_id", sa.Integer(),
                  sa.ForeignKey("participants.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("admin_id", sa.Integer(), sa.ForeignKey("admins.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("claimed_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_wizard_claims_admin_id", "wizard_claims", ["admin_id"])
    # batch mode: SQLite cannot add a column with a foreign key in place
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("operator_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("operator_name", sa.String(100), nullable=True))
        batch.add_column(sa.Column("suggestion", sa.JSON(), nullable=True))
        batch.create_foreign_key("fk_messages_operator_id_admins", "admins",
                                 ["operator_id"], ["id"], ondelete="SET NULL")
    op.add_column("participants", sa.Column("wizard_pending", sa.JSON(), nullable=True))
    op.add_column("admins", sa.Column("wizard_seen_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    op.drop_column("admins", "wizard_seen_at")
    op.drop_column("participants", "wizard_pending")
    with op.batch_alter_table("messages") as batch:
        batch.drop_constraint("fk_messages_operator_id_admins", type_="foreignkey")
        batch.drop_column("suggestion")
        batch.drop_column("operator_name")
        batch.drop_column("operator_id")
    op.drop_index("ix_wizard_claims_admin_id", table_name="wizard_claims")
    op.drop_table("wizard_claims")
