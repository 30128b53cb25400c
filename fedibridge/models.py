"""Plain records passed between modules.

Storage returns these, pure code (vocab, feeds, comments) consumes them, so no module needs
to know SQL rows or JSON shapes of another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Article:
    """A blog article as the bridge publishes it."""

    slug: str
    title: str
    url: str
    content: str  # sanitised HTML
    published: datetime
    updated: datetime | None = None
    summary: str | None = None  # excerpt (plain text or HTML)
    tags: tuple[str, ...] = ()
    language: str | None = None
    image: str | None = None
    image_alt: str | None = None
    sensitive: bool = False
    content_warning: str | None = None
    deleted: datetime | None = None
    likes: int = 0
    boosts: int = 0
    image_length: int | None = None  # bytes, when a HEAD of the image told us


@dataclass(frozen=True)
class Author:
    """A remote fediverse account as shown next to a comment."""

    id: str
    name: str | None = None
    handle: str | None = None  # "@user@host"
    url: str | None = None
    avatar: str | None = None
    emojis: tuple[tuple[str, str], ...] = ()  # (":shortcode:", image URL)


@dataclass(frozen=True)
class Attachment:
    url: str
    media_type: str | None = None
    alt: str | None = None


@dataclass(frozen=True)
class Comment:
    """A fediverse reply stored as a blog comment."""

    id: int
    article: str  # article slug
    ap_id: str
    in_reply_to: str
    parent_id: int | None
    author: Author
    content_html: str
    published: datetime
    updated: datetime | None = None
    status: str = "pending"  # pending | approved | rejected
    visibility: str = "public"  # public | unlisted | private
    language: str | None = None
    summary: str | None = None  # content warning
    sensitive: bool = False
    deleted: bool = False
    edited: bool = False
    url: str | None = None
    attachments: tuple[Attachment, ...] = ()
    mentions: tuple[str, ...] = ()
    hashtags: tuple[str, ...] = ()
    likes: int = 0
    boosts: int = 0
    replies: list[Comment] = field(default_factory=list)


@dataclass(frozen=True)
class Follower:
    actor_id: str
    inbox: str
    shared_inbox: str | None
    handle: str | None
    since: datetime
