"""articles.pinned_at (featured collection), actor_state (movedTo after `fedibridge move`), quotes (FEP-044f)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 03:30:00

The new column is nullable without default (instant on both backends; old rows are "not pinned").
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("articles") as batch:
        batch.add_column(sa.Column("pinned_at", sa.DateTime(), nullable=True))
    op.create_table(
        "actor_state",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_actor_state")),
    )
    op.create_table(
        "quotes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("article_id", sa.Integer(), nullable=False),
        sa.Column("ap_id", sa.Text(), nullable=False),
        sa.Column("auth_key", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=True),
        sa.Column("actor_id", sa.Text(), nullable=False),
        sa.Column("author_name", sa.Text(), nullable=True),
        sa.Column("author_handle", sa.Text(), nullable=True),
        sa.Column("author_url", sa.Text(), nullable=True),
        sa.Column("author_avatar", sa.Text(), nullable=True),
        sa.Column("content_html", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("language", sa.String(length=35), nullable=True),
        sa.Column("visibility", sa.String(length=10), nullable=False),
        sa.Column("published", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["article_id"], ["articles.id"], name=op.f("fk_quotes_article_id_articles"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quotes")),
        sa.UniqueConstraint("ap_id", name=op.f("uq_quotes_ap_id")),
        sa.UniqueConstraint("auth_key", name=op.f("uq_quotes_auth_key")),
    )
    op.create_index("ix_quotes_article", "quotes", ["article_id"])
    op.create_index(op.f("ix_quotes_actor_id"), "quotes", ["actor_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_quotes_actor_id"), table_name="quotes")
    op.drop_index("ix_quotes_article", table_name="quotes")
    op.drop_table("quotes")
    op.drop_table("actor_state")
    with op.batch_alter_table("articles") as batch:
        batch.drop_column("pinned_at")
