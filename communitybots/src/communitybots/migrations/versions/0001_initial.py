"""Initial schema: surveys, participants, messages, events, answers, admins.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "surveys",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("spec_id", sa.String(100), nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("spec_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("spec_json", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "participants",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("public_id", sa.String(32), nullable=False, unique=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("survey_pk", sa.Integer(), sa.ForeignKey("surveys.id"), nullable=False),
        sa.Column("condition", sa.String(16), nullable=False),
        sa.Column("assignment", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("state_json", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("next_seq", sa.Integer(), nullable=False),
        sa.Column("next_turn", sa.Integer(), nullable=False),
        sa.Column("completion_code", sa.String(32), nullable=True),
        sa.Column("consented_at", sa.DateTime(), nullable=False),
        sa.Column("chat_finished_at", sa.DateTime(), nullable=True),
        sa.Column("completed_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_participants_survey_pk", "participants", ["survey_pk"])
    op.create_table(
        "messages",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("participant_id", sa.Integer(),
                  sa.ForeignKey("participants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("turn", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=True),
        sa.Column("agent_id", sa.String(100), nullable=True),
        sa.Column("agent_name", sa.String(200), nullable=True),
        sa.Column("topic_id", sa.String(100), nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("intent", sa.String(32), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("q_length", sa.Float(), nullable=True),
        sa.Column("q_informativeness", sa.Float(), nullable=True),
        sa.Column("q_relevance", sa.Float(), nullable=True),
        sa.Column("q_specificity", sa.Float(), nullable=True),
        sa.Column("q_gibberish", sa.Float(), nullable=True),
        sa.Column("q_overall", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("participant_id", "seq", name="uq_messages_participant_seq"),
        sa.UniqueConstraint("participant_id", "client_id",
                            name="uq_messages_participant_client"),
    )
    op.create_index("ix_messages_participant_id", "messages", ["participant_id"])
    op.create_index("ix_messages_created_at", "messages", ["created_at"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("participant_id", sa.Integer(),
                  sa.ForeignKey("participants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("turn", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("agent_id", sa.String(100), nullable=True),
        sa.Column("topic_id", sa.String(100), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("participant_id", "seq", name="uq_events_participant_seq"),
    )
    op.create_index("ix_events_participant_id", "events", ["participant_id"])
    op.create_table(
        "answers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("participant_id", sa.Integer(),
                  sa.ForeignKey("participants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("item_id", sa.String(100), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("participant_id", "item_id", name="uq_answers_participant_item"),
    )
    op.create_index("ix_answers_participant_id", "answers", ["participant_id"])
    op.create_table(
        "admins",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("username", sa.String(100), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(300), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_login_at", sa.DateTime(), nullable=True),
    )
    op.create_table(
        "admin_sessions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("admin_id", sa.Integer(),
                  sa.ForeignKey("admins.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_admin_sessions_admin_id", "admin_sessions", ["admin_id"])


def downgrade() -> None:
    for index, table in (
        ("ix_admin_sessions_admin_id", "admin_sessions"),
        ("ix_answers_participant_id", "answers"),
        ("ix_events_participant_id", "events"),
        ("ix_messages_created_at", "messages"),
        ("ix_messages_participant_id", "messages"),
        ("ix_participants_survey_pk", "participants"),
    ):
        op.drop_index(index, table_name=table)
    for table in ("admin_sessions", "admins", "answers", "events", "messages",
                  "participants", "surveys"):
        op.drop_table(table)
