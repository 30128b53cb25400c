"""The only outbound HTTP path of fedibridge: a guarded client and the remote actor/key cache.

Every URL we fetch comes from strangers (actor ids, key ids, inReplyTo links, inboxes), so one place
enforces what may be contacted (public addresses only, checked after DNS and on every redirect),
how long and how much we read, and how requests are signed.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from ipaddress import ip_address
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import urldefrag

import aiohttp
from aiohttp.resolver import DefaultResolver
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from yarl import URL

from .errors import FetchError
from .netguard import BlockedAddress, GuardedResolver, is_public_address
from .objects import RemoteActor, parse_actor
from .signatures import sign_request
from .store import utcnow

Scheme = Literal["cavage", "rfc9421"]

AP_ACCEPT = 'application/activity+json, application/ld+json; profile="https://www.w3.org/ns/activitystreams"'
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_HOSTS = 10_000
_T = TypeVar("_T")


@dataclass(frozen=True)
class Signer:
    private_key: RSAPrivateKey
    key_id: str
    default_scheme: Scheme = "cavage"


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes  # at most max_bytes
    url: str = ""  # final URL, after redirects


def _defrag(url: str) -> str:
    return urldefrag(url)[0]


def authority_of(url: str) -> str:
    """Lower-case "host:port" of a URL ('' when it has none): a key and its owner must share it."""
    try:
        parsed = URL(url)
    except ValueError:
        return ""
    return f"{parsed.host}:{parsed.port}".lower() if parsed.host else ""


MAX_RETRY_AFTER = 86_400.0  # a Retry-After beyond a day is not believed


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(0.0, (when - now).total_seconds()), MAX_RETRY_AFTER)


# Said with every refusal: a site owner trying `import http://127.0.0.1/…` needs to know the switch exists.
PRIVATE_HINT = (" (allow_private_addresses = true, or FEDIBRIDGE_ALLOW_PRIVATE_ADDRESSES=true, allows it: "
                "for local tests only)")


class GuardedClient:
    """aiohttp session with the SSRF guard, caps, manual redirects and double-knock signing."""

    def __init__(
        self,
        *,
        user_agent: str,
        signer: Signer | None,
        allow_private: bool = False,
        timeout: float = 10.0,
        max_bytes: int = 1_048_576,
        max_redirects: int = 3,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._user_agent = user_agent
        self._signer = signer
        self._allow_private = allow_private
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._max_redirects = max_redirects
        self._clock = clock
        self._schemes: OrderedDict[str, Scheme] = OrderedDict()
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is not None:
            return
        inner = DefaultResolver()
        resolver = inner if self._allow_private else GuardedResolver(inner)
        connector = aiohttp.TCPConnector(resolver=resolver, limit=100, limit_per_host=8, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self._timeout, connect=min(self._timeout, 5.0)),
            headers={"User-Agent": self._user_agent},
            cookie_jar=aiohttp.DummyCookieJar(),  # no state carried between remote servers
            trust_env=False,  # a proxy would resolve names for us and bypass the guard
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> GuardedClient:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def scheme_for(self, host: str) -> Scheme:
        """The signature scheme that last worked for this host, else the signer's default."""
        default: Scheme = self._signer.default_scheme if self._signer else "cavage"
        return self._schemes.get(host.lower(), default)

    def _remember(self, host: str, scheme: Scheme) -> None:
        self._schemes[host.lower()] = scheme
        self._schemes.move_to_end(host.lower())
        while len(self._schemes) > _MAX_HOSTS:
            self._schemes.popitem(last=False)

    def _check_url(self, url: str) -> URL:
        """Parse and refuse non-HTTP schemes and literal non-public IPs (the resolver sees only names)."""
        try:
            parsed = URL(url)
        except (ValueError, TypeError) as exc:
            raise FetchError(f"invalid URL {url!r}") from exc
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise FetchError(f"refusing URL {url!r}: only absolute http(s) URLs are fetched")
        if not self._allow_private:
            try:
                literal = ip_address(parsed.host.split("%", 1)[0])
            except ValueError:
                literal = None
            if literal is not None and not is_public_address(literal):
                raise FetchError(f"refusing {url}: {parsed.host} is not a public address{PRIVATE_HINT}")
        return parsed

    async def _read(self, resp: aiohttp.ClientResponse, strict: bool) -> bytes:
        """Read at most max_bytes; strict raises past the cap, otherwise the body is cut."""
        declared = resp.content_length
        if declared is not None and declared > self._max_bytes:
            if strict:
                raise FetchError(f"response larger than {self._max_bytes} bytes (Content-Length {declared})")
            return b""
        buf = bytearray()
        async for chunk in resp.content.iter_chunked(65536):
            buf += chunk
            if len(buf) > self._max_bytes:
                if strict:
                    raise FetchError(f"response larger than {self._max_bytes} bytes")
                return bytes(buf[: self._max_bytes])
        return bytes(buf)

    async def _raw(
        self, method: str, url: URL, headers: Mapping[str, str], body: bytes | None, strict: bool
    ) -> Response:
        if self._session is None:
            raise RuntimeError("GuardedClient.start() was not called")
        try:
            async with self._session.request(
                method, url, headers=dict(headers), data=body, allow_redirects=False
            ) as resp:
                data = await self._read(resp, strict)
                merged: dict[str, str] = {}
                for name, value in resp.headers.items():
                    key = name.lower()
                    merged[key] = f"{merged[key]}, {value}" if key in merged else value
                return Response(resp.status, merged, data, str(url))
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, BlockedAddress):
                raise FetchError(f"refusing {url}: {exc.os_error}{PRIVATE_HINT}") from exc
            raise FetchError(f"cannot connect to {url.host}: {exc.os_error}") from exc
        except TimeoutError as exc:
            raise FetchError(f"timed out after {self._timeout}s: {method} {url}") from exc
        except (aiohttp.ClientError, ValueError) as exc:
            raise FetchError(f"{method} {url} failed: {exc!r}") from exc

    def _signed_headers(
        self, method: str, url: URL, headers: Mapping[str, str], body: bytes | None, scheme: Scheme
    ) -> dict[str, str]:
        assert self._signer is not None
        return sign_request(
            method, str(url), dict(headers), body, self._signer.private_key, self._signer.key_id,
            self._clock(), scheme=scheme,
        )

    async def _request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        *,
        signed: bool,
        strict: bool,
    ) -> Response:
        """One hop, no redirects. Signed: knock a second time with cavage when RFC 9421 gets 401/403."""
        parsed = self._check_url(url)
        if not signed or self._signer is None:
            return await self._raw(method, parsed, headers, body, strict)
        host = parsed.host or ""
        scheme = self.scheme_for(host)
        signed_headers = self._signed_headers(method, parsed, headers, body, scheme)
        resp = await self._raw(method, parsed, signed_headers, body, strict)
        if resp.status in (401, 403) and scheme == "rfc9421":
            # Double knock (as Fedify does): most of the fediverse only knows draft-cavage.
            resp = await self._raw(
                method, parsed, self._signed_headers(method, parsed, headers, body, "cavage"), body, strict
            )
            scheme = "cavage"
        if resp.status not in (401, 403):
            self._remember(host, scheme)
        return resp

    async def _follow(self, url: str, headers: Mapping[str, str], signed: bool) -> Response:
        """GET following at most max_redirects redirects, each target checked again by the guard."""
        current = _defrag(url)
        for hop in range(self._max_redirects + 1):
            resp = await self._request("GET", current, headers, None, signed=signed, strict=True)
            location = resp.headers.get("location")
            if resp.status not in _REDIRECTS or not location:
                return resp
            if hop == self._max_redirects:
                raise FetchError(f"too many redirects (more than {self._max_redirects}) from {url}")
            try:
                target = URL(current).join(URL(location))
            except ValueError as exc:
                raise FetchError(f"bad redirect Location {location!r}") from exc
            if URL(current).scheme == "https" and target.scheme == "http":
                raise FetchError(f"refusing redirect from https to http: {target}")
            current = _defrag(str(target))
        raise AssertionError("unreachable")

    async def get(
        self, url: str, *, headers: Mapping[str, str] | None = None, signed: bool = False
    ) -> Response:
        """Guarded GET returning any status (304 for conditional feed polling); raises only FetchError."""
        return await self._follow(url, dict(headers or {}), signed)

    async def fetch_json(
        self, url: str, *, signed: bool = True, accept: str = AP_ACCEPT
    ) -> tuple[str, dict[str, Any]]:
        """(final URL after redirects, JSON object) without the id check: for callers that prove authority."""
        resp = await self._follow(url, {"Accept": accept}, signed)
        if not 200 <= resp.status < 300:
            raise FetchError(
                f"HTTP {resp.status} from {resp.url}", http_status=resp.status,
                retry_after=retry_after_seconds(resp.headers.get("retry-after"), self._clock()),
            )
        media_type = resp.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != "application/json" and not media_type.endswith("+json"):
            raise FetchError(f"{resp.url} answered {media_type or 'no content type'}, not JSON")
        try:
            doc = json.loads(resp.body)
        except (ValueError, RecursionError) as exc:
            raise FetchError(f"invalid JSON from {resp.url}") from exc
        if not isinstance(doc, dict):
            raise FetchError(f"{resp.url} did not return a JSON object")
        return resp.url, doc

    async def get_json(self, url: str, *, signed: bool = True, accept: str = AP_ACCEPT) -> dict[str, Any]:
        """Fetch an ActivityStreams document whose "id" is the URL it came from (Mastodon's rule).

        Only a fragment may differ: otherwise anyone able to serve JSON somewhere could speak for any id.
        """
        final, doc = await self.fetch_json(url, signed=signed, accept=accept)
        doc_id = doc.get("id")
        if not isinstance(doc_id, str):
            raise FetchError(f"document at {final} has no id")
        if _defrag(doc_id) != final:
            raise FetchError(f"document id {doc_id} does not match the URL it came from ({final})")
        return doc

    async def post(
        self,
        url: str,
        body: bytes,
        *,
        content_type: str = "application/activity+json",
        headers: Mapping[str, str] | None = None,
        signed: bool = True,
    ) -> Response:
        """Signed POST; redirects are not followed and HTTP statuses are returned, not raised."""
        all_headers = {**(headers or {}), "Content-Type": content_type}
        return await self._request("POST", url, all_headers, body, signed=signed, strict=False)


