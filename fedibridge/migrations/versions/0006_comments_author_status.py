"""Comments indexed by (author_id, status) instead of author_id: whether an author is known is one probe

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 19:20:00

Moderation asks, for every batch of replies, which authors have an approved comment. With author_id alone
PostgreSQL read every comment of each author to answer (44 ms a batch with 1,600 comments an author, growing
with the blog's history); with the status in the index it is one probe an author. The new index serves every
lookup by author the old one served, so the old one goes.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_comments_author_status", "comments", ["author_id", "status"])
    op.drop_index("ix_comments_author_id", "comments")


def downgrade() -> None:
    op.create_index("ix_comments_author_id", "comments", ["author_id"])
    op.drop_index("ix_comments_author_status", "comments")
