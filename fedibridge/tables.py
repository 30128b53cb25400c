"""SQLAlchemy Core tables: the whole persistent state, the delivery queue included.

Kept apart from store.py so Alembic's env and every module can import the schema without an engine.
Datetimes are stored as naive UTC and returned aware, so SQLite and PostgreSQL behave the same.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from .jsontext import dumps

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# A queue row waiting for a worker: the predicate of the partial indexes below. Queries meant to use them
# spell 'pending' out (worker.Queue.due): neither PostgreSQL's generic plans nor SQLite match an index's
# WHERE against a bound parameter.
PENDING = text("state = 'pending'")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class JSONText(TypeDecorator[Any]):
    """JSON stored as UTF-8 text (not escaped), identical on SQLite and PostgreSQL."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else dumps(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        """orjson: a burst's payloads and a hot thread's columns are read thousands at a time."""
        if value is None:
            return None
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:  # what orjson refuses and json reads (a lone surrogate escape)
            return json.loads(value)


articles = Table(
    "articles",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("slug", String(200), nullable=False, unique=True),
    Column("title", Text, nullable=False),
    Column("url", Text, nullable=False),
    Column("content", Text, nullable=False),
    Column("summary", Text),
    Column("tags", JSONText, nullable=False, default=list),
    Column("language", String(35)),
    Column("image", Text),
    Column("image_alt", Text),
    Column("image_length", BigInteger),  # bytes, from a HEAD when published; None when unknown
    Column("sensitive", Boolean, nullable=False, default=False),
    Column("content_warning", Text),
    Column("published", UTCDateTime, nullable=False),
    Column("updated", UTCDateTime),
    Column("deleted", UTCDateTime),
    Column("content_hash", String(64), nullable=False),
    Column("source", String(20), nullable=False, default="api"),
    Column("source_guid", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("pinned_at", UTCDateTime),  # in the actor's featured collection since then (pins.py); None: not pinned
)

activities = Table(
    "activities",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("key", String(64), nullable=False, unique=True),
    Column("type", String(32), nullable=False),
    Column("object_id", Text),
    Column("article_id", Integer, ForeignKey("articles.id", ondelete="SET NULL")),
    Column("payload", JSONText, nullable=False),
    Column("in_outbox", Boolean, nullable=False, default=True),
    Column("published", UTCDateTime, nullable=False),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("activity_id", Integer, ForeignKey("activities.id", ondelete="CASCADE")),
    Column("kind", String(10), nullable=False, default="ap"),  # ap | webhook
    Column("inbox", Text, nullable=False),
    Column("host", String(255), nullable=False),
    Column("body", Text),  # webhook payload (ap deliveries use the activity's payload)
    Column("state", String(12), nullable=False, default="pending"),  # pending | done | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("locked_until", UTCDateTime),
    Column("locked_by", String(64)),
    Column("last_status", Integer),
    Column("last_error", Text),
    Column("last_attempt_at", UTCDateTime),  # when last_status/last_error were recorded
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    UniqueConstraint("activity_id", "inbox", name="uq_deliveries_activity_inbox"),
    Index("ix_deliveries_due", "state", "next_attempt_at"),
    # The claim's order, pending rows only: a claim reads its batch, not the whole backlog (worker.claim).
    Index("ix_deliveries_pending", "next_attempt_at", "id", sqlite_where=PENDING, postgresql_where=PENDING),
    Index("ix_deliveries_host", "host"),
)

domains = Table(
    "domains",
    metadata,
    Column("host", String(255), primary_key=True),
    Column("failing_since", UTCDateTime),
    Column("last_success", UTCDateTime),
    Column("unavailable", Boolean, nullable=False, default=False),
)

followers = Table(
    "followers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("actor_id", Text, nullable=False, unique=True),
    Column("handle", Text),
    Column("inbox", Text, nullable=False),
    Column("shared_inbox", Text),
    Column("follow_id", Text),
    Column("since", UTCDateTime, nullable=False),
)

inbox_items = Table(
    "inbox_items",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("ap_id", Text, nullable=False, unique=True),
    Column("type", String(40), nullable=False),
    Column("actor", Text, nullable=False),
    Column("key_owner", Text),
    Column("payload", JSONText, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("state", String(12), nullable=False, default="pending"),  # pending | done | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("locked_until", UTCDateTime),
    Column("locked_by", Text),  # the worker holding the lease (a dead local one's rows are reaped at once)
    Column("error", Text),
    Index("ix_inbox_items_due", "state", "next_attempt_at"),
    Index("ix_inbox_items_pending", "id", sqlite_where=PENDING, postgresql_where=PENDING),  # as ix_deliveries_pending
)

comments = Table(
    "comments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("article_id", Integer, ForeignKey("articles.id", ondelete="CASCADE"), nullable=False),
    Column("ap_id", Text, nullable=False, unique=True),
    Column("in_reply_to", Text, nullable=False),
    Column("parent_id", Integer, ForeignKey("comments.id", ondelete="SET NULL")),
    Column("author_id", Text, nullable=False),
    Column("author_name", Text),
    Column("author_handle", Text),
    Column("author_url", Text),
    Column("author_avatar", Text),
    Column("author_emojis", JSONText),
    Column("content_html", Text, nullable=False),
    Column("summary", Text),
    Column("sensitive", Boolean, nullable=False, default=False),
    Column("language", String(35)),
    Column("url", Text),
    Column("attachments", JSONText),
    Column("mentions", JSONText),
    Column("hashtags", JSONText),
    Column("published", UTCDateTime, nullable=False),
    Column("updated", UTCDateTime),
    Column("status", String(10), nullable=False, default="pending"),
    Column("visibility", String(10), nullable=False, default="public"),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("edited", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_comments_article_status", "article_id", "status"),
    Index("ix_comments_author_status", "author_id", "status"),  # an author's comments; is one approved (moderation)
)

reactions = Table(
    "reactions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("article_id", Integer, ForeignKey("articles.id", ondelete="CASCADE"), nullable=False),
    Column("actor_id", Text, nullable=False),
    Column("type", String(10), nullable=False),  # like | boost
    Column("ap_id", Text, nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_reactions_article", "article_id", "type"),
)

blocks = Table(
    "blocks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(10), nullable=False),  # domain | actor
    Column("value", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("kind", "value", name="uq_blocks_kind_value"),
)

leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)

feed_state = Table(
    "feed_state",
    metadata,
    Column("url", String(2048), primary_key=True),
    Column("etag", Text),
    Column("last_modified", Text),
    Column("last_polled", UTCDateTime),
    Column("last_error", Text),
)

# Named values about the blog's own actor that change at run time (account_move.py: moved_to).
actor_state = Table(
    "actor_state",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", JSONText, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Accepted quote posts of our articles (FEP-044f, quotes.py): one row per quoting note, whose
# QuoteAuthorization is served at /quote_authorizations/{auth_key} while the row exists.
quotes = Table(
    "quotes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("article_id", Integer, ForeignKey("articles.id", ondelete="CASCADE"), nullable=False),
    Column("ap_id", Text, nullable=False, unique=True),  # the quoting note
    Column("auth_key", String(64), nullable=False, unique=True),
    Column("request_id", Text),
    Column("actor_id", Text, nullable=False, index=True),
    Column("author_name", Text),
    Column("author_handle", Text),
    Column("author_url", Text),
    Column("author_avatar", Text),
    Column("content_html", Text, nullable=False),
    Column("url", Text),
    Column("language", String(35)),
    Column("visibility", String(10), nullable=False, default="public"),
    Column("published", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_quotes_article", "article_id"),
)
