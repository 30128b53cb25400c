"""Batched handling of the inbox's dominant activities: replies, Follows, Likes and boosts, hundreds at once.

Handled one at a time, every reply cost ~8 statements in 4 transactions; a burst of thousands waited minutes.
Here a batch of unrelated rows (inbox_worker.related puts ordered rows in groups; only singletons come here)
is read in one connection, its senders are resolved concurrently (Resolver.prefetch), every outcome is
computed in Python with the same rules as the per-row handlers (comments.check_note, moderation.status_for,
reactions.reaction_of, followers.accept_for/own_inboxes), and comments, reactions, followers, Accepts and
their deliveries are written in one transaction, idempotently (insert-ignore by activity or object id).
Whatever needs more than that — a parent to fetch, a spam verdict, a string object, a quote, a sender whose
document cannot be fetched for a Follow — is handed back for the per-row dispatch, so correctness never
depends on this path.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from . import moderation
from .bulk_insert import insert_new
from .comment_views import comment_from_row, find_article, select_comments
from .comments import METRIC as COMMENT_METRIC
from .comments import Refused, author_of, check_note, comment_row, emit_event
from .enqueue import delivery_rows, enqueue_rows
from .errors import FetchError
from .followers import accept_for, own_inboxes
from .logsafe import logger
from .objects import ACTOR_TYPES, RemoteActor, RemoteNote, as_list, ref_id
from .reactions import reaction_of
from .services import Services
from .store import insert_ignore, utcnow
from .tables import activities, comments, followers, quotes, reactions

log = logger(__name__)  # arguments escaped and redacted (logsafe)

TYPES = frozenset({"Create", "Follow", "Like", "EmojiReact", "Announce"})


@dataclass
class _Batch:
    """What one batch decided: outcomes by row id, rows left for per-row dispatch, and what to write."""

    done: dict[int, str] = field(default_factory=dict)
    rest: list[Any] = field(default_factory=list)
    replies: list[tuple[Any, RemoteNote]] = field(default_factory=list)
    follows: list[Any] = field(default_factory=list)
    likes: list[tuple[Any, tuple[str, str, str]]] = field(default_factory=list)
    created: Counter[tuple[str, str]] = field(default_factory=Counter)  # new comments by (status, visibility)


async def handle(services: Services, rows: list[Any]) -> tuple[dict[int, str], list[Any]]:
    """Handle what can be batched; (outcome label by row id, the rows left for per-row dispatch)."""
    batch = _Batch()
    for row in rows:
        _classify(services, row, batch)
    if not (batch.replies or batch.follows or batch.likes):
        return batch.done, batch.rest
    async with services.store.connect() as conn:
        domains, actors = await moderation.block_lists(conn, services.settings)
        articles = await _articles(conn, services, [n.in_reply_to or "" for _, n in batch.replies]
                                   + [checked[2] for _, checked in batch.likes])
        replies = await _replies(conn, services, batch, articles, domains, actors)
        likes = _likes(batch, articles, domains, actors)
        known = await moderation.known_authors(conn, [n.attributed_to for _, n, _ in replies])
        existing = set((await conn.execute(select(followers.c.actor_id).where(
            followers.c.actor_id.in_({r.actor for r in batch.follows})))).scalars()) if batch.follows else set()
    fetched = await services.resolver.prefetch([n.attributed_to for _, n, _ in replies]
                                               + [r.actor for r in batch.follows])
    await services.store.write(_write, services, batch, replies, likes, known, fetched, existing, utcnow())
    for (status, visibility), n in batch.created.items():  # here, on the event loop: metrics are not thread-safe
        services.metrics.inc(COMMENT_METRIC, n, status=status, visibility=visibility)
    if batch.follows:
        services.wake.delivery.set()
    return batch.done, batch.rest


def _classify(services: Services, row: Any, batch: _Batch) -> None:
    """Decide without I/O what a row is: a batched candidate, settled already, or one for per-row dispatch."""
    activity = row.payload
    kind = activity.get("type") if isinstance(activity, dict) else None
    if kind not in TYPES:
        batch.rest.append(row)
        return
    if kind == "Follow":
        if ref_id(activity.get("object")) != services.site.actor_id:
            batch.done[row.id] = "not_for_us"
        else:
            batch.follows.append(row)
        return
    if kind != "Create":
        checked = reaction_of(activity, row.actor)
        if isinstance(checked, tuple):
            batch.likes.append((row, checked))
        else:
            batch.done[row.id] = checked or "ignored"
        return
    obj = activity.get("object")
    if not isinstance(obj, dict) or set(as_list(obj.get("type"))) & ACTOR_TYPES \
            or moderation.spam_check_enabled(services.settings):
        batch.rest.append(row)  # fetched by id, an actor, or waiting on a spam verdict: per row
        return
    try:
        note = check_note(obj, row.actor)
    except Refused:
        batch.rest.append(row)  # refused, unless a quote of ours says otherwise: per row decides and logs
        return
    if note is None or not note.in_reply_to:
        batch.rest.append(row)  # possibly a quote's Create (quotes.py): per row
        return
    batch.replies.append((row, note))


async def _articles(conn: AsyncConnection, services: Services, refs: list[str]) -> dict[str, Any]:
    """Our article rows by every distinct reference (a burst of replies names one or a few)."""
    found = {}
    for ref in dict.fromkeys(r for r in refs if r):
        found[ref] = await find_article(conn, services.site, ref)
    return found


async def _replies(conn: AsyncConnection, services: Services, batch: _Batch, articles: dict[str, Any],
                   domains: set[str], actors: set[str]) -> list[tuple[Any, RemoteNote, tuple[int, int | None]]]:
    """Replies that become new comments, with (article id, parent id); settles known and blocked ones."""
    ids = [n.id for _, n in batch.replies]
    refs = {n.in_reply_to for _, n in batch.replies}
    parents: dict[str, Any] = {r.ap_id: r for r in await conn.execute(
        select(comments.c.ap_id, comments.c.id, comments.c.article_id).where(comments.c.ap_id.in_(refs)))}
    stored = {r.ap_id: r.status for r in await conn.execute(
        select(comments.c.ap_id, comments.c.status).where(comments.c.ap_id.in_(ids)))}
    quoted = set((await conn.execute(select(quotes.c.ap_id).where(quotes.c.ap_id.in_(ids)))).scalars())
    new: list[tuple[Any, RemoteNote, tuple[int, int | None]]] = []
    for row, note in batch.replies:
        ref = note.in_reply_to or ""
        article, parent = articles.get(ref), parents.get(ref)
        if note.id in quoted or article is None and parent is None:
            batch.rest.append(row)  # a quote's edit, or a parent to fetch (thread completion): per row
        elif note.id in stored:
            batch.done[row.id] = f"comment_{stored[note.id]}"  # a re-run: idempotent by object id
        elif moderation.blocked_by(note.attributed_to, domains, actors):
            log.info("Create from %s refused: %s is blocked", row.actor, note.attributed_to)
            batch.done[row.id] = "comment_refused"
        elif article is not None:
            new.append((row, note, (int(article.id), None)))
        elif parent is not None:
            new.append((row, note, (int(parent.article_id), int(parent.id))))
    return new


def _likes(batch: _Batch, articles: dict[str, Any], domains: set[str], actors: set[str]
           ) -> list[tuple[Any, tuple[str, str, str], int]]:
    """Reactions to insert, with their article id; settles those not about us or from the blocked."""
    todo = []
    for row, (kind, activity_id, object_id) in batch.likes:
        article = articles.get(object_id)
        if article is None:
            batch.done[row.id] = "ignored"
        elif moderation.blocked_by(row.actor, domains, actors):
            batch.done[row.id] = "reaction_refused"
        else:
            todo.append((row, (kind, activity_id, object_id), int(article.id)))
    return todo


def _write(conn: Connection, services: Services, batch: _Batch,
           replies: list[tuple[Any, RemoteNote, tuple[int, int | None]]],
           likes: list[tuple[Any, tuple[str, str, str], int]], known: set[str], fetched: dict[str, Any],
           existing: set[str], now: datetime) -> None:
    """The batch's one write transaction (Store.write: on SQLite whole on the writer thread)."""
    _write_replies(conn, services, batch, replies, known, fetched, now)
    _write_likes(conn, batch, likes, now)
    _write_follows(conn, services, batch, fetched, existing, now)


