"""Baselines of the end-to-end benchmarks, run as subprocesses like the bridge (same CPU share, own process).

    python bench/_bare.py inbox PORT     # read the body, answer 202: nothing else
    python bench/_bare.py follows PORT   # per Follow: fetch the actor (cached), verify the signature,
                                         # answer 202, then sign an Accept and POST it to the actor's inbox

`follows` is the protocol's floor for a Follow burst without any database: the same GETs, RSA
verifications, signatures and POSTs the bridge must do, with no storage, queue or moderation. Its own
actor document (with its public key) is served at GET /actor, so receivers verify its Accepts like the bridge's.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fedibridge.signatures import load_public_key, sign_request, signature_key_id, verify_request  # noqa: E402

HOST = "127.0.0.1"


async def bare_inbox(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=202)


class BareFollows:
    """Accepts Follows as a bridge without a database would: verify, 202, Accept signed and POSTed."""

    def __init__(self, port: int) -> None:
        self.base = f"http://{HOST}:{port}"
        self.actor = f"{self.base}/actor"
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.keys: dict[str, tuple[str, object]] = {}  # keyId -> (actor inbox, public key)
        self.fetching: dict[str, asyncio.Future[tuple[str, object]]] = {}
        self.session: aiohttp.ClientSession | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.limit = asyncio.Semaphore(64)

    async def actor_doc(self, _: web.Request) -> web.Response:
        pem = self.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        return web.json_response({"@context": "https://www.w3.org/ns/activitystreams", "id": self.actor,
                                  "type": "Service", "inbox": f"{self.base}/inbox",
                                  "publicKey": {"id": f"{self.actor}#main-key", "owner": self.actor,
                                                "publicKeyPem": pem}},
                                 content_type="application/activity+json")

    async def _fetch(self, key_id: str) -> tuple[str, object]:
        assert self.session is not None
        async with self.session.get(key_id.split("#")[0], headers={"Accept": "application/activity+json"}) as r:
            doc = json.loads(await r.read())
        return doc["inbox"], load_public_key(doc["publicKey"]["publicKeyPem"])

    async def actor_key(self, key_id: str) -> tuple[str, object]:
        if key_id in self.keys:
            return self.keys[key_id]
        fut = self.fetching.get(key_id)
        if fut is None:
            fut = self.fetching[key_id] = asyncio.ensure_future(self._fetch(key_id))
        got = await fut
        self.keys[key_id] = got
        self.fetching.pop(key_id, None)
        return got

    async def inbox(self, request: web.Request) -> web.Response:
        body = await request.read()
        key_id = signature_key_id(request.headers) or ""
        inbox, key = await self.actor_key(key_id)
        result = verify_request("POST", request.path_qs, request.headers, body, key,  # type: ignore[arg-type]
                                datetime.now(UTC), authority=request.host)
        if not result.ok:
            return web.Response(status=401, text=result.reason)
        follow = json.loads(body)
        task = asyncio.create_task(self.accept(inbox, follow))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return web.Response(status=202)

    async def accept(self, inbox: str, follow: dict[str, object]) -> None:
        assert self.session is not None
        body = json.dumps({"@context": "https://www.w3.org/ns/activitystreams", "type": "Accept",
                           "id": f"{self.actor}#accepts/{follow['id']}", "actor": self.actor,
                           "object": follow}).encode()
        async with self.limit:
            headers = sign_request("POST", inbox, {}, body, self.key, f"{self.actor}#main-key", datetime.now(UTC))
            headers.pop("Host", None)
            async with self.session.post(inbox, data=body, headers=headers) as resp:
                await resp.read()


async def main(mode: str, port: int) -> None:
    app = web.Application()
    bare: BareFollows | None = None
    if mode == "inbox":
        app.router.add_post("/inbox", bare_inbox)
    else:
        bare = BareFollows(port)
        bare.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100, limit_per_host=8))
        app.router.add_post("/inbox", bare.inbox)
        app.router.add_get("/actor", bare.actor_doc)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, port, backlog=1024).start()
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        if bare is not None and bare.session is not None:
            await bare.session.close()
        await runner.cleanup()


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    except KeyboardInterrupt:
        pass
