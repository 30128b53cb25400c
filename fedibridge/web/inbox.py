"""The actor inbox and the shared inbox: check, verify, store, answer 202; handling happens later.

Order of checks (cheapest and least revealing first): content type (415), size (413), JSON shape (400),
blocks (403), HTTP signature (401). An accepted activity is written to `inbox_items` *before* the 202
goes out, so a crash right after answering loses nothing; the inbox worker handles it from the store.
Duplicates (same activity id) are answered 202 and not stored again: servers re-send after errors.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from functools import lru_cache
from typing import Any

from aiohttp import web
from sqlalchemy import select

from .. import remote_json
from ..config import Settings
from ..errors import (
    BadRequest,
    FedibridgeError,
    FetchError,
    Forbidden,
    PayloadTooLarge,
    RateLimited,
    StorageUnavailable,
    Unauthorized,
    UnsupportedMediaType,
)
from ..health import describe, is_storage_outage
from ..hosts import authority_of, netloc_of, same_origin
from ..intake import InboxWriter, encode_payload
from ..logsafe import logger
from ..moderation import block_lists, blocked_by
from ..objects import ref_id
from ..ratelimit import TokenBuckets, retry_after
from ..signatures import load_public_key, signature_key_id, verify_request
from ..store import utcnow
from ..tables import comments, followers
from ..wakeup import announce_identity
from .common import AP_TYPES, SERVICES
from .middleware import json_error

log = logger(__name__)  # arguments escaped and redacted (logsafe)
METRIC = "fedibridge_inbox_requests_total"


class _Outcome(Exception):
    """A non-error early answer (202 without storing), carrying its metrics label."""

    def __init__(self, label: str, message: str) -> None:
        super().__init__(message)
        self.label = label


WRITER = web.AppKey("inbox_writer", InboxWriter)
RATE_METRIC = "fedibridge_inbox_rate_limited_total"
HOST_BUCKETS = web.AppKey("inbox_host_buckets", TokenBuckets)
ACTOR_BUCKETS = web.AppKey("inbox_actor_buckets", TokenBuckets)
BLOCKS_TTL = 2.0  # seconds a blocklist snapshot is trusted; blocks added elsewhere apply after this
BLOCKS_TIMEOUT = 2.0  # seconds a snapshot refresh may take before the database counts as unavailable
_JSON = {"Content-Type": "application/json; charset=utf-8"}
# Hosts of keyIds and actors repeat from request to request: parse each once (pure, bounded).
_same_origin = lru_cache(maxsize=4096)(same_origin)
_authority = lru_cache(maxsize=4096)(authority_of)
# The netloc of an http(s) URL, without urlsplit's cost: activity ids are new on every request. Compared with
# the actor's normalised netloc; an id spelled otherwise (case, trailing dot…) only falls back to the body hash.
# (urlsplit also drops tabs and newlines; this keeps them, so such an id never matches: the safe side.)
_NETLOC = re.compile(r"https?://([^/?#]*)")


@lru_cache(maxsize=64)
def _status_body(message: str) -> bytes:
    """The few 202 bodies there are, serialised once (the same bytes json_response would send)."""
    return json.dumps({"status": message}).encode()


def _accepted(message: str) -> web.Response:
    return web.Response(body=_status_body(message), status=202, headers=_JSON)


def setup(app: web.Application, prefix: str, settings: Settings) -> None:
    app.cleanup_ctx.append(_writer)
    app[HOST_BUCKETS] = TokenBuckets(settings.inbox_host_burst, settings.inbox_host_rate)
    app[ACTOR_BUCKETS] = TokenBuckets(settings.inbox_actor_burst, settings.inbox_actor_rate)
    actor_path = f"{prefix}/users/{settings.username}"
    for path in (f"{actor_path}/inbox", f"{prefix}/inbox"):
        app.router.add_post(path, inbox)
        app.router.add_get(path, _not_allowed)
    log.debug("inbox routes for %s ready", actor_path)


async def _writer(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    app[WRITER] = InboxWriter(services.store.database_url, services.health, thread=services.store.write_thread())
    await app[WRITER].start()
    yield
    await app[WRITER].close()


async def _not_allowed(request: web.Request) -> web.Response:
    """Inboxes are write-only here: we do not expose what others sent us."""
    raise web.HTTPMethodNotAllowed("GET", ["POST"])


async def inbox(request: web.Request) -> web.Response:
    metrics = request.app[SERVICES].metrics
    try:
        label, message = await _receive(request)
    except _Outcome as out:
        metrics.inc(METRIC, outcome=out.label)
        return _accepted(str(out))
    except RateLimited as exc:
        metrics.inc(METRIC, outcome="rate_limited")
        metrics.inc(RATE_METRIC, scope=exc.scope)
        return json_error(429, str(exc), headers={"Retry-After": retry_after(exc.retry_after)})
    except FedibridgeError as exc:
        label = {400: "malformed", 401: "unauthorized", 403: "blocked", 413: "too_large",
                 415: "unsupported_media_type", 503: "unavailable"}.get(exc.status, "error")
        metrics.inc(METRIC, outcome=label)
        log.info("inbox refused %s from %s: %s", exc.status, request.remote, exc)
        raise
    metrics.inc(METRIC, outcome=label)
    return _accepted(message)


async def _receive(request: web.Request) -> tuple[str, str]:
    app = request.app
    if request.content_type not in AP_TYPES:
        raise UnsupportedMediaType(f"content type must be one of {', '.join(AP_TYPES)}")
    key_id = signature_key_id(request.headers)
    if key_id:  # the server is known before anything costly: its share is checked first
        _charge(app[HOST_BUCKETS], _authority(key_id), "host")
    body = await _read_capped(request, app[SERVICES].settings.max_inbox_bytes)
    activity = _parse(body)
    actor_id: str = activity["actor"]
    await _check_blocks(app, actor_id, key_id)
    owner = await _verify(request, body, activity, key_id)
    if owner is not None:  # proven: charging the actor before this would let anyone spend someone's share
        _charge(app[ACTOR_BUCKETS], owner, "actor")
    now = utcnow()
    stored = await app[WRITER].add(dict(
        ap_id=_ap_id(activity, actor_id, body), type=str(activity["type"])[:40], actor=actor_id, key_owner=owner,
        payload=encode_payload(activity), received_at=now, state="pending", attempts=0, next_attempt_at=now,
    ))
    if not stored:
        return "duplicate", "already received"
    if activity["type"] in ("Update", "Delete") and ref_id(activity.get("object")) == actor_id:
        await _identity_changed(app, actor_id)
    wake = app[SERVICES].wake
    wake.accept()  # role all: the workers step aside while the inbox takes a burst
    wake.inbox.set()
    return "accepted", "accepted"


def _charge(buckets: TokenBuckets, key: str, scope: str) -> None:
    wait = buckets.take(key)
    if wait:
        raise RateLimited(f"too many activities from this {scope}; retry later", retry_after=wait, scope=scope)


async def _identity_changed(app: web.Application, actor_id: str) -> None:
    """The actor's own document changed or is gone: no process may keep answering with the old one (its key
    above all), so forget it here and tell the others (PostgreSQL; with SQLite this is the only process)."""
    services = app[SERVICES]
    services.resolver.forget(actor_id)
    store = services.store
    if store.is_postgres:
        async with store.begin() as conn:
            await announce_identity(conn, actor_id)


async def _read_capped(request: web.Request, limit: int) -> bytes:
    """Refuse on the declared length first; aiohttp itself stops reading past client_max_size (413)."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body larger than {limit} bytes")
    body = await request.read()
    if len(body) > limit:
        raise PayloadTooLarge(f"body larger than {limit} bytes")
    return body


