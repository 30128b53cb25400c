"""Read-only queries behind the admin page: comment search with thread context, article statistics,
followers and delivery health. Writes go through the core (comments.py, moderation.py), never here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from ...comment_views import comment_from_row, select_comments
from ...hosts import netloc_of
from ...models import Comment
from ...store import count
from ...tables import activities, articles, comments, deliveries, domains, followers, inbox_items, reactions

PAGE = 50  # comments per admin page
SEARCH_MAX = 200  # characters of a search query


def _like(q: str) -> str:
    return "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _comment_filter(stmt: Any, status: str, q: str, slug: str = "") -> Any:
    if status != "all":
        stmt = stmt.where(comments.c.status == status)
    if slug:
        stmt = stmt.where(articles.c.slug == slug)
    q = q.strip()[:SEARCH_MAX]
    if q:
        pattern = _like(q)
        stmt = stmt.where(or_(*(col.ilike(pattern, escape="\\") for col in (
            comments.c.content_html, comments.c.summary, comments.c.author_name, comments.c.author_handle,
            comments.c.author_id))))
    return stmt


async def comment_page(conn: AsyncConnection, status: str, q: str, page: int,
                       slug: str = "") -> tuple[int, list[Comment]]:
    """(total matching, one page): the pending queue oldest first (first come, first served), others newest first."""
    joined = comments.join(articles, comments.c.article_id == articles.c.id)
    total = await count(conn, _comment_filter(select(func.count()).select_from(joined), status, q, slug))
    order = (comments.c.published, comments.c.id) if status == "pending" else \
        (comments.c.published.desc(), comments.c.id.desc())
    rows = await conn.execute(_comment_filter(select_comments(), status, q, slug).order_by(*order)
                              .limit(PAGE).offset((page - 1) * PAGE))
    return total, [comment_from_row(r) for r in rows]


async def parents(conn: AsyncConnection, found: list[Comment]) -> dict[int, Comment]:
    """The comments these answer (their thread context), by id."""
    ids = {c.parent_id for c in found if c.parent_id is not None}
    if not ids:
        return {}
    rows = await conn.execute(select_comments().where(comments.c.id.in_(ids)))
    return {c.id: c for c in map(comment_from_row, rows)}


async def article_titles(conn: AsyncConnection, slugs: set[str]) -> dict[str, tuple[str, str]]:
    """slug → (title, blog URL)."""
    if not slugs:
        return {}
    rows = await conn.execute(select(articles.c.slug, articles.c.title, articles.c.url)
                              .where(articles.c.slug.in_(slugs)))
    return {r.slug: (r.title, r.url) for r in rows}


async def pending_count(conn: AsyncConnection) -> int:
    return await count(conn, select(func.count()).select_from(comments).where(comments.c.status == "pending"))


@dataclass(frozen=True)
class ArticleStats:
    slug: str
    title: str
    url: str
    published: datetime
    deleted: bool
    likes: int
    boosts: int
    comments: dict[str, int]  # by status
    federation: str  # delivered | pending | failing | none


async def article_stats(conn: AsyncConnection, limit: int = 200) -> list[ArticleStats]:
    """The newest articles with reaction and comment counts and how their deliveries went."""
    rows = list(await conn.execute(select(articles.c.id, articles.c.slug, articles.c.title, articles.c.url,
                                          articles.c.published, articles.c.deleted)
                                   .order_by(articles.c.published.desc(), articles.c.id.desc()).limit(limit)))
    ids = [r.id for r in rows]
    if not ids:
        return []
    react: dict[tuple[int, str], int] = {(a, t): n for a, t, n in await conn.execute(
        select(reactions.c.article_id, reactions.c.type, func.count()).where(reactions.c.article_id.in_(ids))
        .group_by(reactions.c.article_id, reactions.c.type))}
    said: dict[int, dict[str, int]] = {}
    for a, s, n in await conn.execute(select(comments.c.article_id, comments.c.status, func.count())
                                      .where(comments.c.article_id.in_(ids))
                                      .group_by(comments.c.article_id, comments.c.status)):
        said.setdefault(a, {})[s] = n
    d = deliveries.c
    failing = case((or_(d.state == "failed", and_(d.state == "pending", d.attempts > 0)), 1), else_=0)
    fed: dict[int, str] = {}
    for a, pending, bad, total in await conn.execute(
            select(activities.c.article_id, func.sum(case((d.state == "pending", 1), else_=0)), func.sum(failing),
                   func.count(d.id))
            .select_from(activities.join(deliveries, deliveries.c.activity_id == activities.c.id))
            .where(activities.c.article_id.in_(ids), d.kind == "ap").group_by(activities.c.article_id)):
        fed[a] = "failing" if bad else "pending" if pending else "delivered" if total else "none"
    return [ArticleStats(slug=r.slug, title=r.title, url=r.url, published=r.published, deleted=r.deleted is not None,
                         likes=react.get((r.id, "like"), 0), boosts=react.get((r.id, "boost"), 0),
                         comments=said.get(r.id, {}), federation=fed.get(r.id, "none")) for r in rows]


FOLLOWERS_PAGE = 500


async def follower_page(conn: AsyncConnection, page: int = 1) -> tuple[int, list[dict[str, Any]]]:
    """(total, one page of followers as handle/server/since, oldest first)."""
    total = await count(conn, select(func.count()).select_from(followers))
    rows = await conn.execute(select(followers).order_by(followers.c.since, followers.c.id)
                              .limit(FOLLOWERS_PAGE).offset((page - 1) * FOLLOWERS_PAGE))
    return total, [{"id": r.actor_id, "handle": r.handle or r.actor_id, "server": netloc_of(r.actor_id),
                    "since": r.since} for r in rows]


async def delivery_health(conn: AsyncConnection) -> dict[str, Any]:
    """Queue sizes, failing servers with their latest error and next retry, unavailable domains:
    what `fedibridge deliveries` and the /metrics queue gauges report."""
    d = deliveries.c
    totals = {"pending": 0, "retrying": 0, "failed": 0, "done": 0}
    retrying = case((d.attempts > 0, 1), else_=0)
    for state, is_retry, n in await conn.execute(select(d.state, retrying, func.count()).group_by(d.state, retrying)):
        key = "retrying" if state == "pending" and is_retry else state
        totals[key] = totals.get(key, 0) + n
    inbox = await count(conn, select(func.count()).select_from(inbox_items).where(inbox_items.c.state == "pending"))
    when = func.coalesce(d.last_attempt_at, d.finished_at, d.created_at)
    rank = func.row_number().over(partition_by=d.host, order_by=(when.desc(), d.id.desc())).label("rank")
    bad = or_(d.state == "failed", and_(d.state == "pending", d.attempts > 0))
    latest = select(d.host, d.last_status, d.last_error, d.last_attempt_at, d.state, rank) \
        .where(bad, d.last_error.is_not(None)).subquery()
    next_retry = dict((await conn.execute(
        select(d.host, func.min(d.next_attempt_at)).where(d.state == "pending", d.attempts > 0).group_by(d.host)
    )).all())
    failing = [{"host": r.host, "state": "retrying" if r.state == "pending" else r.state, "status": r.last_status,
                "error": r.last_error, "at": r.last_attempt_at, "next": next_retry.get(r.host)}
               for r in await conn.execute(select(latest).where(latest.c.rank == 1).order_by(latest.c.host).limit(50))]
    down = [{"host": r.host, "since": r.failing_since} for r in await conn.execute(
        select(domains).where(domains.c.unavailable.is_(True)).order_by(domains.c.host))]
    return {"totals": totals, "inbox": inbox, "failing": failing, "unavailable": down}
