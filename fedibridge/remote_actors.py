"""The remote actor and key cache: who a keyId belongs to and what an actor's document says, proven by origin.

Every process (web verifying signatures, workers showing comment authors and delivering) holds one; a cached
mapping is only ever one an actor's own document vouched for (see README, Security › Identity), and
wakeup.listen_identity makes the processes forget an actor together.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar

from yarl import URL

from .errors import FetchError
from .hosts import normalise_host, same_origin
from .http_client import GuardedClient, defrag
from .objects import RemoteActor, parse_actor
from .store import utcnow

_T = TypeVar("_T")

# Answers to an unsigned key fetch that a signed one may change: authorized-fetch servers (GoToSocial,
# Misskey's and Akkoma's secure modes) refuse unsigned GETs with 401 or 403, and some hide with 404.
_KNOCK_SIGNED = frozenset({401, 403, 404})
_MAX_SIGNED_HOSTS = 10_000


class Resolver:
    """Remote actors and keys, cached with a TTL; concurrent misses for one actor share one fetch.

    Fetches are concurrent but bounded: at most `per_host` GETs to one host at a time (a burst from a new
    instance must not look like an attack on it) and `max_concurrent` in all. A fetch holds its slot only
    for the HTTP request itself, never while awaiting another fetch, so nested key → owner lookups cannot
    deadlock on their own host's limit.
    """

    def __init__(
        self,
        client: GuardedClient,
        ttl: timedelta = timedelta(hours=24),
        max_entries: int = 10_000,
        clock: Callable[[], datetime] = utcnow,
        *,
        per_host: int = 4,
        max_concurrent: int = 64,
    ) -> None:
        if per_host < 1 or max_concurrent < 1:
            raise ValueError("per_host and max_concurrent must be at least 1")
        self.client = client
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._actors: OrderedDict[str, tuple[datetime, RemoteActor]] = OrderedDict()
        self._keys: OrderedDict[str, tuple[datetime, tuple[str, str]]] = OrderedDict()
        self._inflight: dict[tuple[str, str, bool], asyncio.Future[Any]] = {}
        self._per_host = per_host
        self._all = asyncio.Semaphore(max_concurrent)
        # host -> (semaphore, users); dropped when its last user leaves, so it never grows with hosts seen
        self._hosts: dict[str, tuple[asyncio.Semaphore, int]] = {}
        # servers that refused an unsigned key fetch: their next key fetches are signed at once (LRU)
        self._signed_hosts: OrderedDict[str, None] = OrderedDict()

    @staticmethod
    def _server(url: str) -> str:
        """An origin's server, name and port, after the one host normalisation ("" for a bad URL)."""
        try:
            parsed = URL(url)
            return f"{normalise_host(parsed.host or '')}:{parsed.port}"
        except (ValueError, TypeError):
            return ""  # the guarded client refuses such a URL with a clear FetchError

    @asynccontextmanager
    async def _slot(self, url: str) -> AsyncIterator[None]:
        """Hold one of the host's `per_host` fetch slots (and one of the global ones) for one request."""
        host = self._server(url)
        sem, users = self._hosts.get(host) or (asyncio.Semaphore(self._per_host), 0)
        self._hosts[host] = (sem, users + 1)
        try:
            async with sem, self._all:
                yield
        finally:
            sem, users = self._hosts[host]
            if users <= 1:
                del self._hosts[host]
            else:
                self._hosts[host] = (sem, users - 1)

    def _get(self, cache: OrderedDict[str, tuple[datetime, _T]], key: str) -> _T | None:
        entry = cache.get(key)
        if entry is None or entry[0] <= self._clock():
            return None
        cache.move_to_end(key)
        return entry[1]

    def _put(self, cache: OrderedDict[str, tuple[datetime, _T]], key: str, value: _T) -> None:
        cache[key] = (self._clock() + self._ttl, value)
        cache.move_to_end(key)
        while len(cache) > self._max_entries:
            cache.popitem(last=False)

    def _store(self, actor: RemoteActor) -> RemoteActor:
        """Cache an actor (its document was served from its own id) and its key, if the key is on its origin."""
        self._put(self._actors, actor.id, actor)
        if actor.public_key_id and actor.public_key_pem and same_origin(actor.public_key_id, actor.id):
            self._put(self._keys, actor.public_key_id, (actor.id, actor.public_key_pem))
        return actor

    async def _fetch_actor(self, actor_id: str) -> RemoteActor:
        async with self._slot(actor_id):
            doc = await self.client.get_json(actor_id)
        try:
            actor = parse_actor(doc)
        except ValueError as exc:
            raise FetchError(f"{actor_id} is not a usable actor: {exc}") from exc
        if actor.id != actor_id:
            # Even a same-origin redirect (or an id differing by a fragment) names someone else: never cache
            # another actor's document under this id (it would be shown and stored as this one's).
            raise FetchError(f"{actor_id} answered with the actor document of {actor.id}")
        return self._store(actor)

    def _done(self, key: tuple[str, str, bool], task: asyncio.Future[Any]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here, so a failure nobody awaited is not logged as lost

    async def _shared(self, key: tuple[str, str, bool], fetch: Callable[[], Awaitable[_T]]) -> _T:
        """One fetch per (kind, URL, refresh) at a time: a burst of activities from a new server waits for
        one GET of its actor instead of sending one each."""
        task = self._inflight.get(key)
        if task is None and not key[2]:
            task = self._inflight.get((key[0], key[1], True))  # a refresh under way is at least as fresh
        if task is None:
            task = asyncio.ensure_future(fetch())
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._done(key, t))
        # shield: one caller giving up must not cancel the fetch the others wait for
        return await asyncio.shield(task)

    async def actor(self, actor_id: str, *, refresh: bool = False) -> RemoteActor:
        if not refresh and (cached := self._get(self._actors, actor_id)) is not None:
            return cached
        return await self._shared(("actor", actor_id, refresh), lambda: self._fetch_actor(actor_id))

    async def _actor_with_key(self, owner: str, key_id: str, refresh: bool) -> RemoteActor:
        actor = await self.actor(owner, refresh=refresh)
        if actor.public_key_id != key_id and not refresh:
            actor = await self.actor(owner, refresh=True)  # cached copy may predate a key rotation
        return actor

    async def key(self, key_id: str, *, refresh: bool = False) -> tuple[str, str]:
        """(owner actor id, public key PEM) for a signature keyId, proven by the owner's own document."""
        if not refresh and (cached := self._get(self._keys, key_id)) is not None:
            return cached
        return await self._shared(("key", key_id, refresh), lambda: self._fetch_key(key_id, refresh))

    async def _fetch_key(self, key_id: str, refresh: bool) -> tuple[str, str]:
        owner_fetch = self._inflight.get(("actor", defrag(key_id), refresh))
        if owner_fetch is not None:
            # Mastodon's "<actor>#main-key" while that actor's document is being fetched (a reply whose author
            # is being prefetched): wait for that GET, which caches the key too, instead of sending a second.
            await asyncio.gather(asyncio.shield(owner_fetch), return_exceptions=True)
            if (cached := self._get(self._keys, key_id)) is not None:
                return cached
        final, doc, signed = await self._key_document(key_id)
        doc_id = doc.get("id")
        if not isinstance(doc_id, str) or not same_origin(doc_id, key_id):
            raise FetchError(f"key document for {key_id} has no id on the key's origin")
        if "publicKey" in doc and defrag(doc_id) == final:
            # Mastodon & co: the keyId is the actor URL plus "#main-key"; this doc is the actor itself.
            try:
                actor = parse_actor(doc)
            except ValueError as exc:
                raise FetchError(f"{doc_id} is not a usable actor: {exc}") from exc
            if signed or "outbox" in doc:
                self._store(actor)
            # else: maybe Mastodon's restricted answer to unsigned GETs in secure mode (id, type, username,
            # inbox, key, endpoints; every full actor has an outbox). Its key is good, but its name and
            # avatar may be missing: the actor itself is fetched, signed, when it is needed.
        else:
            # A standalone key with "owner", or GoToSocial's ".../main-key" answering a minimal Person
            # whose id is the actor: neither is authoritative, so the owner's own document must list the key.
            owner = doc.get("owner") if "publicKeyPem" in doc else doc_id
            if not isinstance(owner, str) or not same_origin(owner, key_id):
                raise FetchError(f"key {key_id} has no owner on the key's origin")
            actor = await self._actor_with_key(owner, key_id, refresh)
        if actor.public_key_id != key_id or not actor.public_key_pem:
            raise FetchError(f"actor {actor.id} does not publish key {key_id}")
        if not same_origin(actor.id, key_id):
            raise FetchError(f"key {key_id} and its owner {actor.id} are on different origins")
        result = (actor.id, actor.public_key_pem)
        self._put(self._keys, key_id, result)
        return result

    async def _key_document(self, key_id: str) -> tuple[str, dict[str, Any], bool]:
        """(final URL, document, signed?) for a keyId: unsigned first, signed when the server wants it.

        Key documents are public by design (Mastodon serves them unsigned even in secure mode), and an
        unsigned GET saves an RSA signature before the inbox can answer. A server that refuses it gets a
        signed second knock, and its next key fetches are signed at once. Redirects stay on the key's origin.
        """
        server = self._server(key_id)
        if server not in self._signed_hosts:
            try:
                async with self._slot(key_id):
                    final, doc = await self.client.fetch_json(key_id, signed=False)
                return final, doc, False
            except FetchError as exc:
                if exc.http_status not in _KNOCK_SIGNED:
                    raise
            self._signed_hosts[server] = None
            while len(self._signed_hosts) > _MAX_SIGNED_HOSTS:
                self._signed_hosts.popitem(last=False)
        self._signed_hosts.move_to_end(server)
        async with self._slot(key_id):
            final, doc = await self.client.fetch_json(key_id)
        return final, doc, True

    async def prefetch(self, actor_ids: Iterable[str]) -> dict[str, RemoteActor | FetchError]:
        """Resolve many actors concurrently (a batch of rows from many authors): one GET per actor not
        freshly cached, within the per-host limits. Each id maps to its actor or to why it failed; a
        failure never hides the others (the caller decides per row whether to retry)."""
        ids = list(dict.fromkeys(actor_ids))

        async def one(actor_id: str) -> RemoteActor | FetchError:
            try:
                return await self.actor(actor_id)
            except FetchError as exc:
                return exc

        results = await asyncio.gather(*(one(a) for a in ids))
        return dict(zip(ids, results, strict=True))

    async def fetch_object(self, url: str) -> dict[str, Any]:
        """A remote object (e.g. a reply's parent, for thread completion), from its own origin.

        Its id may differ from `url` only after a redirect on `url`'s origin; callers check what it claims.
        """
        return await self.client.get_json(url)

    def forget(self, actor_id: str) -> None:
        """Drop an actor and its keys (after its Update or Delete) so the next use refetches."""
        self._actors.pop(actor_id, None)
        for key_id in [k for k, (_, (owner, _pem)) in self._keys.items() if owner == actor_id]:
            del self._keys[key_id]

    def forget_all(self) -> None:
        """Drop every cached actor and key: when this process may have missed another's "forget"."""
        self._actors.clear()
        self._keys.clear()
