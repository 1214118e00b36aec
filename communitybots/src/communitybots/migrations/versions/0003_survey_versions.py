"""Survey versions: a label per stored survey, and the version (content hash and label)
with every participant and message; rows stored before are filled in from ``surveys``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("surveys", sa.Column("label", sa.String(100), nullable=False,
                                       server_default=""))
    for table in ("participants", "messages"):
        op.add_column(table, sa.Column("survey_hash", sa.String(64), nullable=True))
        op.add_column(table, sa.Column("survey_version", sa.String(100), nullable=True))
    # surveys stored before had no label: the start of their hash stands for it
    op.execute("UPDATE surveys SET label = substr(spec_hash, 1, 12) WHERE label = ''")
    op.execute("UPDATE participants SET "
               "survey_hash = (SELECT spec_hash FROM surveys WHERE surveys.id = participants.survey_pk), "
               "survey_version = (SELECT label FROM surveys WHERE surveys.id = participants.survey_pk)")
    op.execute("UPDATE messages SET "
               "survey_hash = (SELECT survey_hash FROM participants p WHERE p.id = messages.participant_id), "
               "survey_version = (SELECT survey_version FROM participants p WHERE p.id = messages.participant_id)")
    op.create_index("ix_participants_survey_hash", "participants", ["survey_hash"])


def downgrade() -> None:
    # plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35): a batch copy of ``surveys`` would
    # have to drop a table that participants' rows still reference
    op.drop_index("ix_participants_survey_hash", table_name="participants")
    for table in ("messages", "participants"):
        op.drop_column(table, "survey_version")
        op.drop_column(table, "survey_hash")
    op.drop_column("surveys", "label")
