"""Account migration out: `fedibridge move --to @new@example.social`.

Mastodon's rules (app/lib/activitypub/activity/move.rb): a Move is acted on only if its `object` is the
sender and the target's own actor document lists the sender in `alsoKnownAs`; then each of the sender's
followers on that server follows the target. So we check the same thing before sending anything, record
`movedTo` (served in the actor document, publishing stops), and queue a signed Move to every follower.
Moving in needs no code here: the `also_known_as` setting puts `alsoKnownAs` in the actor document.
"""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import quote, urlsplit

from . import actor_state
from .enqueue import enqueue_to_followers
from .errors import BadRequest, FetchError
from .http_client import GuardedClient
from .objects import as_list, parse_actor, ref_id
from .store import Store, utcnow
from .tables import activities
from .vocab import Site, iso
from .vocab_account import move_activity

JRD_ACCEPT = "application/jrd+json, application/json;q=0.9"
AP_TYPES = ("application/activity+json", "application/ld+json")


class MoveRefused(BadRequest):
    """The target cannot receive our followers (unknown, unreachable, or not listing us in alsoKnownAs)."""


@dataclass(frozen=True)
class MoveResult:
    target: str  # the target's actor id
    activity: str  # the Move's id
    queued: int  # inboxes it was queued for


def _webfinger_url(host: str, allow_http: bool) -> str:
    """https://host/.well-known/webfinger; plain http only for loopback/IP hosts when private addresses are
    allowed (local trials and tests: real servers are only reachable over https)."""
    name = urlsplit("//" + host).hostname or ""
    try:
        literal = ipaddress.ip_address(name) is not None
    except ValueError:
        literal = name == "localhost"
    scheme = "http" if allow_http and literal else "https"
    return f"{scheme}://{host}/.well-known/webfinger"


async def resolve_handle(client: GuardedClient, target: str, *, allow_http: bool = False) -> str:
    """The actor id of `@user@host` (WebFinger, through the guarded client) or of an actor URL as given."""
    target = target.strip()
    if target.startswith(("http://", "https://")):
        return target
    acct = target.removeprefix("acct:").lstrip("@")
    user, sep, host = acct.rpartition("@")
    if not sep or not user or not host or "/" in host:
        raise MoveRefused(f"--to {target!r}: expected @user@host or the new account's actor URL")
    url = f"{_webfinger_url(host, allow_http)}?resource={quote('acct:' + acct, safe=':@')}"
    try:
        _, jrd = await client.fetch_json(url, signed=False, accept=JRD_ACCEPT)
    except FetchError as exc:
        raise MoveRefused(f"cannot look up {target} by WebFinger: {exc}") from None
    for link in as_list(jrd.get("links")):
        if isinstance(link, dict) and link.get("rel") == "self" and \
                str(link.get("type", "")).split(";")[0].strip() in AP_TYPES and isinstance(link.get("href"), str):
            return str(link["href"])
    raise MoveRefused(f"{target}: its WebFinger answer names no ActivityPub actor")


async def check_target(client: GuardedClient, target_id: str, site: Site) -> str:
    """Fetch the target from its own origin; MoveRefused unless its alsoKnownAs lists our actor."""
    if target_id == site.actor_id:
        raise MoveRefused("cannot move the blog to itself")
    try:
        doc = await client.get_json(target_id)
        actor = parse_actor(doc)
    except (FetchError, ValueError) as exc:
        raise MoveRefused(f"cannot fetch the new account {target_id}: {exc}") from None
    aliases = {ref_id(a) for a in as_list(doc.get("alsoKnownAs"))}
    if site.actor_id not in aliases:
        raise MoveRefused(
            f"{actor.handle} does not list {site.actor_id} in its aliases (alsoKnownAs), so Mastodon would ignore "
            f"the Move: on the new account add {site.handle} as an alias first (Mastodon: Preferences › Account › "
            "Moving from a different account), then run this again")
    return actor.id


async def move(store: Store, site: Site, client: GuardedClient, target: str, *,
               allow_http: bool = False, delay: float = 0.0) -> MoveResult:
    """Check the target, then in one transaction: record movedTo and queue the Move to every follower.

    Mastodon refetches our actor when the Move arrives and acts only if it names the target in `movedTo`;
    `delay` (the running server's document cache lifetime) makes sure no cached actor is served by then.
    """
    target_id = await check_target(client, await resolve_handle(client, target, allow_http=allow_http), site)
    now, key = utcnow(), uuid.uuid4().hex
    payload = move_activity(site, target_id, key, now)
    async with store.begin() as conn:
        await actor_state.put(conn, actor_state.MOVED_TO, {"target": target_id, "since": iso(now)}, now)
        result = await conn.execute(activities.insert().values(
            key=key, type="Move", object_id=site.actor_id, payload=payload, in_outbox=False, published=now))
        pk = result.inserted_primary_key
        assert pk is not None
        queued = await enqueue_to_followers(conn, int(pk[0]), now + timedelta(seconds=delay))
    return MoveResult(target_id, payload["id"], queued)


async def cancel(store: Store) -> str | None:
    """Forget the move (publishing works again); returns where it pointed. Followers already moved stay moved."""
    async with store.begin() as conn:
        target = await actor_state.moved_to(conn)
        await actor_state.clear(conn, actor_state.MOVED_TO)
    return target
