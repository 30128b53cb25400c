"""resolver: the SSRF guard, caps, redirects, signing with double knock, and the actor/key cache.

Remote instances are real aiohttp servers on 127.0.0.1; the blog's requests are really signed and the
servers really verify them with fedibridge.signatures.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fedibridge.errors import FetchError
from fedibridge.http_client import GuardedClient, Signer
from fedibridge.netguard import is_public_address
from fedibridge.remote_actors import Resolver
from fedibridge.signatures import load_public_key, verify_request

UA = "fedibridge/0.1.0 (+https://blog.example.org/fediverse)"
OUR_KEY_ID = "https://blog.example.org/fediverse/users/blog#main-key"
AP = "application/activity+json"

Serve = Callable[[list[web.RouteDef]], Awaitable[tuple[TestServer, Counter[str]]]]


def pem_of(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@pytest.fixture(scope="module")
def remote_key() -> rsa.RSAPrivateKey:
    """The key of the remote accounts the tests resolve (ours is conftest's rsa_key)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def signer(rsa_key: rsa.RSAPrivateKey) -> Signer:
    return Signer(rsa_key, OUR_KEY_ID)


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start a loopback "remote instance"; the Counter counts requests per path."""
    servers: list[TestServer] = []

    async def start(routes: list[web.RouteDef]) -> tuple[TestServer, Counter[str]]:
        hits: Counter[str] = Counter()

        @web.middleware
        async def count(request: web.Request, handler: Any) -> web.StreamResponse:
            hits[request.path] += 1
            response: web.StreamResponse = await handler(request)
            return response

        app = web.Application(middlewares=[count])
        app.add_routes(routes)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return server, hits

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def client(signer: Signer) -> AsyncIterator[GuardedClient]:
    guarded = GuardedClient(user_agent=UA, signer=signer, allow_private=True, max_bytes=4096, timeout=2.0)
    async with guarded:
        yield guarded


def ap_response(doc: Any, status: int = 200) -> web.Response:
    # raw UTF-8 (no \\u escapes), as Mastodon sends it
    return web.Response(status=status, body=json.dumps(doc, ensure_ascii=False).encode(), content_type=AP,
                        charset="utf-8")


async def secret(request: web.Request) -> web.Response:
    return web.Response(text="secret")


def base_of(request: web.Request) -> str:
    return str(request.url.origin())


def mastodon_actor(base: str, name: str, pem: str, key_id: str | None = None) -> dict[str, Any]:
    """An actor shaped like Mastodon 4.x serves it (trimmed of fields we do not read)."""
    actor_id = f"{base}/users/{name}"
    return {
        "@context": [
            "https://www.w3.org/ns/activitystreams",
            "https://w3id.org/security/v1",
            {"manuallyApprovesFollowers": "as:manuallyApprovesFollowers", "toot": "http://joinmastodon.org/ns#"},
        ],
        "id": actor_id,
        "type": "Person",
        "following": f"{actor_id}/following",
        "followers": f"{actor_id}/followers",
        "inbox": f"{actor_id}/inbox",
        "outbox": f"{actor_id}/outbox",
        "preferredUsername": name,
        "name": "Zoé Lefèvre « la vraie » 🌻",
        "summary": "<p>Photographe à Montréal</p>",
        "url": f"{base}/@{name}",
        "manuallyApprovesFollowers": False,
        "published": "2023-04-01T00:00:00Z",
        "publicKey": {"id": key_id or f"{actor_id}#main-key", "owner": actor_id, "publicKeyPem": pem},
        "endpoints": {"sharedInbox": f"{base}/inbox"},
    }


# -- SSRF guard ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.255.0.9", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255", "192.0.2.1", "198.18.0.1",
    "::1", "::", "fe80::1", "fe80::1%eth0", "fc00::1", "fd12:3456:789a::1", "fec0::1", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::127.0.0.1",
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "2002:7f00:1::1", "2002:c0a8:101::1",  # 6to4 wrapping 127.0.0.1 and 192.168.1.1
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "2001:db8::1",
])
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public_address(address)


@pytest.mark.parametrize("address", [
    "8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700:4700::1111", "2a01:4f8:c17:1::1",
    "::ffff:8.8.8.8", "64:ff9b::808:808",
])
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_public_address(address)


async def test_guard_refuses_inner_addresses_before_any_request(serve: Serve, signer: Signer) -> None:
    server, hits = await serve([web.get("/{tail:.*}", secret)])
    port = server.port
    async with GuardedClient(user_agent=UA, signer=signer) as guarded:
        for url in [
            f"http://127.0.0.1:{port}/",
            f"http://[::1]:{port}/",
            f"http://[::ffff:127.0.0.1]:{port}/",
            f"http://localhost:{port}/",  # a name resolving to loopback: checked after DNS
            "http://10.0.0.1/",
            "http://169.254.169.254/latest/meta-data/",
        ]:
            with pytest.raises(FetchError, match="public address"):
                await guarded.get(url)
            with pytest.raises(FetchError, match="public address"):
                await guarded.post(url, b"{}")
        for url in ["file:///etc/passwd", "gopher://127.0.0.1/", "ftp://example.org/x", "/relative"]:
            with pytest.raises(FetchError, match="http"):
                await guarded.get(url)
    assert sum(hits.values()) == 0


async def test_allow_private_lifts_the_guard(serve: Serve, signer: Signer) -> None:
    async def echo_agent(request: web.Request) -> web.Response:
        return web.Response(text=request.headers["User-Agent"])

    server, hits = await serve([web.get("/ok", echo_agent)])
    async with GuardedClient(user_agent=UA, signer=signer, allow_private=True) as guarded:
        for host in ("127.0.0.1", "localhost"):
            resp = await guarded.get(f"http://{host}:{server.port}/ok")
            assert resp.status == 200
            assert resp.body == UA.encode()
    assert hits["/ok"] == 2


# -- redirects -----------------------------------------------------------------------------------------


async def hop(request: web.Request) -> web.Response:
    """/r/N redirects (relative Location) down to /r/0, which serves a document with its own id."""
    n = int(request.match_info["n"])
    if n == 0:
        return ap_response({"id": f"{base_of(request)}/r/0", "type": "Note", "content": "fin 🎉"})
    raise web.HTTPFound(f"../r/{n - 1}" if n % 2 else f"/r/{n - 1}")


async def test_redirects_are_followed_up_to_the_limit(serve: Serve, client: GuardedClient) -> None:
    server, hits = await serve([web.get("/r/{n}", hop)])
    doc = await client.get_json(str(server.make_url("/r/3")))
    assert doc["id"] == str(server.make_url("/r/0"))  # id checked against the final URL, not the first
    assert doc["content"] == "fin 🎉"
    assert sum(hits.values()) == 4
    hits.clear()
    with pytest.raises(FetchError, match="too many redirects"):
        await client.get_json(str(server.make_url("/r/4")))
    assert sum(hits.values()) == 4  # the fifth hop was never requested


async def test_each_redirect_target_is_checked_again(serve: Serve, client: GuardedClient) -> None:
    async def to_file(request: web.Request) -> web.Response:
        raise web.HTTPFound("file:///etc/passwd")

    server, _ = await serve([web.get("/evil", to_file)])
    with pytest.raises(FetchError, match="only absolute http"):
        await client.get(str(server.make_url("/evil")))


async def test_post_does_not_follow_redirects(serve: Serve, client: GuardedClient) -> None:
    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/elsewhere")

    server, hits = await serve([web.post("/inbox", moved), web.post("/elsewhere", secret)])
    resp = await client.post(str(server.make_url("/inbox")), b'{"type": "Create"}')
    assert resp.status == 307
    assert resp.headers["location"] == "/elsewhere"
    assert hits == Counter({"/inbox": 1})


# -- caps, timeouts, content ---------------------------------------------------------------------------


async def test_size_cap(serve: Serve, client: GuardedClient) -> None:
    async def declared(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 5000, content_type=AP)

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": AP})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        try:
            for _ in range(2000):
                await resp.write(b" " * 1024)
        except (ConnectionError, RuntimeError):
            pass  # the client hung up once over its cap
        return resp

    async def exact(request: web.Request) -> web.Response:
        return web.Response(body=b"y" * 4096, content_type=AP)

    server, _ = await serve([web.get("/declared", declared), web.get("/chunked", chunked),
                             web.get("/exact", exact), web.post("/inbox", declared)])
    with pytest.raises(FetchError, match=r"larger than 4096 bytes \(Content-Length 5000\)"):
        await client.get(str(server.make_url("/declared")))
    with pytest.raises(FetchError, match="larger than 4096 bytes"):
        await client.get_json(str(server.make_url("/chunked")))
    assert (await client.get(str(server.make_url("/exact")))).body == b"y" * 4096
    # a delivery answered with a huge body still reports its status: POSTs cut the body, never fail on it
    posted = await client.post(str(server.make_url("/inbox")), b"{}")
    assert posted.status == 200 and len(posted.body) <= 4096


async def test_timeout(serve: Serve, signer: Signer) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.Response(text="too late")

    server, _ = await serve([web.get("/slow", slow)])
    async with GuardedClient(user_agent=UA, signer=signer, allow_private=True, timeout=0.5) as guarded:
        started = time.monotonic()
        with pytest.raises(FetchError, match="timed out"):
            await guarded.get(str(server.make_url("/slow")))
        assert time.monotonic() - started < 2


async def test_json_documents_are_checked(serve: Serve, client: GuardedClient) -> None:
    async def doc(request: web.Request) -> web.Response:
        me = f"{base_of(request)}{request.path}"
        match request.match_info["what"]:
            case "good":
                return ap_response({"id": me, "type": "Note", "content": "« Très bien » 👍"})
            case "fragment":
                return ap_response({"id": me + "#note", "type": "Note"})
            case "plain-json":
                return web.json_response({"id": me, "type": "Note"})
            case "mismatch":  # a server vouching for an object it does not host
                return ap_response({"id": "https://mastodon.example/users/victim", "type": "Person"})
            case "slash":
                return ap_response({"id": me + "/", "type": "Note"})
            case "no-id":
                return ap_response({"type": "Note"})
            case "invalid":
                return web.Response(body=b'{"id": "x",', content_type=AP)
            case "array":
                return ap_response([{"id": me}])
            case "html":
                return web.Response(text="<html></html>", content_type="text/html")
            case "gone":
                return web.Response(status=410, text="gone")
            case _:
                return web.Response(status=429, headers={"Retry-After": "120"})

    server, _ = await serve([web.get("/o/{what}", doc)])

    def url(what: str) -> str:
        return str(server.make_url(f"/o/{what}"))

    assert (await client.get_json(url("good")))["content"] == "« Très bien » 👍"
    assert (await client.get_json(url("fragment")))["id"].endswith("#note")
    assert (await client.get_json(url("plain-json") + "#ignored"))["type"] == "Note"
    for what, message in [("mismatch", "does not match"), ("slash", "does not match"), ("no-id", "no id"),
                          ("invalid", "invalid JSON"), ("array", "not return a JSON object"),
                          ("html", "not JSON")]:
        with pytest.raises(FetchError, match=message):
            await client.get_json(url(what))
    with pytest.raises(FetchError) as gone:
        await client.get_json(url("gone"))
    assert gone.value.http_status == 410
    with pytest.raises(FetchError) as busy:
        await client.get_json(url("busy"))
    assert busy.value.http_status == 429 and busy.value.retry_after == 120


# -- signing -------------------------------------------------------------------------------------------


def verifier(
    key: rsa.RSAPrivateKey, seen: list[tuple[str | None, bool, str]]
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A handler that really verifies the signature, as an authorized-fetch Mastodon would."""
    public = load_public_key(pem_of(key))

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        result = verify_request(request.method, request.raw_path, request.headers, body, public,
                                datetime.now(UTC))
        seen.append((result.scheme, result.ok, request.headers.get("Accept", "")))
        if not result.ok:
            return web.json_response({"error": result.reason}, status=401)
        if request.method == "POST":
            return web.Response(status=202)
        return ap_response({"id": f"{base_of(request)}{request.path_qs}", "type": "Note"})

    return handler


async def test_signed_get_is_verified_by_the_server(
    serve: Serve, client: GuardedClient, rsa_key: rsa.RSAPrivateKey
) -> None:
    seen: list[tuple[str | None, bool, str]] = []
    server, _ = await serve([web.get("/statuses/{id}", verifier(rsa_key, seen))])
    doc = await client.get_json(str(server.make_url("/statuses/1?page=true")))
    assert doc["type"] == "Note"
    assert seen == [("cavage", True, 'application/activity+json, application/ld+json; '
                                     'profile="https://www.w3.org/ns/activitystreams"')]
    # an unsigned fetch is refused by such a server: proof the signature is what got us in
    with pytest.raises(FetchError) as refused:
        await client.get_json(str(server.make_url("/statuses/2")), signed=False)
    assert refused.value.http_status == 401


async def test_double_knock_falls_back_to_cavage_and_remembers(
    serve: Serve, rsa_key: rsa.RSAPrivateKey
) -> None:
    seen: list[tuple[str | None, bool, str]] = []
    check = verifier(rsa_key, seen)

    async def cavage_only(request: web.Request) -> web.Response:
        if "Signature-Input" in request.headers:  # an older Mastodon: RFC 9421 is unknown to it
            seen.append(("rfc9421", False, ""))
            return web.Response(status=401, text="signature required")
        return await check(request)

    server, _ = await serve([web.post("/inbox", cavage_only)])
    signer = Signer(rsa_key, OUR_KEY_ID, default_scheme="rfc9421")
    async with GuardedClient(user_agent=UA, signer=signer, allow_private=True) as guarded:
        body = json.dumps({"type": "Create", "content": "Élan « vital » 🚀"}, ensure_ascii=False).encode()
        resp = await guarded.post(str(server.make_url("/inbox")), body)
        assert resp.status == 202
        assert [(s, ok) for s, ok, _ in seen] == [("rfc9421", False), ("cavage", True)]
        assert guarded.scheme_for("127.0.0.1") == "cavage"
        assert guarded.scheme_for("other.example") == "rfc9421"
        seen.clear()
        assert (await guarded.post(str(server.make_url("/inbox")), body)).status == 202
        assert [(s, ok) for s, ok, _ in seen] == [("cavage", True)]  # no second knock any more


async def test_rfc9421_is_kept_where_it_works(serve: Serve, rsa_key: rsa.RSAPrivateKey) -> None:
    seen: list[tuple[str | None, bool, str]] = []
    server, _ = await serve([web.post("/inbox", verifier(rsa_key, seen))])
    signer = Signer(rsa_key, OUR_KEY_ID, default_scheme="rfc9421")
    async with GuardedClient(user_agent=UA, signer=signer, allow_private=True) as guarded:
        assert (await guarded.post(str(server.make_url("/inbox")), b'{"type": "Like"}')).status == 202
        assert [(s, ok) for s, ok, _ in seen] == [("rfc9421", True)]
        assert guarded.scheme_for("127.0.0.1") == "rfc9421"


class ThreadNoting:
    """Our real key, noting the thread of every signature it makes (the one thing the test observes)."""

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self.key = key
        self.threads: list[str] = []

    def sign(self, data: bytes, *args: Any) -> bytes:
        self.threads.append(threading.current_thread().name)
        return self.key.sign(data, *args)


@pytest.mark.parametrize("scheme", ["cavage", "rfc9421"])
async def test_posts_are_signed_off_the_event_loop_and_gets_on_it(
    serve: Serve, rsa_key: rsa.RSAPrivateKey, scheme: str
) -> None:
    """Deliveries and Accepts are signed on the signing threads (an RSA signature would hold the event loop
    and every 202 behind it); a GET, which usually gates an inbox answer, is signed inline. Both verify."""
    seen: list[tuple[str | None, bool, str]] = []
    check = verifier(rsa_key, seen)
    server, _ = await serve([web.post("/inbox", check), web.get("/statuses/{id}", check)])
    noting = ThreadNoting(rsa_key)
    signer = Signer(noting, OUR_KEY_ID, default_scheme=scheme)  # type: ignore[arg-type]
    async with GuardedClient(user_agent=UA, signer=signer, allow_private=True, signing_threads=2) as guarded:
        bodies = [json.dumps({"type": "Accept", "n": i, "summary": "Bienvenue « ici » 🎉"},
                             ensure_ascii=False).encode() for i in range(20)]
        answers = await asyncio.gather(*(guarded.post(str(server.make_url("/inbox")), b) for b in bodies))
        assert [a.status for a in answers] == [202] * 20
        posts = list(noting.threads)
        assert (await guarded.get_json(str(server.make_url("/statuses/1"))))["type"] == "Note"
    loop_thread = threading.current_thread().name
    assert len(posts) == 20 and all(name.startswith("fedibridge-sign") for name in posts), posts
    assert noting.threads[20:] == [loop_thread]
    assert [(s, ok) for s, ok, _ in seen] == [(scheme, True)] * 21


# -- Resolver: actors and keys -------------------------------------------------------------------------


def instance_routes(pem: str, delay: list[float]) -> list[web.RouteDef]:
    """Mastodon-style actors, a GoToSocial-style /main-key, and a standalone key document."""

    async def actor(request: web.Request) -> web.Response:
        await asyncio.sleep(delay[0])
        base, name = base_of(request), request.match_info["name"]
        key_id = {
            "gts": f"{base}/users/gts/main-key",
            "carol": f"{base}/keys/carol",
        }.get(name)
        return ap_response(mastodon_actor(base, name, pem, key_id))

    async def gts_main_key(request: web.Request) -> web.Response:
        # GoToSocial answers its key URL with a minimal Person whose id is the actor, not the key.
        base = base_of(request)
        return ap_response({
            "@context": ["https://w3id.org/security/v1", "https://www.w3.org/ns/activitystreams"],
            "id": f"{base}/users/gts",
            "preferredUsername": "gts",
            "publicKey": {
                "id": f"{base}/users/gts/main-key", "owner": f"{base}/users/gts", "publicKeyPem": pem,
            },
            "type": "Person",
        })

    async def key_doc(request: web.Request) -> web.Response:
        base, name = base_of(request), request.match_info["name"]
        owner = request.query.get("owner", f"{base}/users/{name}")
        return ap_response({"@context": "https://w3id.org/security/v1", "id": f"{base}/keys/{name}",
                            "type": "Key", "owner": owner, "publicKeyPem": pem})

    return [web.get("/users/gts/main-key", gts_main_key), web.get("/users/{name}", actor),
            web.get("/keys/{name}", key_doc)]


async def test_actor_cache(serve: Serve, client: GuardedClient, remote_key: rsa.RSAPrivateKey) -> None:
    now = [datetime(2024, 7, 14, 12, 0, tzinfo=UTC)]
    server, hits = await serve(instance_routes(pem_of(remote_key), [0.0]))
    resolver = Resolver(client, ttl=timedelta(hours=24), clock=lambda: now[0])
    alice_id = str(server.make_url("/users/alice"))

    alice = await resolver.actor(alice_id)
    assert (alice.id, alice.inbox, alice.shared_inbox) == (alice_id, f"{alice_id}/inbox",
                                                           str(server.make_url("/inbox")))
    assert alice.name == "Zoé Lefèvre « la vraie » 🌻"
    assert await resolver.actor(alice_id) is alice
    assert hits["/users/alice"] == 1
    await resolver.actor(alice_id, refresh=True)
    assert hits["/users/alice"] == 2
    now[0] += timedelta(hours=25)  # past the TTL
    await resolver.actor(alice_id)
    assert hits["/users/alice"] == 3
    resolver.forget(alice_id)  # e.g. after an Update(Person)
    await resolver.actor(alice_id)
    assert hits["/users/alice"] == 4


async def test_concurrent_misses_share_one_fetch(
    serve: Serve, client: GuardedClient, remote_key: rsa.RSAPrivateKey
) -> None:
    server, hits = await serve(instance_routes(pem_of(remote_key), [0.2]))
    resolver = Resolver(client)
    actors = await asyncio.gather(*(resolver.actor(str(server.make_url("/users/bob"))) for _ in range(8)))
    assert hits["/users/bob"] == 1
    assert all(a is actors[0] for a in actors)


async def test_burst_of_signed_posts_fetches_the_key_once(
    serve: Serve, client: GuardedClient, remote_key: rsa.RSAPrivateKey
) -> None:
    """A new server's first burst (Mastodon sends a reply, a like and a boost at once) must not make us
    fetch its actor once per activity."""
    server, hits = await serve(instance_routes(pem_of(remote_key), [0.2]))
    resolver = Resolver(client)
    key_id = str(server.make_url("/users/bob")) + "#main-key"
    keys = await asyncio.gather(*(resolver.key(key_id) for _ in range(12)))
    assert hits["/users/bob"] == 1
    assert len(set(keys)) == 1 and keys[0][0] == str(server.make_url("/users/bob"))


async def test_actor_fetch_errors_are_fetch_errors(serve: Serve, client: GuardedClient) -> None:
    async def note(request: web.Request) -> web.Response:
        return ap_response({"id": f"{base_of(request)}{request.path}", "type": "Note", "content": "hi"})

    server, _ = await serve([web.get("/users/{name}", note)])
    with pytest.raises(FetchError, match="not a usable actor"):
        await Resolver(client).actor(str(server.make_url("/users/not-a-person")))


async def test_key_for_mastodon_main_key_fragment(
    serve: Serve, client: GuardedClient, remote_key: rsa.RSAPrivateKey
) -> None:
    pem = pem_of(remote_key)
    server, hits = await serve(instance_routes(pem, [0.0]))
    resolver = Resolver(client)
    actor_id = str(server.make_url("/users/alice"))
    assert await resolver.key(f"{actor_id}#main-key") == (actor_id, pem)
    assert await resolver.key(f"{actor_id}#main-key") == (actor_id, pem)
    assert (await resolver.actor(actor_id)).public_key_pem == pem  # the key fetch cached the actor too
    assert hits["/users/alice"] == 1
    with pytest.raises(FetchError, match="does not publish key"):
        await resolver.key(f"{actor_id}#other-key")
    await resolver.key(f"{actor_id}#main-key", refresh=True)
    assert hits["/users/alice"] == 3


async def test_key_for_gotosocial_main_key_path(
    serve: Serve, client: GuardedClient, remote_key: rsa.RSAPrivateKey
) -> None:
    pem = pem_of(remote_key)
    server, hits = await serve(instance_routes(pem, [0.0]))
    key_id = str(server.make_url("/users/gts/main-key"))
    owner, got = await Resolver(client).key(key_id)
    assert (owner, got) == (str(server.make_url("/users/gts")), pem)
    assert hits == Counter({"/users/gts/main-key": 1, "/users/gts": 1})  # the owner's own doc confirmed it


async def test_key_for_standalone_key_document(
    serve: Serve, client: GuardedClient, remote_key: rsa.RSAPrivateKey
) -> None:
    pem = pem_of(remote_key)
    server, hits = await serve(instance_routes(pem, [0.0]))
    resolver = Resolver(client)
    key_id = str(server.make_url("/keys/carol"))
    assert await resolver.key(key_id) == (str(server.make_url("/users/carol")), pem)
    assert hits["/users/carol"] == 1
    # a key naming an owner whose actor does not list it is refused (alice lists only #main-key)
    with pytest.raises(FetchError, match="does not publish key"):
        await resolver.key(str(server.make_url("/keys/alice")))
    # and the owner must live on the key's host: "localhost" is another host than 127.0.0.1
    foreign_owner = f"http://localhost:{server.port}/users/carol"
    with pytest.raises(FetchError, match="no owner"):
        await resolver.key(str(server.make_url("/keys/carol").with_query(owner=foreign_owner)))


async def test_fetch_object_uses_the_guard(signer: Signer, serve: Serve) -> None:
    server, hits = await serve([web.get("/{tail:.*}", secret)])
    async with GuardedClient(user_agent=UA, signer=signer) as guarded:
        with pytest.raises(FetchError, match="public address"):
            await Resolver(guarded).fetch_object(str(server.make_url("/users/alice/statuses/1")))
    assert sum(hits.values()) == 0


# -- hostile addresses and documents -------------------------------------------------------------------


@pytest.mark.parametrize("allow_private", [False, True])
async def test_non_canonical_ipv4_hosts_are_refused_whatever_the_settings(
        serve: Serve, signer: Signer, allow_private: bool) -> None:
    """Decimal, octal, hex and short forms of 127.0.0.1 never reach a socket, even with private addresses allowed."""
    server, hits = await serve([web.get("/{tail:.*}", secret), web.post("/{tail:.*}", secret)])
    async with GuardedClient(user_agent=UA, signer=signer, allow_private=allow_private) as guarded:
        for host in ("2130706433", "0177.0.0.1", "127.1", "0", "0x7f.0.0.1", "0x7f000001", "127.0.0.1."):
            url = f"http://{host}:{server.port}/secret"
            with pytest.raises(FetchError, match="canonical IPv4"):
                await guarded.get(url)
            with pytest.raises(FetchError, match="canonical IPv4"):
                await guarded.post(url, b"{}")
        # ... nor as a redirect target
        async def to_decimal(request: web.Request) -> web.Response:
            raise web.HTTPFound(f"http://2130706433:{server.port}/secret")

        hop_server, _ = await serve([web.get("/go", to_decimal)])
        if allow_private:
            with pytest.raises(FetchError, match="canonical IPv4"):
                await guarded.get(f"http://127.0.0.1:{hop_server.port}/go")
    assert hits["/secret"] == 0


def nested_json(depth: int, leaf: str) -> bytes:
    return b'{"href":' * depth + json.dumps(leaf).encode() + b"}" * depth


async def test_deeply_nested_documents_are_refused_not_recursed(serve: Serve, signer: Signer) -> None:
    """A fetched document nested deeper than remote_json.MAX_DEPTH is a FetchError, never a RecursionError."""
    async def actor(request: web.Request) -> web.Response:
        name, base = request.match_info["name"], base_of(request)
        head = json.dumps({"id": f"{base}/users/{name}", "type": "Person", "preferredUsername": name,
                           "inbox": f"{base}/users/{name}/inbox"})[:-1].encode()
        depth = 900 if name == "deep" else 3  # 900: Python's json parses it, our walkers would then recurse
        return web.Response(body=head + b',"url":' + nested_json(depth, f"{base}/@{name}") + b"}", content_type=AP)

    async def deep_note(request: web.Request) -> web.Response:
        return web.Response(body=nested_json(5000, "x"), content_type=AP)

    server, _ = await serve([web.get("/users/{name}", actor), web.get("/notes/deep", deep_note)])
    base = f"http://127.0.0.1:{server.port}"
    async with GuardedClient(user_agent=UA, signer=signer, allow_private=True) as guarded:
        resolver = Resolver(guarded)
        with pytest.raises(FetchError, match="nested deeper"):
            await resolver.actor(f"{base}/users/deep")
        with pytest.raises(FetchError, match="invalid JSON"):
            await resolver.fetch_object(f"{base}/notes/deep")
        # A document of ordinary depth is read as before: the cap is not in the way of real ones.
        shallow = await resolver.actor(f"{base}/users/shallow")
        assert shallow.url == f"{base}/@shallow"


# -- identity: a redirect never changes who someone is ---------------------------------------------------


async def test_identity_fetches_never_follow_a_redirect_to_another_origin(
    serve: Serve, client: GuardedClient, remote_key: rsa.RSAPrivateKey
) -> None:
    """An attacker's actor, key, note and collection URLs redirect to a victim's real documents."""
    pem = pem_of(remote_key)

    async def note(request: web.Request) -> web.Response:
        base = base_of(request)
        return ap_response({"id": f"{base}/notes/1", "type": "Note", "attributedTo": f"{base}/users/alice"})

    async def collection(request: web.Request) -> web.Response:
        return ap_response({"id": f"{base_of(request)}/users/alice/followers", "type": "OrderedCollection",
                            "totalItems": 3})

    victim, _ = await serve([web.get("/notes/1", note), web.get("/users/alice/followers", collection)]
                            + instance_routes(pem, [0.0]))
    to_victim = {"/users/mallory": "/users/alice", "/notes/9": "/notes/1",
                 "/users/mallory/followers": "/users/alice/followers", "/feed": "/users/alice"}

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(str(victim.make_url(to_victim[request.path])))

    attacker, _ = await serve([web.get(path, redirect) for path in to_victim])
    resolver = Resolver(client)
    for path in ("/users/mallory", "/notes/9", "/users/mallory/followers"):
        with pytest.raises(FetchError, match="another origin"):
            await client.get_json(str(attacker.make_url(path)))
    with pytest.raises(FetchError, match="another origin"):
        await resolver.actor(str(attacker.make_url("/users/mallory")))
    with pytest.raises(FetchError, match="another origin"):
        await resolver.key(str(attacker.make_url("/users/mallory")) + "#main-key")
    with pytest.raises(FetchError, match="another origin"):
        await resolver.fetch_object(str(attacker.make_url("/notes/9")))
    # Plain GETs (feeds, pages) still follow redirects anywhere public: only identity is at stake above.
    assert (await client.get(str(attacker.make_url("/feed")))).status == 200


async def test_an_actor_is_accepted_only_under_its_own_id(
    serve: Serve, client: GuardedClient, remote_key: rsa.RSAPrivateKey
) -> None:
    """Same origin, moved: the document is Alice's and is accepted as Alice's, never as /users/old's."""
    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("/users/alice")

    server, _ = await serve([web.get("/users/old", moved)] + instance_routes(pem_of(remote_key), [0.0]))
    old, alice = str(server.make_url("/users/old")), str(server.make_url("/users/alice"))
    assert (await client.get_json(old))["id"] == alice  # a same-origin move keeps the document's own id
    resolver = Resolver(client)
    with pytest.raises(FetchError, match="answered with the actor document of"):
        await resolver.actor(old)
    with pytest.raises(FetchError):
        await resolver.key(old + "#main-key")  # /users/alice does not list /users/old#main-key
    assert (await resolver.actor(alice)).id == alice


async def test_an_actor_listing_someone_elses_key_does_not_own_it(
    serve: Serve, client: GuardedClient, remote_key: rsa.RSAPrivateKey
) -> None:
    """Eve's document lists a key whose owner is Alice: it is neither Eve's key nor, by Eve's word, Alice's."""
    pem = pem_of(remote_key)

    async def eve(request: web.Request) -> web.Response:
        doc = mastodon_actor(base_of(request), "eve", pem)
        doc["publicKey"]["owner"] = f"{base_of(request)}/users/alice"
        return ap_response(doc)

    server, _ = await serve([web.get("/users/eve", eve)] + instance_routes(pem, [0.0]))
    eve_id = str(server.make_url("/users/eve"))
    with pytest.raises(FetchError, match="does not publish key"):
        await Resolver(client).key(f"{eve_id}#main-key")
    assert (await Resolver(client).actor(eve_id)).public_key_pem is None
