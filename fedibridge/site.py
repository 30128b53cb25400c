"""Who the bridge speaks for and where its documents live: the fixed URL layout of the blog actor.

Routes, vocab, feeds and tests all derive URLs from here, so the layout is written down once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from .config import ContentMode, ObjectType, QuotePolicy


@dataclass(frozen=True)
class Site:
    """Who the bridge speaks for, and where its documents live (fixed URL layout)."""

    base_url: str
    domain: str
    username: str
    name: str
    summary: str
    blog_url: str
    public_key_pem: str
    published: datetime
    icon_url: str | None = None
    header_url: str | None = None
    object_type: ObjectType = "Note"
    content_mode: ContentMode = "excerpt"
    discoverable: bool = True
    indexable: bool = True
    tag_url_template: str = "{blog_url}/tag/{tag}/"
    language: str | None = None  # default content language
    also_known_as: tuple[str, ...] = ()  # former accounts (alsoKnownAs): lets their followers move here
    attribution_domains: tuple[str, ...] = ()  # sites whose link previews credit this actor (Mastodon 4.4)
    quote_policy: QuotePolicy = "public"  # who may quote articles (FEP-044f)

    @property
    def base(self) -> str:
        return self.base_url.rstrip("/")

    @property
    def actor_id(self) -> str:
        return f"{self.base}/users/{quote(self.username, safe='')}"

    @property
    def key_id(self) -> str:
        return f"{self.actor_id}#main-key"

    @property
    def inbox(self) -> str:
        return f"{self.actor_id}/inbox"

    @property
    def shared_inbox(self) -> str:
        return f"{self.base}/inbox"

    @property
    def outbox(self) -> str:
        return f"{self.actor_id}/outbox"

    @property
    def followers(self) -> str:
        return f"{self.actor_id}/followers"

    @property
    def following(self) -> str:
        return f"{self.actor_id}/following"

    @property
    def featured(self) -> str:
        return f"{self.actor_id}/collections/featured"

    @property
    def handle(self) -> str:
        return f"@{self.username}@{self.domain}"

    @property
    def quote_approval(self) -> list[str]:
        """Who may quote articles without asking (FEP-044f), as Mastodon 4.5 writes it: the public collection,
        our followers collection, or only the author itself (nobody else)."""
        if self.quote_policy == "public":
            return ["https://www.w3.org/ns/activitystreams#Public"]
        if self.quote_policy == "followers":
            return [self.followers]
        return [self.actor_id]

    def article_id(self, slug: str) -> str:
        return f"{self.base}/articles/{quote(slug, safe='')}"

    def replies_id(self, slug: str) -> str:
        return f"{self.article_id(slug)}/replies"

    def activity_id(self, activity_key: str) -> str:
        return f"{self.base}/activities/{quote(activity_key, safe='')}"

    def quote_authorization_id(self, key: str) -> str:
        return f"{self.base}/quote_authorizations/{quote(key, safe='')}"

    def tag_url(self, tag: str) -> str:
        return self.tag_url_template.format(blog_url=self.blog_url.rstrip("/"), tag=quote(tag, safe=""))
