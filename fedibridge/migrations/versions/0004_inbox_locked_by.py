"""inbox_items.locked_by: who leased a row, so a restarted server takes over a killed one's batch at once

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 04:20:00

Batches are hundreds of rows: after a kill -9 they would otherwise wait out their 5-minute lease. Nullable
without default (instant on both backends; old rows are not leased).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("inbox_items") as batch:
        batch.add_column(sa.Column("locked_by", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inbox_items") as batch:
        batch.drop_column("locked_by")
