"""SIGTERM and SIGKILL of a real `fedibridge serve` in the middle of a burst of signed replies.

SIGTERM: the stop takes at most the README's 10 s and hands back the inbox rows it had claimed, so the
restarted process turns every accepted reply into a comment within seconds (not after a 5-minute lease).
SIGKILL: nothing answered 202 is lost, and the restarted process accepts again.
A SIGTERM while a batch waits on a slow remote lets that batch end and be recorded, within the bound.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select, text

from fedibridge.store import Store, sqlite_path, utcnow
from fedibridge.tables import comments, inbox_items
from tests.conftest import free_port, pem_private, wait_for
from tests.faults import ReplyStream, serve, serve_env
from tests.remote import RemoteInstance, add_followers

TOKEN = "faults-test-token"
STOP_BOUND = 10.0  # seconds, the README's promise for a SIGTERM
SLOW = 1.5  # seconds a slow server takes to answer a GET of a status


@dataclass
class _SlowStatuses(RemoteInstance):
    """A server whose statuses answer after SLOW seconds; `asked` is set at the first such GET."""

    asked: asyncio.Event = field(default_factory=asyncio.Event)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET" and "/statuses/" in request.path:
            self.asked.set()
            await asyncio.sleep(SLOW)
        return await super()._handle(request)


@dataclass
class _Server:
    """A real `fedibridge serve` of this test (restartable), and a store of its own on the same database."""

    tmp_path: Path
    env: dict[str, str]
    log: Path
    proc: asyncio.subprocess.Process
    store: Store

    @property
    def port(self) -> int:
        return int(self.env["FEDIBRIDGE_PORT"])

    @property
    def inbox(self) -> str:
        return f"http://127.0.0.1:{self.port}/inbox"

    async def restart(self) -> None:
        self.proc = await serve(self.tmp_path, self.env, self.log)

    async def sigterm(self) -> float:
        """SIGTERM; seconds until the process exited (it must, within 30 s), checking it exited cleanly."""
        self.proc.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        await asyncio.wait_for(self.proc.wait(), 30)
        took = time.monotonic() - stopping
        assert self.proc.returncode == 0, f"exit {self.proc.returncode}; see {self.log}"
        return took


@asynccontextmanager
async def _serving(tmp_path: Path, database_url: str, rsa_key: rsa.RSAPrivateKey) -> AsyncIterator[_Server]:
    """Start the server; at the end stop whatever process is running (a stop that hangs fails the test)."""
    port = free_port()
    env = serve_env(tmp_path, pem_private(rsa_key), database_url, port, TOKEN)
    log = tmp_path / "server.log"
    server = _Server(tmp_path, env, log, await serve(tmp_path, env, log),
                     await Store.open(database_url, migrate=False))
    try:
        yield server
    finally:
        await server.store.close()
        if server.proc.returncode is None:
            server.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(server.proc.wait(), 30)


async def _publish(port: int) -> str:
    async with aiohttp.ClientSession() as http, http.post(
            f"http://127.0.0.1:{port}/api/articles", headers={"Authorization": f"Bearer {TOKEN}"},
            json={"title": "Arrêt « propre » 🛑", "url": "http://blog.test/arret", "slug": "arret",
                  "content": "<p>On s’arrête, on repart.</p>"}) as resp:
        assert resp.status == 201, await resp.text()
        return str((await resp.json())["id"])


async def _leased(store: Store) -> int:
    """Rows a worker has claimed and not finished (their lease still running)."""
    async with store.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(inbox_items).where(
            inbox_items.c.state == "pending", inbox_items.c.locked_until > utcnow()))).scalar_one())


async def _stored(store: Store) -> set[str]:
    async with store.connect() as conn:
        return {r.ap_id.removesuffix("/activity") for r in (await conn.execute(select(inbox_items.c.ap_id))).all()}


async def _comments(store: Store) -> set[str]:
    async with store.connect() as conn:
        return {r.ap_id for r in (await conn.execute(select(comments.c.ap_id))).all()}


async def test_sigterm_mid_burst_stops_within_bound_and_releases_its_claims(
        tmp_path: Path, database_url: str, rsa_key: rsa.RSAPrivateKey) -> None:
    async with _serving(tmp_path, database_url, rsa_key) as server, RemoteInstance() as remote:
        store = server.store
        article = await _publish(server.port)
        stream = ReplyStream(remote, remote.add_actor("alice"), server.inbox, article, rate=60)
        stream.start()
        try:
            async def busy() -> bool:  # the worker holds claimed rows right now
                return len(stream.accepted()) >= 40 and await _leased(store) > 0

            await wait_for(busy, 60, 0.01)
            took = await server.sigterm()
        finally:
            await stream.stop()
        assert took <= STOP_BOUND, f"SIGTERM took {took:.1f} s"
        assert await _leased(store) == 0, "a graceful stop left claimed rows leased"
        accepted = {a.note_id for a in stream.accepted()}
        assert accepted <= await _stored(store), "a reply answered 202 was not stored"

        await server.restart()
        restarted = time.monotonic()

        async def all_comments() -> bool:
            return accepted <= await _comments(store)

        await wait_for(all_comments, 30, 0.2)
        assert time.monotonic() - restarted < 30


async def test_sigkill_mid_burst_loses_no_accepted_reply_and_accepts_again(
        tmp_path: Path, database_url: str, rsa_key: rsa.RSAPrivateKey) -> None:
    async with _serving(tmp_path, database_url, rsa_key) as server, RemoteInstance() as remote:
        store = server.store
        article = await _publish(server.port)
        alice = remote.add_actor("alice")
        stream = ReplyStream(remote, alice, server.inbox, article, rate=60)
        stream.start()
        try:
            await wait_for(lambda: _at_least(stream, 60), 60, 0.01)
            server.proc.send_signal(signal.SIGKILL)
            await server.proc.wait()
        finally:
            await stream.stop()
        accepted = {a.note_id for a in stream.accepted()}
        assert accepted <= await _stored(store), "a reply answered 202 was not stored"

        await server.restart()
        after = ReplyStream(remote, alice, server.inbox, article)
        async with aiohttp.ClientSession() as http:
            assert (await after.send_one(http, 0)).status == 202
        # Rows the killed process had claimed wait for their lease; every other one is handled now.
        async with store.connect() as conn:
            leased = {r.ap_id.removesuffix("/activity") for r in (await conn.execute(
                select(inbox_items.c.ap_id).where(inbox_items.c.locked_until > utcnow()))).all()}

        async def handled() -> bool:
            return accepted - leased <= await _comments(store)

        await wait_for(handled, 30, 0.2)


async def test_sigterm_lets_the_batch_in_hand_end_and_records_it(
        tmp_path: Path, database_url: str, rsa_key: rsa.RSAPrivateKey) -> None:
    """The handler is not cut mid-batch (a cut inside a write transaction can hold SQLite's lock through the
    stop): a reply whose unknown parent is being fetched from a slow server is a comment when the process
    has exited, and the stop stays within its bound."""
    async with _serving(tmp_path, database_url, rsa_key) as server, _SlowStatuses() as remote:
        article = await _publish(server.port)
        alice = remote.add_actor("alice")
        parent = remote.note(alice, "<p>Premier avis « mitigé »</p>", in_reply_to=article)
        remote.objects[parent["id"]] = parent
        reply = remote.note(alice, "<p>Je me réponds : finalement, j’aime bien 👍</p>", in_reply_to=parent["id"])
        status, text = await remote.send(alice, server.inbox, remote.create(alice, reply))
        assert status == 202, text
        await asyncio.wait_for(remote.asked.wait(), 20)  # the worker is fetching the parent right now
        took = await server.sigterm()
        assert took <= STOP_BOUND, f"SIGTERM took {took:.1f} s"
        assert {reply["id"], parent["id"]} <= await _comments(server.store), "the batch in hand was cut by the stop"
        assert await _leased(server.store) == 0


@asynccontextmanager
async def _write_lock(database_url: str, store: Store) -> AsyncIterator[None]:
    """Another process holding the database's write lock (a CLI command, an admin's script, a migration)."""
    path = sqlite_path(database_url)
    if path is not None:
        con = sqlite3.connect(path, timeout=10, isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")
            yield
        finally:
            con.rollback()
            con.close()
        return
    async with store.begin() as conn:
        await conn.execute(text("LOCK TABLE deliveries IN EXCLUSIVE MODE"))
        yield


async def test_sigterm_while_another_process_holds_the_write_lock_stays_within_bound(
        tmp_path: Path, database_url: str, rsa_key: rsa.RSAPrivateKey) -> None:
    """A delivery in flight when SIGTERM comes and the database locked by someone else: recording its outcome
    cannot finish, and must not hold the stop (SQLite's busy wait alone lasts 30 s). Nothing is lost: the
    next start sends that delivery again (servers ignore the duplicate: same activity id)."""
    posted = asyncio.Event()

    async def slow_inbox(_: object) -> int:
        posted.set()
        await asyncio.sleep(1.0)
        return 202

    async with RemoteInstance(inbox_status=slow_inbox) as remote:
        await add_followers(database_url, [remote], 1)
        async with _serving(tmp_path, database_url, rsa_key) as server:
            await _publish(server.port)
            await asyncio.wait_for(posted.wait(), 20)  # the worker is posting the article right now
            async with _write_lock(database_url, server.store):
                took = await server.sigterm()
            assert took <= STOP_BOUND, f"SIGTERM took {took:.1f} s"
            assert len(remote.received_of("Create")) == 1

            await server.restart()

            async def sent_again() -> bool:
                return len(remote.received_of("Create")) == 2

            await wait_for(sent_again, 20, 0.1)


async def _at_least(stream: ReplyStream, n: int) -> bool:
    return len(stream.accepted()) >= n
