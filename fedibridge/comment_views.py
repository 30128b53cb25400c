"""Reading comments: the joined query, row → record, threading, and the JSON shapes of DESIGN §3.

The API, feeds, CLI and webhook all see comments through these, so a comment looks the same everywhere.
Read-only: nothing here changes a row (comments.py writes, reactions.py counts likes and boosts).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from sqlalchemy import func, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from .models import Attachment, Author, Comment
from .store import count, keyset_after
from .tables import articles, comments
from .vocab import Site, iso

PUBLIC_VISIBILITY = ("public", "unlisted")
_parent = comments.alias("parent")


def select_comments() -> Any:
    """Comments joined with their article's slug and URL (every reader needs them), and their parent's visibility."""
    parent_visibility = select(_parent.c.visibility).where(_parent.c.id == comments.c.parent_id).scalar_subquery()
    return select(comments, articles.c.slug.label("article_slug"), articles.c.url.label("article_url"),
                  articles.c.deleted.label("article_deleted"), parent_visibility.label("parent_visibility")
                  ).join(articles, comments.c.article_id == articles.c.id)


def comment_from_row(row: Any) -> Comment:
    """A joined comments row (see select_comments) as the plain record."""
    m = row._mapping if isinstance(row, Row) else row
    in_reply_to, parent_id = m["in_reply_to"], m["parent_id"]
    if m.get("parent_visibility") == "private" and m["visibility"] != "private":
        # A public reply to a followers-only or direct comment: shown as a reply to the article, so no
        # output (API, widget, feeds, webhook) names the private parent. The row keeps the real link.
        in_reply_to, parent_id = m.get("article_url") or "", None
    author = Author(
        id=m["author_id"], name=m["author_name"], handle=m["author_handle"], url=m["author_url"],
        avatar=m["author_avatar"], emojis=tuple((str(a), str(b)) for a, b in (m["author_emojis"] or ())),
    )
    return Comment(
        id=m["id"], article=m.get("article_slug") or "", ap_id=m["ap_id"], in_reply_to=in_reply_to,
        parent_id=parent_id, author=author, content_html=m["content_html"], published=m["published"],
        updated=m["updated"], status=m["status"], visibility=m["visibility"], language=m["language"],
        summary=m["summary"], sensitive=bool(m["sensitive"]), deleted=bool(m["deleted"]), edited=bool(m["edited"]),
        url=m["url"], attachments=tuple(Attachment(a["url"], a.get("media_type"), a.get("alt"))
                                        for a in m["attachments"] or ()),
        mentions=tuple(m["mentions"] or ()), hashtags=tuple(m["hashtags"] or ()),
    )


def threaded(items: Iterable[Comment]) -> list[Comment]:
    """Nest replies under their parents, oldest first; a reply whose parent isn't listed goes top level."""
    ordered = sorted(items, key=lambda c: (c.published, c.id))
    # Fresh comments (no replies yet) are nested as they are: copying thousands of them was most of the cost.
    nodes = {c.id: c if not c.replies else replace(c, replies=[]) for c in ordered}
    roots: list[Comment] = []
    for c in ordered:
        node = nodes[c.id]
        parent = nodes.get(c.parent_id) if c.parent_id is not None else None
        (parent.replies if parent is not None and parent is not node else roots).append(node)
    return roots


def prune_deleted(tree: list[Comment]) -> list[Comment]:
    """Deleted comments stay only as placeholders holding replies; deleted leaves vanish."""
    kept = []
    for c in tree:
        replies = prune_deleted(c.replies)
        c.replies[:] = replies
        if not c.deleted or replies:
            kept.append(c)
    return kept


def author_json(author: Author) -> dict[str, Any]:
    return {"id": author.id, "name": author.name, "handle": author.handle, "url": author.url,
            "avatar": author.avatar, "emojis": [{"shortcode": s, "url": u} for s, u in author.emojis]}


def _when(value: datetime | None) -> str | None:
    return iso(value) if value else None


