"""kill -9 in the middle of batched inbox handling: every accepted activity ends handled exactly once.

A real `python -m fedibridge serve` subprocess accepts a burst of signed replies, Follows and Likes from
loopback servers; it is killed with SIGKILL while the worker is part-way through the backlog (some
comments written, not all), restarted, and must then finish: one comment per reply, one follower and one
Accept per Follow, one reaction per Like, no inbox row failed or left pending.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select

from fedibridge.store import Store
from fedibridge.tables import activities, comments, followers, inbox_items, reactions
from tests.conftest import free_port, pem_private, wait_for
from tests.faults import serve_env, stop_serve
from tests.remote import RemoteInstance
from tests.test_crash import _start

TOKEN = "crash-test-token"
REPLIES, FOLLOWS, LIKES = 2400, 120, 120
ARTICLE = "http://blog.test/panne"


async def _counts(store: Store) -> dict[str, int]:
    async with store.connect() as conn:
        out = {}
        for name, table in (("comments", comments), ("followers", followers), ("reactions", reactions)):
            out[name] = int((await conn.execute(select(func.count()).select_from(table))).scalar_one())
        out["accepts"] = int((await conn.execute(select(func.count()).select_from(activities)
                                                 .where(activities.c.type == "Accept"))).scalar_one())
        states = dict((await conn.execute(select(inbox_items.c.state, func.count())
                                          .group_by(inbox_items.c.state))).all())
        out.update({f"inbox_{k}": int(v) for k, v in states.items()})
    return out


async def _some_comments(db: Store) -> bool:
    return (await _counts(db))["comments"] > 0


async def test_sigkill_mid_batch_handles_every_activity_once(
        tmp_path: Path, database_url: str, rsa_key: rsa.RSAPrivateKey) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**serve_env(tmp_path, pem_private(rsa_key), database_url, port, TOKEN),
           "FEDIBRIDGE_BLOG_URL": "http://blog.test",
           "FEDIBRIDGE_INBOX_HOST_BURST": "0", "FEDIBRIDGE_INBOX_ACTOR_BURST": "0"}
    instances = [RemoteInstance(host_ip=f"127.0.2.{i + 1}", key=rsa_key) for i in range(4)]
    for inst in instances:
        await inst.start()
    proc: asyncio.subprocess.Process | None = None
    store: Store | None = None
    try:
        log = tmp_path / "server.log"
        proc = await _start(tmp_path, env, port, log)
        store = db = await Store.open(database_url, migrate=False)
        async with aiohttp.ClientSession() as http, http.post(
                f"{base}/api/articles", headers={"Authorization": f"Bearer {TOKEN}"},
                json={"title": "Panne", "url": ARTICLE, "slug": "panne", "content": "<p>kill -9</p>"}) as resp:
            assert resp.status == 201, await resp.text()

        accounts = [inst.add_actor(f"u{j}", flavor) for inst, flavor in
                    zip(instances, ("mastodon", "misskey", "gotosocial", "pleroma"), strict=True) for j in range(30)]
        sent: list[tuple[Any, dict[str, Any]]] = []
        for i in range(REPLIES):
            acct = accounts[i % len(accounts)]
            sent.append((acct, acct.instance.create(acct, acct.instance.note(acct, f"<p>réponse {i}</p>", ARTICLE))))
        for acct in accounts[:FOLLOWS]:
            sent.append((acct, acct.instance.follow(acct, f"{base}/users/blog")))
        for acct in accounts[:LIKES]:
            sent.append((acct, acct.instance.like(acct, ARTICLE)))
        slots = asyncio.Semaphore(16)
        unanswered: list[tuple[Any, dict[str, Any]]] = []  # the kill cut them off: their servers send again

        async def post(acct: Any, activity: dict[str, Any]) -> None:
            async with slots:
                try:
                    status, text = await acct.instance.send(acct, f"{base}/inbox", activity)
                except (aiohttp.ClientError, ConnectionError):
                    unanswered.append((acct, activity))
                    return
                assert status == 202, text

        async def kill_once_handling_shows() -> None:
            # Handling runs during the burst: the kill lands mid-burst and mid-batch (the first batch's comments
            # are committed, later ones are not), with requests in flight.
            await wait_for(lambda: _some_comments(db), 60, 0.005)
            assert proc is not None
            proc.send_signal(signal.SIGKILL)
            await proc.wait()

        killer = asyncio.create_task(kill_once_handling_shows())
        await asyncio.gather(*(post(a, act) for a, act in sent))
        await killer
        at_kill = await _counts(db)
        assert at_kill["comments"] < REPLIES, "handling finished before the kill; the test proves nothing"

        proc = await _start(tmp_path, env, port, log)

        async def finished() -> bool:
            c = await _counts(db)
            return c.get("inbox_done", 0) == len(sent) and c["comments"] == REPLIES

        for acct, activity in unanswered:  # sent again, as Mastodon retries; stored ones are duplicates now
            status, text = await acct.instance.send(acct, f"{base}/inbox", activity)
            assert status == 202, text
        await wait_for(finished, 120, 0.2)
        final = await _counts(db)
        assert final == {"comments": REPLIES, "followers": FOLLOWS, "reactions": LIKES, "accepts": FOLLOWS,
                         "inbox_done": len(sent)}, (final, at_kill)
        async with db.connect() as conn:
            texts = sorted((await conn.execute(select(comments.c.content_html))).scalars())
        assert texts == sorted(f"<p>réponse {i}</p>" for i in range(REPLIES))
    finally:
        if store is not None:
            await store.close()
        await stop_serve(proc)
        for inst in instances:
            await inst.close()