class Resolver:
    """Remote actors and keys, cached with a TTL; concurrent misses for one actor share one fetch."""

    def __init__(
        self,
        client: GuardedClient,
        ttl: timedelta = timedelta(hours=24),
        max_entries: int = 10_000,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.client = client
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._actors: OrderedDict[str, tuple[datetime, RemoteActor]] = OrderedDict()
        self._keys: OrderedDict[str, tuple[datetime, tuple[str, str]]] = OrderedDict()
        self._inflight: dict[tuple[str, str, bool], asyncio.Future[Any]] = {}

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
        self._put(self._actors, actor.id, actor)
        if actor.public_key_id and actor.public_key_pem:
            self._put(self._keys, actor.public_key_id, (actor.id, actor.public_key_pem))
        return actor

    async def _fetch_actor(self, actor_id: str) -> RemoteActor:
        doc = await self.client.get_json(actor_id)
        try:
            actor = parse_actor(doc)
        except ValueError as exc:
            raise FetchError(f"{actor_id} is not a usable actor: {exc}") from exc
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
        key_host = authority_of(key_id)
        final, doc = await self.client.fetch_json(key_id)
        doc_id = doc.get("id")
        if not isinstance(doc_id, str) or authority_of(doc_id) != key_host:
            raise FetchError(f"key document for {key_id} has no id on {key_host}")
        if "publicKey" in doc and _defrag(doc_id) == final:
            # Mastodon & co: the keyId is the actor URL plus "#main-key"; this doc is the actor itself.
            try:
                actor = self._store(parse_actor(doc))
            except ValueError as exc:
                raise FetchError(f"{doc_id} is not a usable actor: {exc}") from exc
        else:
            # A standalone key with "owner", or GoToSocial's ".../main-key" answering a minimal Person
            # whose id is the actor: neither is authoritative, so the owner's own document must list the key.
            owner = doc.get("owner") if "publicKeyPem" in doc else doc_id
            if not isinstance(owner, str) or authority_of(owner) != key_host:
                raise FetchError(f"key {key_id} has no owner on {key_host}")
            actor = await self._actor_with_key(owner, key_id, refresh)
        if actor.public_key_id != key_id or not actor.public_key_pem:
            raise FetchError(f"actor {actor.id} does not publish key {key_id}")
        if authority_of(actor.id) != key_host:
            raise FetchError(f"key {key_id} and its owner {actor.id} are on different hosts")
        result = (actor.id, actor.public_key_pem)
        self._put(self._keys, key_id, result)
        return result

    async def fetch_object(self, url: str) -> dict[str, Any]:
        """A remote object (e.g. a reply's parent, for thread completion), from its own origin."""
        return await self.client.get_json(url)

    def forget(self, actor_id: str) -> None:
        """Drop an actor and its keys (after its Update or Delete) so the next use refetches."""
        self._actors.pop(actor_id, None)
        for key_id in [k for k, (_, (owner, _pem)) in self._keys.items() if owner == actor_id]:
            del self._keys[key_id]
