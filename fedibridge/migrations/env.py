"""Alembic environment: runs on the connection fedibridge hands over (sync side of the async engine)."""

from __future__ import annotations

from alembic import context

from fedibridge.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # `alembic revision --autogenerate` during development
    from sqlalchemy import create_engine

    url = context.config.get_main_option("sqlalchemy.url") or "sqlite:///migrations-dev.db"
    connection = create_engine(url).connect()

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