def comment_json(c: Comment, *, admin: bool = False, nested: bool = True) -> dict[str, Any]:
    """The public shape (widget, webhook); ``admin`` adds moderation fields (DESIGN §3)."""
    author = author_json(c.author if admin or not c.deleted else Author(id=""))
    out: dict[str, Any] = {
        "id": c.id, "ap_id": c.ap_id, "url": c.url or c.ap_id, "in_reply_to": c.in_reply_to,
        "parent_id": c.parent_id, "author": author, "content_html": c.content_html, "summary": c.summary,
        "sensitive": c.sensitive, "language": c.language, "published": _when(c.published),
        "updated": _when(c.updated), "edited": c.edited, "deleted": c.deleted,
        "attachments": [{"url": a.url, "media_type": a.media_type, "alt": a.alt} for a in c.attachments],
        "mentions": list(c.mentions), "hashtags": list(c.hashtags),
    }
    if admin:
        out.update(article=c.article, status=c.status, visibility=c.visibility, likes=c.likes, boosts=c.boosts)
    if nested:
        out["replies"] = [comment_json(r, admin=admin) for r in c.replies]
    return out


async def get_comment(conn: AsyncConnection, comment_id: int) -> Comment | None:
    row = (await conn.execute(select_comments().where(comments.c.id == comment_id))).first()
    return comment_from_row(row) if row else None


async def find_article(conn: AsyncConnection, site: Site, ref: str) -> Any:
    """Our article by its object id ({base}/articles/{slug}) or by its blog URL (with or without '/')."""
    prefix = site.article_id("")
    if ref.startswith(prefix) and "/" not in ref[len(prefix):] and ref[len(prefix):]:
        row = (await conn.execute(select(articles).where(articles.c.slug == unquote(ref[len(prefix):])))).first()
        if row is not None:
            return row
    candidates = {ref, ref.rstrip("/"), ref.rstrip("/") + "/"}
    return (await conn.execute(select(articles).where(articles.c.url.in_(candidates))
                               .order_by(articles.c.id).limit(1))).first()


def _filtered(stmt: Any, *, status: str | None, slug: str | None, public_only: bool) -> Any:
    """The admin filters (status/article), or what public readers may see (approved, public, live)."""
    if status and status != "all":
        stmt = stmt.where(comments.c.status == status)
    if slug:
        stmt = stmt.where(articles.c.slug == slug)
    if public_only:
        stmt = stmt.where(comments.c.status == "approved", comments.c.visibility.in_(PUBLIC_VISIBILITY),
                          articles.c.deleted.is_(None))
    return stmt


async def list_comments(conn: AsyncConnection, *, status: str | None = None, slug: str | None = None,
                        public_only: bool = False, limit: int = 100, offset: int = 0,
                        newest_first: bool = True, after: tuple[datetime, int] | None = None) -> list[Comment]:
    """Comments filtered for the admin API (status/article) or for public readers (approved, public, live).

    `after` = (published, id) of the last comment of the previous page (keyset paging).
    """
    stmt = _filtered(select_comments(), status=status, slug=slug, public_only=public_only)
    if after is not None:
        stmt = stmt.where(keyset_after(comments.c.published, comments.c.id, after, descending=newest_first))
    order = (comments.c.published.desc(), comments.c.id.desc()) if newest_first else \
        (comments.c.published, comments.c.id)
    rows = await conn.execute(stmt.order_by(*order).limit(limit).offset(offset))
    return [comment_from_row(r) for r in rows]


async def count_comments(conn: AsyncConnection, *, status: str | None = None, slug: str | None = None) -> int:
    """How many comments list_comments would walk through with these filters (the API's `total`)."""
    stmt = select(func.count()).select_from(comments.join(articles, comments.c.article_id == articles.c.id))
    return await count(conn, _filtered(stmt, status=status, slug=slug, public_only=False))


async def public_thread(conn: AsyncConnection, article_id: int) -> list[Comment]:
    """What readers see under an article: approved public comments, threaded, deleted ones as placeholders."""
    rows = await conn.execute(select_comments().where(
        comments.c.article_id == article_id, comments.c.status == "approved",
        comments.c.visibility.in_(PUBLIC_VISIBILITY)))
    return prune_deleted(threaded(comment_from_row(r) for r in rows))
