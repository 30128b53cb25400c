"""articles.image_length (the RSS enclosure's real size) and deliveries.last_attempt_at (latest error per host)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 23:59:00

Both nullable, no default: adding them is instant on PostgreSQL and SQLite, and old rows mean "unknown".
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("articles") as batch:
        batch.add_column(sa.Column("image_length", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("last_attempt_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("last_attempt_at")
    with op.batch_alter_table("articles") as batch:
        batch.drop_column("image_length")