def _parse(body: bytes) -> dict[str, Any]:
    try:
        activity = remote_json.loads(body)  # UTF-8 only, as RFC 8259 requires; nesting capped, controls stripped
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    if not isinstance(activity, dict):
        raise BadRequest("activity must be a JSON object")
    if not isinstance(activity.get("type"), str) or not activity["type"]:
        raise BadRequest("activity has no type")
    actor = ref_id(activity.get("actor"))
    if not actor or not actor.startswith(("https://", "http://")):
        raise BadRequest("activity has no actor")
    activity["actor"] = actor  # embedded actor objects are never trusted: keep the id only
    return activity


async def _check_blocks(app: web.Application, actor_id: str, key_id: str | None) -> None:
    """Refuse blocked actors and servers (the key's server too), from a short-lived snapshot of the lists."""
    cache = app[SERVICES].block_cache
    if cache.get("until", 0.0) < asyncio.get_running_loop().time():
        # One refresh at a time: concurrent requests share it instead of each querying the blocks table.
        refresh = cache.get("refresh")
        if refresh is None or refresh.done():
            refresh = cache["refresh"] = asyncio.ensure_future(_load_blocks(app))
        try:
            await asyncio.shield(refresh)
        except Exception as exc:
            if not is_storage_outage(exc):
                raise
            if "lists" not in cache:  # never loaded: we cannot tell who is blocked, so store nothing
                raise StorageUnavailable(f"database unavailable ({describe(exc)})") from None
            # The last snapshot is still the best answer; storing the activity decides whether we accept.
            cache["until"] = asyncio.get_running_loop().time() + BLOCKS_TTL
    domains, actors = cache["lists"]
    if blocked_by(actor_id, domains, actors) or (key_id and blocked_by(key_id, domains, set())):
        raise Forbidden("blocked")


async def _load_blocks(app: web.Application) -> None:
    services = app[SERVICES]
    cache = services.block_cache
    async with asyncio.timeout(BLOCKS_TIMEOUT), services.store.connect() as conn:
        cache["lists"] = await block_lists(conn, services.settings)
    cache["until"] = asyncio.get_running_loop().time() + BLOCKS_TTL


