"""Real aiohttp servers on loopback playing remote fediverse instances (Mastodon, GoToSocial, Misskey, Pleroma).

A RemoteInstance serves actor documents shaped like each software's, any object put in `objects`,
records every POST to its inboxes (checking the bridge's signature with fedibridge.signatures, key
fetched from the bridge's own actor document), and sends signed activities the way each software signs.
Tests use it as the other side of the wire; nothing of fedibridge is mocked.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import itertools
import json
import random
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urldefrag, urlsplit

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from fedibridge.signatures import digest_header, http_date, load_public_key, sign_request, verify_request

Flavor = Literal["mastodon", "misskey", "gotosocial", "pleroma"]
AS = "https://www.w3.org/ns/activitystreams"
PUBLIC = AS + "#Public"
# What Mastodon puts in "@context" of the activities it sends.
MASTODON_CONTEXT: list[Any] = [
    AS,
    "https://w3id.org/security/v1",
    {
        "ostatus": "http://ostatus.org#",
        "atomUri": "ostatus:atomUri",
        "inReplyToAtomUri": "ostatus:inReplyToAtomUri",
        "conversation": "ostatus:conversation",
        "sensitive": "as:sensitive",
        "toot": "http://joinmastodon.org/ns#",
        "votersCount": "toot:votersCount",
        "Hashtag": "as:Hashtag",
    },
]
# Headers each software signs on a POST (Mastodon: SignedRequest; GoToSocial: go-fed httpsig; Misskey: ap-request.ts).
SIGNED_HEADERS: dict[str, list[str]] = {
    "mastodon": ["(request-target)", "host", "date", "digest", "content-type"],
    "gotosocial": ["(request-target)", "host", "date", "digest"],
    "misskey": ["(request-target)", "date", "host", "digest"],
    "pleroma": ["(request-target)", "content-length", "date", "digest", "host"],
}
Tamper = Literal["body", "signature", "digest", "unsigned", "date", "keyid", "host"]
InboxStatus = int | Callable[["Received"], int | Awaitable[int]]


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _json_bytes(doc: Any) -> bytes:
    """UTF-8 JSON as servers write it; a lone surrogate (hostile tests) goes out as a "\\ud800" escape."""
    try:
        return json.dumps(doc, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return json.dumps(doc).encode()


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class RemoteAccount:
    """One account on a RemoteInstance; `doc` is the actor document it serves (mutable for Update tests)."""

    instance: RemoteInstance
    username: str
    flavor: Flavor
    id: str
    inbox: str
    shared_inbox: str | None
    key_id: str
    private_key: rsa.RSAPrivateKey
    doc: dict[str, Any]

    @property
    def handle(self) -> str:
        return f"@{self.username}@{self.instance.host}"


@dataclass
class Received:
    """One POST that reached an inbox of this instance."""

    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    verified: bool
    reason: str
    key_id: str | None

    @property
    def type(self) -> str | None:
        return self.json.get("type") if isinstance(self.json, dict) else None


@dataclass
class RemoteInstance:
    """A fake fediverse server on 127.x.y.z with a random port. Use `async with RemoteInstance() as r:`."""

    host_ip: str = "127.0.0.1"
    key: rsa.RSAPrivateKey | None = None
    verify_signatures: bool = True
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)  # URLs answering 410 Gone
    redirects: dict[str, str] = field(default_factory=dict)  # URL -> Location of a 302 (hostile servers)
    received: list[Received] = field(default_factory=list)
    inbox_status: InboxStatus = 202
    # Secure mode (Mastodon's AUTHORIZED_FETCH, GoToSocial's default): a GET without a valid signature gets
    # 401, except a Mastodon actor, which answers with its restricted document (id, type, username, inbox,
    # key, endpoints: what Mastodon serves so that keys can be fetched unsigned).
    authorized_fetch: bool = False
    gets: list[tuple[str, bool]] = field(default_factory=list)  # every GET and HEAD: (path, validly signed?)
    accounts: dict[str, RemoteAccount] = field(default_factory=dict)
    bridge_keys: dict[str, str] = field(default_factory=dict)  # keyId -> PEM, fetched from the bridge
    port: int = 0
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def base(self) -> str:
        return f"http://{self.host_ip}:{self.port}"

    @property
    def host(self) -> str:
        return f"{self.host_ip}:{self.port}"

    @property
    def shared_inbox(self) -> str:
        return f"{self.base}/inbox"

    async def start(self) -> RemoteInstance:
        if self.key is None:
            self.key = new_key()
        self.port = self.port or _free_port(self.host_ip)
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host_ip, self.port).start()
        self._session = aiohttp.ClientSession()
        return self

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> RemoteInstance:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- accounts --------------------------------------------------------------------------------

    def add_actor(
        self, username: str, flavor: Flavor = "mastodon", *, name: str | None = None, shared_inbox: bool = True
    ) -> RemoteAccount:
        """Create an account whose actor document looks like `flavor`'s, and serve it."""
        assert self.key is not None, "start() the instance first"
        b = self.base
        if flavor == "misskey":
            # Misskey ids are opaque aid strings, not usernames.
            uid = "9" + hashlib.sha1(username.encode()).hexdigest()[:9]
            actor_id = f"{b}/users/{uid}"
        else:
            actor_id = f"{b}/users/{username}"
        inbox = f"{actor_id}/inbox"
        shared = self.shared_inbox if shared_inbox else None
        key_id = f"{actor_id}/main-key" if flavor == "gotosocial" else f"{actor_id}#main-key"
        acct = RemoteAccount(self, username, flavor, actor_id, inbox, shared, key_id, self.key, {})
        acct.doc = self._actor_doc(acct, name or username.capitalize())
        self.accounts[actor_id] = acct
        self._publish(acct)
        return acct

    def _actor_doc(self, acct: RemoteAccount, name: str) -> dict[str, Any]:
        pem = public_pem(acct.private_key)
        a, b = acct.id, self.base
        doc: dict[str, Any] = {
            "@context": [AS, "https://w3id.org/security/v1"],
            "id": a,
            "type": "Person",
            "preferredUsername": acct.username,
            "name": name,
            "summary": "<p>Bonjour, je lis des blogs ☕</p>",
            "inbox": acct.inbox,
            "outbox": f"{a}/outbox",
            "followers": f"{a}/followers",
            "following": f"{a}/following",
            "publicKey": {"id": acct.key_id, "owner": a, "publicKeyPem": pem},
            "icon": {"type": "Image", "mediaType": "image/png", "url": f"{b}/avatars/{acct.username}.png"},
        }
        if acct.shared_inbox:
            doc["endpoints"] = {"sharedInbox": acct.shared_inbox}
        if acct.flavor == "mastodon":
            doc["@context"] = MASTODON_CONTEXT
            doc.update(url=f"{b}/@{acct.username}", manuallyApprovesFollowers=False, discoverable=True,
                       featured=f"{a}/collections/featured", published="2022-11-05T00:00:00Z")
        elif acct.flavor == "misskey":
            doc.update(url=f"{b}/@{acct.username}", _misskey_summary="Bonjour, je lis des blogs ☕",
                       isCat=False, manuallyApprovesFollowers=False, discoverable=True,
                       sharedInbox=acct.shared_inbox, tag=[], attachment=[])
            doc["@context"] = [AS, "https://w3id.org/security/v1", {
                "misskey": "https://misskey-hub.net/ns#", "_misskey_summary": "misskey:_misskey_summary",
                "isCat": "misskey:isCat"}]
        elif acct.flavor == "gotosocial":
            doc.update(url=f"{b}/@{acct.username}", manuallyApprovesFollowers=False, discoverable=True,
                       featured=f"{a}/collections/featured", published="2023-01-01T00:00:00Z")
        elif acct.flavor == "pleroma":
            doc.update(url=a, manuallyApprovesFollowers=False, discoverable=False,
                       capabilities={"acceptsChatMessages": True}, tag=[], attachment=[])
        return doc

    def _publish(self, acct: RemoteAccount) -> None:
        self.objects[acct.id] = acct.doc
        if acct.flavor == "gotosocial":
            # GoToSocial serves the key at its own URL, with an owner pointing back at the actor.
            self.objects[acct.key_id] = {
                "@context": [AS, "https://w3id.org/security/v1"],
                "id": acct.key_id, "owner": acct.id, "publicKeyPem": public_pem(acct.private_key),
            }

    def rotate_key(self, acct: RemoteAccount, key: rsa.RSAPrivateKey | None = None) -> None:
        """Give the account a new key (same keyId, as Mastodon does on key regeneration)."""
        acct.private_key = key or new_key()
        acct.doc["publicKey"] = {**acct.doc["publicKey"], "publicKeyPem": public_pem(acct.private_key)}
        self._publish(acct)

    def remove_actor(self, acct: RemoteAccount) -> None:
        """The account is deleted: its actor (and key) documents answer 410 Gone from now on."""
        self.objects.pop(acct.id, None)
        self.objects.pop(acct.key_id, None)
        self.gone.update({acct.id, urldefrag(acct.key_id).url})

    # --- HTTP server -----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        url = f"{self.base}{request.path}"
        if request.method == "POST" and (request.path == "/inbox" or request.path.endswith("/inbox")):
            return await self._inbox(request)
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405)
        signed = False
        if "Signature" in request.headers or "Signature-Input" in request.headers:
            signed = (await self._verify(request, dict(request.headers), b""))[0]
        self.gets.append((request.path, signed))
        if self.authorized_fetch and not signed:
            acct = self.accounts.get(url)
            if acct is None or acct.flavor != "mastodon":
                return web.json_response({"error": "Request not signed"}, status=401)
            restricted = {k: v for k, v in acct.doc.items()
                          if k in ("@context", "id", "type", "preferredUsername", "inbox", "publicKey", "endpoints")}
            return web.Response(body=_json_bytes(restricted), content_type="application/activity+json",
                                charset="utf-8")
        if url in self.redirects:
            raise web.HTTPFound(self.redirects[url])
        if url in self.gone:
            return web.json_response({"error": "Gone"}, status=410)
        doc = self.objects.get(url)
        if doc is None:
            return web.json_response({"error": "Record not found"}, status=404)
        return web.Response(body=_json_bytes(doc), content_type="application/activity+json", charset="utf-8")

    async def _inbox(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items()}
        try:
            parsed: Any = json.loads(body)
        except ValueError:
            parsed = None
        verified, reason, key_id = False, "not checked", None
        if self.verify_signatures:
            verified, reason, key_id = await self._verify(request, headers, body)
        rec = Received(request.path, headers, body, parsed, verified, reason, key_id)
        self.received.append(rec)
        status = self.inbox_status
        if callable(status):
            result = status(rec)
            status = await result if inspect.isawaitable(result) else result
        return web.Response(status=int(status), text="" if status < 300 else "error")

    async def _bridge_key(self, key_id: str, refresh: bool) -> str:
        if refresh or key_id not in self.bridge_keys:
            assert self._session is not None
            url = urldefrag(key_id).url
            async with self._session.get(url, headers={"Accept": "application/activity+json"}) as resp:
                doc = await resp.json(content_type=None)
            key = doc.get("publicKey", doc)
            self.bridge_keys[key_id] = key["publicKeyPem"]
        return self.bridge_keys[key_id]

    async def _verify(
        self, request: web.Request, headers: dict[str, str], body: bytes
    ) -> tuple[bool, str, str | None]:
        from fedibridge.signatures import signature_key_id

        key_id = signature_key_id(headers)
        if key_id is None:
            return False, "no signature", None
        now = datetime.now(UTC)
        target = request.path_qs
        for refresh in (False, True):
            try:
                pem = await self._bridge_key(key_id, refresh)
            except Exception as exc:  # noqa: BLE001 - record why, the test decides
                return False, f"cannot fetch key: {exc!r}", key_id
            result = verify_request(request.method, target, headers, body, load_public_key(pem), now,
                                    authority=self.host)
            if result.ok:
                return True, "ok", key_id
        return False, result.reason, key_id

    def received_of(self, type_: str) -> list[Received]:
        return [r for r in self.received if r.type == type_]

    # --- sending ---------------------------------------------------------------------------------

    async def send(
        self,
        account: RemoteAccount,
        url: str,
        activity: dict[str, Any] | bytes,
        *,
        scheme: Literal["cavage", "rfc9421"] = "cavage",
        algorithm: Literal["rsa-sha256", "hs2019"] | None = None,
        tamper: Tamper | Callable[[dict[str, str], bytes], tuple[dict[str, str], bytes]] | None = None,
        now: datetime | None = None,
        content_type: str = "application/activity+json",
        key_id: str | None = None,
        host: str | None = None,
    ) -> tuple[int, str]:
        """POST `activity` signed as `account` would sign it; returns (status, response text).

        host: sign for and send this Host header (a public name in front of the listening port, or a
        hostile replay of a request signed for another server); None means the URL's own authority.

        tamper: "body" (change a byte after signing), "digest" (wrong Digest, body intact), "signature"
        (flip signature bytes), "unsigned" (no Signature header), "date" (Date two hours old, signed),
        "keyid" (claim a key on another host), "host" (sign for another Host), or a callable.
        """
        assert self._session is not None
        body = activity if isinstance(activity, bytes) else json.dumps(activity, ensure_ascii=False).encode()
        when = now or datetime.now(UTC)
        if tamper == "date":
            when -= timedelta(hours=2)
        kid = key_id or account.key_id
        if tamper == "keyid":
            kid = "http://127.0.0.2:1/users/mallory#main-key"
        signed_url = url if host is None else urlsplit(url)._replace(netloc=host).geturl()
        if scheme == "rfc9421":
            headers = sign_request("POST", signed_url, {"Content-Type": content_type}, body, account.private_key,
                                   kid, when, scheme="rfc9421")
        else:
            headers = self.sign_cavage(account, signed_url, body, when, algorithm=algorithm, key_id=kid,
                                       content_type=content_type, host=("evil.example" if tamper == "host" else None))
        if tamper == "body":
            body = body.rstrip()[:-1] + b',"x":1}' if body.rstrip().endswith(b"}") else body + b" "
        elif tamper == "digest":
            headers["Digest"] = digest_header(b"something else")
        elif tamper == "signature":
            headers["Signature"] = headers["Signature"].replace('signature="', 'signature="AAAA', 1)
        elif tamper == "unsigned":
            headers.pop("Signature", None)
        elif callable(tamper):
            headers, body = tamper(headers, body)
        headers.pop("Host", None)  # aiohttp sends the right one; "host" tamper signed another value
        if host is not None:
            headers["Host"] = host
        headers["Content-Length"] = str(len(body))
        async with self._session.post(url, data=body, headers=headers) as resp:
            return resp.status, await resp.text()

    def sign_cavage(
        self,
        account: RemoteAccount,
        url: str,
        body: bytes,
        now: datetime,
        *,
        algorithm: Literal["rsa-sha256", "hs2019"] | None = None,
        key_id: str | None = None,
        content_type: str = "application/activity+json",
        host: str | None = None,
    ) -> dict[str, str]:
        """Draft-cavage headers built by hand, with the header list and algorithm name of the flavor."""
        parts = urlsplit(url)
        names = SIGNED_HEADERS[account.flavor]
        alg = algorithm or ("hs2019" if account.flavor == "gotosocial" else "rsa-sha256")
        values = {
            "host": host or parts.netloc,
            "date": http_date(now),
            "digest": digest_header(body),
            "content-type": content_type,
            "content-length": str(len(body)),
        }
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [f"(request-target): post {target}" if n == "(request-target)" else f"{n}: {values[n]}"
                 for n in names]
        sig = account.private_key.sign("\n".join(lines).encode(), padding.PKCS1v15(), hashes.SHA256())
        return {
            "Host": values["host"],
            "Date": values["date"],
            "Digest": values["digest"],
            "Content-Type": content_type,
            "Signature": f'keyId="{key_id or account.key_id}",algorithm="{alg}",headers="{" ".join(names)}",'
                         f'signature="{base64.b64encode(sig).decode()}"',
        }

    # --- payloads shaped like each software's --------------------------------------------------

    def _status_id(self) -> str:
        # Mastodon snowflake-ish ids: 18 digits.
        return str(113_000_000_000_000_000 + next(self._ids) * 1_000 + random.randint(0, 999))

    def _ctx(self, account: RemoteAccount) -> Any:
        return MASTODON_CONTEXT if account.flavor == "mastodon" else AS

    def _activity_id(self, account: RemoteAccount, kind: str) -> str:
        if account.flavor == "misskey":
            return f"{self.base}/follows/{self._status_id()}" if kind == "Follow" else \
                f"{self.base}/{kind.lower()}s/{self._status_id()}"
        if account.flavor == "gotosocial":
            return f"{account.id}/{kind.lower()}/{self._status_id()}"
        return f"{account.id}#{kind.lower()}s/{self._status_id()}"

    def follow(self, account: RemoteAccount, target_actor: str) -> dict[str, Any]:
        if account.flavor == "mastodon":
            fid = f"{self.base}/{self._status_id()}-follow"  # Mastodon: https://host/<uuid>
        else:
            fid = self._activity_id(account, "Follow")
        return {"@context": self._ctx(account) if account.flavor != "mastodon" else AS, "id": fid,
                "type": "Follow", "actor": account.id, "object": target_actor}

    def undo(self, account: RemoteAccount, activity: dict[str, Any]) -> dict[str, Any]:
        inner = {k: v for k, v in activity.items() if k != "@context"}
        uid = (f"{account.id}#{activity['type'].lower()}s/{self._status_id()}/undo"
               if account.flavor == "mastodon" else self._activity_id(account, "Undo"))
        return {"@context": AS, "id": uid, "type": "Undo", "actor": account.id, "object": inner}

    def note(
        self,
        account: RemoteAccount,
        content_html: str,
        in_reply_to: str | None = None,
        *,
        to: list[str] | None = None,
        cc: list[str] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        sid = self._status_id()
        nid = f"{self.base}/notes/{sid}" if account.flavor == "misskey" else f"{account.id}/statuses/{sid}"
        published = iso(datetime.now(UTC))
        note: dict[str, Any] = {
            "id": nid,
            "type": "Note",
            "summary": None,
            "inReplyTo": in_reply_to,
            "published": published,
            "url": f"{self.base}/@{account.username}/{sid}",
            "attributedTo": account.id,
            "to": to if to is not None else [PUBLIC],
            "cc": cc if cc is not None else [f"{account.id}/followers"],
            "sensitive": False,
            "content": content_html,
            "contentMap": {"fr": content_html},
            "attachment": [],
            "tag": [],
        }
        if account.flavor == "mastodon":
            note.update(atomUri=nid, inReplyToAtomUri=in_reply_to,
                        conversation=f"tag:{self.host_ip},2024:objectId=1:objectType=Conversation",
                        replies={"id": f"{nid}/replies", "type": "Collection",
                                 "first": {"type": "CollectionPage", "next": f"{nid}/replies?page=true",
                                           "partOf": f"{nid}/replies", "items": []}})
        elif account.flavor == "misskey":
            note.pop("contentMap")
            note["_misskey_content"] = content_html
            note["source"] = {"content": content_html, "mediaType": "text/x.misskeymarkdown"}
        note.update(extra)
        return note

    def create(self, account: RemoteAccount, note: dict[str, Any]) -> dict[str, Any]:
        return {"@context": self._ctx(account), "id": f"{note['id']}/activity", "type": "Create",
                "actor": account.id, "published": note.get("published", iso(datetime.now(UTC))),
                "to": note.get("to", [PUBLIC]), "cc": note.get("cc", []), "object": note}

    def update(self, account: RemoteAccount, obj: dict[str, Any]) -> dict[str, Any]:
        now = iso(datetime.now(UTC))
        if obj.get("type") == "Note":
            obj = {**obj, "updated": now}
        stamp = int(datetime.now(UTC).timestamp())
        return {"@context": self._ctx(account), "id": f"{obj['id']}#updates/{stamp}{next(self._ids)}",
                "type": "Update", "actor": account.id, "published": now,
                "to": obj.get("to", [PUBLIC]), "cc": obj.get("cc", []), "object": obj}

    def delete(self, account: RemoteAccount, note: dict[str, Any] | str) -> dict[str, Any]:
        nid = note if isinstance(note, str) else note["id"]
        return {"@context": self._ctx(account), "id": f"{nid}#delete", "type": "Delete", "actor": account.id,
                "to": [PUBLIC], "object": {"id": nid, "type": "Tombstone", "atomUri": nid}}

    def like(self, account: RemoteAccount, object_id: str) -> dict[str, Any]:
        return {"@context": AS, "id": self._activity_id(account, "Like"), "type": "Like",
                "actor": account.id, "object": object_id}

    def announce(self, account: RemoteAccount, object_id: str) -> dict[str, Any]:
        sid = self._status_id()
        return {"@context": self._ctx(account), "id": f"{account.id}/statuses/{sid}/activity", "type": "Announce",
                "actor": account.id, "published": iso(datetime.now(UTC)), "to": [PUBLIC],
                "cc": [urlsplit(object_id)._replace(path="", query="", fragment="").geturl(),
                       f"{account.id}/followers"],
                "object": object_id}

    def actor_delete(self, account: RemoteAccount) -> dict[str, Any]:
        """Mastodon's account deletion: Delete whose object is the actor itself."""
        return {"@context": [AS, {"toot": "http://joinmastodon.org/ns#"}], "id": f"{account.id}#delete",
                "type": "Delete", "actor": account.id, "to": [PUBLIC], "object": account.id}

    def actor_update(self, account: RemoteAccount) -> dict[str, Any]:
        """Profile edit: Update carrying the whole (current) actor document."""
        obj = {k: v for k, v in account.doc.items() if k != "@context"}
        return {"@context": self._ctx(account), "id": f"{account.id}#updates/{self._status_id()}",
                "type": "Update", "actor": account.id, "to": [PUBLIC], "object": obj}


async def add_followers(database_url: str, instances: list[RemoteInstance], per_host: int) -> int:
    """Followers with personal inboxes only (no shared inbox): one delivery row per follower."""
    from fedibridge.store import Store, utcnow
    from fedibridge.tables import followers

    store = await Store.open(database_url)
    try:
        async with store.begin() as conn:
            await conn.execute(followers.insert(), [
                {"actor_id": f"{inst.base}/users/u{n}", "handle": f"@u{n}@{inst.host}",
                 "inbox": f"{inst.base}/users/u{n}/inbox", "shared_inbox": None, "since": utcnow()}
                for inst in instances for n in range(per_host)])
    finally:
        await store.close()
    return len(instances) * per_host