def _write_replies(conn: Connection, services: Services, batch: _Batch,
                   replies: list[tuple[Any, RemoteNote, tuple[int, int | None]]], known: set[str],
                   fetched: dict[str, Any], now: Any) -> None:
    """Insert the new comments in one statement; events (and counts, for the metrics) for those it inserted."""
    if not replies:
        return
    settings = services.settings
    values = {}
    for _, note, (article_id, parent_id) in replies:
        status = moderation.status_for(settings, "ham", note.attributed_to in known)
        author = author_of(note.attributed_to, fetched.get(note.attributed_to, FetchError("not fetched")))
        values[note.id] = comment_row(note, article_id, parent_id, author, status, now)
    inserted = insert_new(conn, comments, "ap_id", list(values.values()))  # the driver directly: see bulk_insert
    statuses = {a: values[a]["status"] for a in inserted}
    if len(inserted) < len(values):  # stored meanwhile by another worker or a re-run: read what it decided
        others = select(comments.c.ap_id, comments.c.status).where(comments.c.ap_id.in_(set(values) - inserted))
        statuses.update({r.ap_id: r.status for r in conn.execute(others)})
    for row, note, _ in replies:
        batch.done[row.id] = f"comment_{statuses[note.id]}"
    batch.created.update((values[a]["status"], values[a]["visibility"]) for a in inserted)
    if settings.webhook_url and inserted:
        for r in conn.execute(select_comments().where(comments.c.ap_id.in_(inserted)).order_by(comments.c.id)).all():
            emit_event(conn, settings, "comment.created", comment_from_row(r), now)


