"""The only outbound HTTP path of fedibridge: a guarded client (the actor/key cache is remote_actors.py).

Every URL we fetch comes from strangers (actor ids, key ids, inReplyTo links, inboxes), so one place
enforces what may be contacted (public addresses only, checked after DNS and on every redirect),
how long and how much we read, and how requests are signed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from ipaddress import ip_address
from types import TracebackType
from typing import Any
from urllib.parse import urldefrag

import aiohttp
from aiohttp.resolver import DefaultResolver
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from yarl import URL

from . import remote_json
from .config import Scheme
from .errors import FetchError
from .hosts import normalise_host, same_origin
from .netguard import BlockedAddress, GuardedResolver, is_noncanonical_ipv4, is_public_address
from .signatures import sign_request
from .signing import SigningPool
from .store import utcnow

AP_ACCEPT = 'application/activity+json, application/ld+json; profile="https://www.w3.org/ns/activitystreams"'
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_HOSTS = 10_000


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


def defrag(url: str) -> str:
    return urldefrag(url)[0]


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
        signing_threads: int = 0,
    ) -> None:
        self._user_agent = user_agent
        self._signer = signer
        # POSTs (deliveries, Accepts) are signed on these threads; GETs stay inline (see _signed_headers)
        self._pool = SigningPool(signer.private_key, signer.key_id, signing_threads) if signer else None
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
        if self._pool is not None:
            self._pool.close()  # signings already handed to the threads finish first (milliseconds)

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
        return self._schemes.get(normalise_host(host), default)

    def _remember(self, host: str, scheme: Scheme) -> None:
        host = normalise_host(host)
        self._schemes[host] = scheme
        self._schemes.move_to_end(host)
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
        if is_noncanonical_ipv4(parsed.host):  # whatever allow_private says: never a real server's name
            raise FetchError(f"refusing {url}: {parsed.host} is not a canonical IPv4 address")
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

    async def _signed_headers(
        self, method: str, url: URL, headers: Mapping[str, str], body: bytes | None, scheme: Scheme
    ) -> dict[str, str]:
        """Signature headers; a request with a body is signed on the pool's threads.

        An RSA signature is ~0.3 ms of CPU: inline, a burst of Accepts holds the event loop (and every 202)
        that long each, while `cryptography` signs with the GIL released on a second core. A GET stays
        inline: it usually gates an inbox answer, which must not queue behind a burst of deliveries.
        """
        assert self._signer is not None and self._pool is not None
        if body is not None:
            return await self._pool.sign(method, str(url), headers, body, self._clock(), scheme)
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
        signed_headers = await self._signed_headers(method, parsed, headers, body, scheme)
        resp = await self._raw(method, parsed, signed_headers, body, strict)
        if resp.status in (401, 403) and scheme == "rfc9421":
            # Double knock (as Fedify does): most of the fediverse only knows draft-cavage.
            resp = await self._raw(
                method, parsed, await self._signed_headers(method, parsed, headers, body, "cavage"), body, strict
            )
            scheme = "cavage"
        if resp.status not in (401, 403):
            self._remember(host, scheme)
        return resp

    async def _follow(
        self, url: str, headers: Mapping[str, str], signed: bool, method: str = "GET", *, own_origin: bool = False
    ) -> Response:
        """GET (or HEAD) following at most max_redirects redirects, each target checked again by the guard.

        own_origin: a redirect leaving the origin of `url` is refused. Identity documents need it: a server may
        move its own documents around, but a redirect must never make another server answer for `url`.
        """
        current = defrag(url)
        for hop in range(self._max_redirects + 1):
            # HEAD is not strict: its Content-Length describes a body that never comes, whatever its size.
            resp = await self._request(method, current, headers, None, signed=signed, strict=method == "GET")
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
            if own_origin and not same_origin(str(target), url):
                raise FetchError(f"refusing redirect of {defrag(url)} to another origin: {target}")
            current = defrag(str(target))
        raise AssertionError("unreachable")

    async def get(
        self, url: str, *, headers: Mapping[str, str] | None = None, signed: bool = False
    ) -> Response:
        """Guarded GET returning any status (304 for conditional feed polling); raises only FetchError."""
        return await self._follow(url, dict(headers or {}), signed)

    async def head(self, url: str) -> Response:
        """Guarded, unsigned HEAD (redirects followed and re-checked): a resource's size without its body."""
        return await self._follow(url, {}, False, "HEAD")

    async def fetch_json(
        self, url: str, *, signed: bool = True, accept: str = AP_ACCEPT
    ) -> tuple[str, dict[str, Any]]:
        """(final URL after redirects, JSON object) without the id check: for callers that prove authority.

        Redirects are followed on the origin of `url` only (see _follow), so the final URL is on it too.
        """
        resp = await self._follow(url, {"Accept": accept}, signed, own_origin=True)
        if not 200 <= resp.status < 300:
            raise FetchError(
                f"HTTP {resp.status} from {resp.url}", http_status=resp.status,
                retry_after=retry_after_seconds(resp.headers.get("retry-after"), self._clock()),
            )
        media_type = resp.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != "application/json" and not media_type.endswith("+json"):
            raise FetchError(f"{resp.url} answered {media_type or 'no content type'}, not JSON")
        try:
            doc = remote_json.loads(resp.body)
        except ValueError as exc:
            raise FetchError(f"invalid JSON from {resp.url}: {exc}") from None
        if not isinstance(doc, dict):
            raise FetchError(f"{resp.url} did not return a JSON object")
        return resp.url, doc

    async def get_json(self, url: str, *, signed: bool = True, accept: str = AP_ACCEPT) -> dict[str, Any]:
        """Fetch an ActivityStreams document whose "id" is the URL it came from (Mastodon's rule).

        Only a fragment may differ: otherwise anyone able to serve JSON somewhere could speak for any id.
        After a redirect (on `url`'s origin only, see fetch_json) the id must be the final URL: the caller
        gets that document under its own id, never as `url`'s.
        """
        final, doc = await self.fetch_json(url, signed=signed, accept=accept)
        doc_id = doc.get("id")
        if not isinstance(doc_id, str):
            raise FetchError(f"document at {final} has no id")
        if defrag(doc_id) != final:
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
