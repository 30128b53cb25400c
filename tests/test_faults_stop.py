"""SIGTERM and SIGKILL of a real `fedibridge serve` in the middle of a burst of signed replies.

SIGTERM: the stop takes at most the README's 10 s and hands back the inbox rows it had claimed, so the
restarted process turns every accepted reply into a comment within seconds (not after a 5-minute lease).
SIGKILL: nothing answered 202 is lost, and the restarted process accepts again.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select

from fedibridge.store import Store, utcnow
from fedibridge.tables import comments, inbox_items
from tests.conftest import free_port, pem_private, wait_for
from tests.faults import ReplyStream, serve, serve_env
from tests.remote import RemoteInstance

TOKEN = "faults-test-token"
STOP_BOUND = 10.0  # seconds, the README's promise for a SIGTERM


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
    port = free_port()
    env = serve_env(tmp_path, pem_private(rsa_key), database_url, port, TOKEN)
    log = tmp_path / "server.log"
    proc = await serve(tmp_path, env, log)
    store = await Store.open(database_url, migrate=False)
    try:
        article = await _publish(port)
        async with RemoteInstance() as remote:
            stream = ReplyStream(remote, remote.add_actor("alice"), f"http://127.0.0.1:{port}/inbox", article,
                                 rate=60)
            stream.start()
            try:
                async def busy() -> bool:  # the worker holds claimed rows right now
                    return len(stream.accepted()) >= 40 and await _leased(store) > 0

                await wait_for(busy, 60, 0.01)
                proc.send_signal(signal.SIGTERM)
                stopping = time.monotonic()
                await asyncio.wait_for(proc.wait(), 30)
                took = time.monotonic() - stopping
            finally:
                await stream.stop()
            assert proc.returncode == 0, f"exit {proc.returncode}; see {log}"
            assert took <= STOP_BOUND, f"SIGTERM took {took:.1f} s"
            assert await _leased(store) == 0, "a graceful stop left claimed rows leased"
            accepted = {a.note_id for a in stream.accepted()}
            assert accepted <= await _stored(store), "a reply answered 202 was not stored"

            proc = await serve(tmp_path, env, log)
            restarted = time.monotonic()

            async def all_comments() -> bool:
                return accepted <= await _comments(store)

            await wait_for(all_comments, 30, 0.2)
            assert time.monotonic() - restarted < 30
    finally:
        await store.close()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)


async def test_sigkill_mid_burst_loses_no_accepted_reply_and_accepts_again(
        tmp_path: Path, database_url: str, rsa_key: rsa.RSAPrivateKey) -> None:
    port = free_port()
    env = serve_env(tmp_path, pem_private(rsa_key), database_url, port, TOKEN)
    log = tmp_path / "server.log"
    proc = await serve(tmp_path, env, log)
    store = await Store.open(database_url, migrate=False)
    try:
        article = await _publish(port)
        async with RemoteInstance() as remote:
            alice = remote.add_actor("alice")
            stream = ReplyStream(remote, alice, f"http://127.0.0.1:{port}/inbox", article, rate=60)
            stream.start()
            try:
                await wait_for(lambda: _at_least(stream, 60), 60, 0.01)
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
            finally:
                await stream.stop()
            accepted = {a.note_id for a in stream.accepted()}
            assert accepted <= await _stored(store), "a reply answered 202 was not stored"

            proc = await serve(tmp_path, env, log)
            after = ReplyStream(remote, alice, f"http://127.0.0.1:{port}/inbox", article)
            async with aiohttp.ClientSession() as http:
                assert (await after.send_one(http, 0)).status == 202
            # Rows the killed process had claimed wait for their lease; every other one is handled now.
            async with store.connect() as conn:
                leased = {r.ap_id.removesuffix("/activity") for r in (await conn.execute(
                    select(inbox_items.c.ap_id).where(inbox_items.c.locked_until > utcnow()))).all()}

            async def handled() -> bool:
                return accepted - leased <= await _comments(store)

            await wait_for(handled, 30, 0.2)
    finally:
        await store.close()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)


async def _at_least(stream: ReplyStream, n: int) -> bool:
    return len(stream.accepted()) >= n
