"""Who may comment and what waits for the blog owner: moderation modes, blocklists, spam check.

Modes (settings.moderation): ``open`` approves, ``hold`` holds everything, ``known`` (default) holds a
commenter's first comment and lets later ones through once one of theirs was approved, as blogs do.
Blocks come from settings (blocked_domains, blocked_actors) and the ``blocks`` table (CLI, admin API).
The optional spam check speaks Akismet's ``comment-check``; when it cannot answer, the comment waits:
it is never lost and never approved without a verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from urllib.parse import urlencode, urlsplit

from sqlalchemy import Text, bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from .config import Settings
from .errors import BadRequest, FetchError
from .hosts import host_of, normalise_host, parent_domains
from .http_client import GuardedClient
from .logsafe import logger
from .sanitize import plain_text
from .store import insert_ignore
from .tables import blocks, comments

log = logger(__name__)  # arguments escaped and redacted (logsafe)

Status = Literal["pending", "approved", "rejected"]
Verdict = Literal["spam", "ham", "unknown"]
BlockKind = Literal["domain", "actor"]


# -- blocklists ------------------------------------------------------------------------------------


def normalise_block(kind: str, value: str) -> tuple[BlockKind, str]:
    """Validate and canonicalise a block: a normalised host for domains, an http(s) URL for actors.

    Domains are stored as hosts.normalise_host spells them (lower-case, no trailing dot, punycode), so
    `EVIL.example.`, `evil.example` and `bücher.example` / `xn--bcher-kva.example` are each one block.
    """
    value = value.strip()
    if kind == "domain":
        raw = value if "://" in value else "http://" + value  # "host", "host:port" or "host/path" too
        host = host_of(raw)
        if not host or "@" in urlsplit(raw).netloc:
            raise BadRequest(f"not a domain: {value!r}")
        return "domain", host
    if kind == "actor":
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadRequest(f"an actor block needs the actor's id URL, got {value!r}")
        return "actor", value
    raise BadRequest("kind must be 'domain' or 'actor'")


def guess_kind(value: str) -> BlockKind:
    """CLI convenience: a URL is an actor, anything else a domain."""
    return "actor" if value.strip().startswith(("http://", "https://")) else "domain"


async def block_lists(conn: AsyncConnection, settings: Settings) -> tuple[set[str], set[str]]:
    """(blocked domains, blocked actor ids) from settings and the blocks table together."""
    domains = {normalise_host(d) for d in settings.blocked_domains}
    actors = {a.strip() for a in settings.blocked_actors if a.strip()}
    for row in await conn.execute(select(blocks.c.kind, blocks.c.value)):
        # Rows written before blocks were normalised on insert may be spelled any way: normalise here too.
        if row.kind == "domain":
            domains.add(normalise_host(row.value))
        else:
            actors.add(row.value)
    domains.discard("")
    return domains, actors


def blocked_by(actor_id: str, domains: set[str], actors: set[str]) -> bool:
    """Whether the actor, or its server or a parent domain of it, is blocked (``domains`` normalised)."""
    return actor_id in actors or any(d in domains for d in parent_domains(host_of(actor_id)))


async def is_blocked(conn: AsyncConnection, settings: Settings, actor_id: str) -> bool:
    """Whether nothing from this actor (or its server) may be stored or shown."""
    domains, actors = await block_lists(conn, settings)
    return blocked_by(actor_id, domains, actors)


async def add_block(conn: AsyncConnection, kind: str, value: str, now: datetime) -> tuple[BlockKind, str, bool]:
    """Add a block; returns (kind, canonical value, whether it is new)."""
    k, v = normalise_block(kind, value)
    result = await conn.execute(insert_ignore(conn, blocks).values(kind=k, value=v, created_at=now))
    return k, v, bool(result.rowcount)


async def remove_block(conn: AsyncConnection, kind: str, value: str) -> bool:
    """Remove a block however it was spelled when stored (rows may predate normalisation)."""
    k, v = normalise_block(kind, value)
    if k == "domain":
        stored = (await conn.execute(select(blocks.c.value).where(blocks.c.kind == "domain"))).scalars()
        spellings = [s for s in stored if normalise_host(s) == v]
    else:
        spellings = [v]
    if not spellings:
        return False
    result = await conn.execute(blocks.delete().where(blocks.c.kind == k, blocks.c.value.in_(spellings)))
    return bool(result.rowcount)


async def list_blocks(conn: AsyncConnection) -> list[dict[str, str]]:
    rows = await conn.execute(select(blocks).order_by(blocks.c.kind, blocks.c.value))
    return [{"kind": r.kind, "value": r.value, "created_at": r.created_at.isoformat()} for r in rows]


# -- moderation mode --------------------------------------------------------------------------------


async def author_is_known(conn: AsyncConnection, author_id: str) -> bool:
    """A commenter is known once the blog owner approved one of their comments."""
    row = await conn.execute(
        select(comments.c.id).where(comments.c.author_id == author_id, comments.c.status == "approved").limit(1)
    )
    return row.first() is not None


KNOWN_CHUNK = 500  # authors per statement: well within SQLite's bound parameters


async def known_authors(conn: AsyncConnection, author_ids: list[str]) -> set[str]:
    """Which of these commenters are known (one query for a whole batch of comments).

    One index probe per author (`ix_comments_author_status`), however many comments each has written: a
    DISTINCT over their approved comments read all of them, 44 ms a batch with 1,600 comments an author,
    growing with the blog's history.
    """
    ids = sorted(set(author_ids))
    known: set[str] = set()
    for start in range(0, len(ids), KNOWN_CHUNK):
        chunk = ids[start:start + KNOWN_CHUNK]
        listed = ", ".join(f"(:a{i})" for i in range(len(chunk)))
        stmt = text(  # VALUES names its column column1 on both SQLite and PostgreSQL
            f"SELECT candidates.column1 FROM (VALUES {listed}) AS candidates WHERE EXISTS "
            "(SELECT 1 FROM comments WHERE comments.author_id = candidates.column1 AND comments.status = 'approved')"
        ).bindparams(*(bindparam(f"a{i}", author, type_=Text) for i, author in enumerate(chunk)))
        known.update((await conn.execute(stmt)).scalars())
    return known


def status_for(settings: Settings, verdict: Verdict, known: bool) -> Status:
    """Status of a new comment: spam is rejected; no verdict (check down) always waits; `known` as above."""
    if verdict == "spam":
        return "rejected"
    if verdict == "unknown" or settings.moderation == "hold":
        return "pending"
    if settings.moderation == "open":
        return "approved"
    return "approved" if known else "pending"


async def initial_status(conn: AsyncConnection, settings: Settings, author_id: str, verdict: Verdict) -> Status:
    """Status of a new comment (status_for), asking whether the author is known only when it matters."""
    if verdict != "ham" or settings.moderation != "known":
        return status_for(settings, verdict, False)
    return status_for(settings, verdict, await author_is_known(conn, author_id))


# -- spam check (Akismet comment-check) -------------------------------------------------------------


@dataclass(frozen=True)
class SpamQuery:
    """What Akismet wants to know about a comment (fields named after its comment-check API)."""

    author_name: str
    author_url: str
    content_html: str
    published: datetime
    permalink: str
    language: str | None = None


def spam_check_enabled(settings: Settings) -> bool:
    return bool(settings.spam_check_url)


def spam_form(settings: Settings, q: SpamQuery) -> dict[str, str]:
    """Form fields of comment-check. The key goes as ``api_key`` (Akismet 1.1) and ``key`` (clones)."""
    form = {
        "blog": settings.blog,
        "user_ip": "",  # unknown: the comment came through a server, not from a browser
        "user_agent": "fediverse",
        "comment_type": "reply",
        "comment_author": q.author_name,
        "comment_author_url": q.author_url,
        "comment_content": plain_text(q.content_html),
        "comment_date_gmt": q.published.isoformat(),
        "permalink": q.permalink,
        "blog_lang": q.language or settings.language or "",
        "blog_charset": "UTF-8",
    }
    if settings.spam_check_key:
        form["api_key"] = settings.spam_check_key
        form["key"] = settings.spam_check_key
    return form


def spam_endpoint(settings: Settings) -> str:
    """The configured URL; ``{key}`` in it is replaced (Akismet: https://{key}.rest.akismet.com/1.1/comment-check)."""
    return settings.spam_check_url.replace("{key}", settings.spam_check_key)


def parse_verdict(status: int, body: bytes, headers: dict[str, str] | None = None) -> Verdict:
    """Akismet answers "true" (spam) or "false" (ham); anything else means we got no verdict."""
    if status != 200:
        return "unknown"
    text = body.decode("utf-8", "replace").strip().lower()
    if (headers or {}).get("x-akismet-pro-tip", "").strip().lower() == "discard":
        return "spam"
    if text == "true":
        return "spam"
    if text == "false":
        return "ham"
    return "unknown"


async def spam_check(client: GuardedClient, settings: Settings, q: SpamQuery) -> Verdict:
    """Ask the spam service; "unknown" when none is configured to answer or it fails."""
    if not spam_check_enabled(settings):
        return "ham"
    body = urlencode(spam_form(settings, q)).encode()
    try:
        resp = await client.post(spam_endpoint(settings), body, content_type="application/x-www-form-urlencoded",
                                 signed=False)
    except FetchError as exc:
        log.warning("spam check unavailable, comment held: %s", exc)
        return "unknown"
    verdict = parse_verdict(resp.status, resp.body, dict(resp.headers))
    if verdict == "unknown":
        log.warning("spam check gave no verdict (HTTP %s), comment held", resp.status)
    return verdict