async def _verify(request: web.Request, body: bytes, activity: dict[str, Any], key_id: str | None) -> str | None:
    """Return the key owner once the signature is proven; raise Unauthorized with the reason otherwise.

    Returns None only for the one unverifiable case we accept: a Delete of an actor whose own server
    answers 410 Gone for it (Mastodon deletes the account, then announces it; the key is gone too).
    """
    services = request.app[SERVICES]
    resolver = services.resolver
    actor_id: str = activity["actor"]
    if key_id is None:
        raise Unauthorized("request is not signed (no Signature header or no keyId)")
    if not key_id.startswith(("https://", "http://")):
        raise Unauthorized("keyId is not an http(s) URL")
    if not _same_origin(key_id, actor_id):
        raise Unauthorized(f"keyId host {authority_of(key_id)} is not the actor's host {authority_of(actor_id)}")
    _check_signed_host(request)
    window = timedelta(seconds=services.settings.signature_window)
    reason = ""
    for refresh in (False, True):
        try:
            owner, pem = await resolver.key(key_id, refresh=refresh)
        except FetchError as exc:
            if await _gone_actor_delete(request, activity, exc):
                return None
            after = f" (after: {reason})" if reason else ""
            raise Unauthorized(f"cannot fetch key {key_id}: {exc}{after}") from None
        if owner != actor_id:
            # The signer is the actor: a key of /users/mallory never speaks for /users/alice, same host or not.
            raise Unauthorized(f"key {key_id} belongs to {owner}, not to the actor {actor_id}")
        try:
            public_key = load_public_key(pem)
        except ValueError:
            raise Unauthorized(f"key {key_id} is not a usable RSA public key") from None
        result = verify_request(request.method, request.raw_path, request.headers, body, public_key, utcnow(), window)
        if result.ok:
            return owner
        reason = result.reason
        if not reason.startswith("signature mismatch"):
            break  # only a mismatch can be cured by a fresh key (rotation); a stale Date cannot
    raise Unauthorized(f"signature verification failed: {reason}")


@lru_cache(maxsize=8)
def _our_authorities(base_url: str, domain: str) -> frozenset[str]:
    """"host:port" values a request signed for us may carry: base_url's, and the handle domain's if set."""
    scheme = base_url.split("://", 1)[0]
    found = {authority_of(base_url), authority_of(f"{scheme}://{domain}") if domain else ""}
    return frozenset(a for a in found if a)


def _check_signed_host(request: web.Request) -> None:
    """The Host the signature covers must be ours: a request signed for another server (its host, its inbox's
    request-target) must not be replayed here. Both schemes take the signed host from this header."""
    settings: Settings = request.app[SERVICES].settings
    scheme = settings.base_url.split("://", 1)[0]
    host = request.headers.get("Host", "")
    ours = not any(c in host for c in "@/\\?#")  # a bare host[:port]; "x@ours" would parse as ours
    if not ours or authority_of(f"{scheme}://{host}") not in _our_authorities(settings.base_url, settings.domain):
        raise Unauthorized(f"request is signed for host {host[:100]!r}, not for this server")


async def _gone_actor_delete(request: web.Request, activity: dict[str, Any], exc: FetchError) -> bool:
    """Accept a self-Delete of an actor whose origin answers 410 Gone, if we know that actor.

    Nothing is verified by a signature here: the origin itself saying Gone is the proof. Mastodon skips
    such Deletes for unknown accounts (it sends them to every server it ever talked to), and so do we:
    unknown actor → 202, nothing stored. A known follower/commenter → stored, the handlers remove it.
    """
    services = request.app[SERVICES]
    actor_id: str = activity["actor"]
    if activity.get("type") != "Delete" or ref_id(activity.get("object")) != actor_id or exc.http_status != 410:
        return False
    try:
        await services.resolver.client.fetch_json(actor_id)
        return False  # the actor still exists: the key problem is real, refuse
    except FetchError as again:
        if again.http_status != 410:
            return False
    async with services.store.connect() as conn:
        known = (await conn.execute(select(followers.c.id).where(followers.c.actor_id == actor_id))).first()
        if known is None:
            known = (await conn.execute(
                select(comments.c.id).where(comments.c.author_id == actor_id).limit(1))).first()
    if known is None:
        raise _Outcome("gone_unknown", "actor gone and unknown here; ignored")
    log.info("accepting unsigned-verifiable Delete of gone actor %s", actor_id)
    return True


def _ap_id(activity: dict[str, Any], actor_id: str, body: bytes) -> str:
    """Dedupe key: the activity id when it lives on the actor's host, else a hash of the exact body.

    An id on another host could be a forged claim to someone else's activity id, used to make us
    drop the real one as a "duplicate".
    """
    raw = activity.get("id")
    if isinstance(raw, str) and (m := _NETLOC.match(raw)) is not None and m.group(1).lower() == netloc_of(actor_id):
        return raw
    return "sha256:" + hashlib.sha256(body).hexdigest()