def _write_likes(conn: Connection, batch: _Batch, likes: list[tuple[Any, tuple[str, str, str], int]],
                 now: Any) -> None:
    if not likes:
        return
    values = [{"article_id": article_id, "actor_id": row.actor, "type": kind, "ap_id": activity_id,
               "created_at": now} for row, (kind, activity_id, _), article_id in likes]
    result = conn.execute(insert_ignore(conn, reactions).returning(reactions.c.ap_id), values)
    added = set(result.scalars())
    for row, (kind, activity_id, _), _ in likes:
        batch.done[row.id] = f"{kind}_added" if activity_id in added else f"{kind}_duplicate"


def _write_follows(conn: Connection, services: Services, batch: _Batch, fetched: dict[str, Any],
                   existing: set[str], now: Any) -> None:
    """Followers stored (or refreshed), one Accept each and its delivery, in a few statements."""
    new, accepts = [], {}
    for row in batch.follows:
        actor = fetched.get(row.actor)
        if not isinstance(actor, RemoteActor):
            batch.rest.append(row)  # its document could not be fetched: per row retries with backoff
            continue
        inbox, shared = own_inboxes(actor)
        if inbox is None:
            log.warning("Follow from %s refused: its inbox %s is not on its server", row.actor, actor.inbox)
            batch.done[row.id] = "follow_refused"
            continue
        values = {"handle": actor.handle, "inbox": inbox, "shared_inbox": shared,
                  "follow_id": ref_id(row.payload.get("id"))}
        if row.actor in existing:
            conn.execute(followers.update().where(followers.c.actor_id == row.actor).values(**values))
        else:
            new.append({"actor_id": row.actor, "since": now, **values})
        key, accept = accept_for(services.site, row.payload, row.actor)
        accepts[key] = (row, inbox, {"key": key, "type": "Accept", "object_id": values["follow_id"],
                                     "payload": accept, "in_outbox": False, "published": now})
    if new:
        inserted = set(conn.execute(insert_ignore(conn, followers).returning(followers.c.actor_id), new).scalars())
        raced = {v["actor_id"]: v for v in new if v["actor_id"] not in inserted}  # stored meanwhile elsewhere
        for actor_id, v in raced.items():
            conn.execute(followers.update().where(followers.c.actor_id == actor_id).values(
                handle=v["handle"], inbox=v["inbox"], shared_inbox=v["shared_inbox"], follow_id=v["follow_id"]))
        existing = existing | set(raced)
    if not accepts:
        return
    conn.execute(insert_ignore(conn, activities), [a for _, _, a in accepts.values()])
    ids = {r.key: r.id for r in conn.execute(select(activities.c.key, activities.c.id)
                                             .where(activities.c.key.in_(accepts)))}
    enqueue_rows(conn, [d for key, (_, inbox, _) in accepts.items()
                              for d in delivery_rows(ids[key], [inbox], now)])
    for row, _, _ in accepts.values():
        log.info("%s follower %s", "re-accepted" if row.actor in existing else "new", row.actor)
        batch.done[row.id] = "reaccepted" if row.actor in existing else "followed"
