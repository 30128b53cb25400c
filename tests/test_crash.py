"""kill -9 in the middle of a fan-out loses nothing: the restarted server delivers the rest.

The server is a real `python -m fedibridge serve` subprocess; the followers are 300 accounts on 60
loopback instances whose inboxes answer slowly, so the fan-out is still running when it is killed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import free_port, pem_private, wait_for
from tests.faults import stop_serve
from tests.remote import Received, RemoteInstance, add_followers

HOSTS = 60
PER_HOST = 5
TOKEN = "crash-test-token"


async def _slow_ok(rec: Received) -> int:
    await asyncio.sleep(0.05)
    return 202


async def _start(tmp_path: Path, env: dict[str, str], port: int, log: Path) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fedibridge", "serve", cwd=tmp_path, env=env,
        stdout=log.open("ab"), stderr=asyncio.subprocess.STDOUT)

    async def up() -> bool:
        if proc.returncode is not None:
            raise AssertionError(f"server exited with {proc.returncode}; see {log}")
        try:
            async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/healthz") as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    await wait_for(up, 30, 0.1)
    return proc


async def test_sigkill_mid_fan_out_loses_no_delivery(
        tmp_path: Path, database_url: str, rsa_key: rsa.RSAPrivateKey) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "private.pem").write_bytes(pem_private(rsa_key))
    (keys / "private.pem").chmod(0o600)
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FEDIBRIDGE_")},
           "FEDIBRIDGE_BASE_URL": f"http://127.0.0.1:{port}", "FEDIBRIDGE_PORT": str(port),
           "FEDIBRIDGE_DATABASE_URL": database_url, "FEDIBRIDGE_KEYS_DIR": str(keys),
           "FEDIBRIDGE_ADMIN_TOKEN": TOKEN, "FEDIBRIDGE_ALLOW_PRIVATE_ADDRESSES": "true",
           "FEDIBRIDGE_DELIVERY_CONCURRENCY": "8", "FEDIBRIDGE_LOG_LEVEL": "warning"}
    instances = [RemoteInstance(host_ip=f"127.0.1.{i + 1}", key=rsa_key, inbox_status=_slow_ok)
                 for i in range(HOSTS)]
    for inst in instances:
        await inst.start()
    proc: asyncio.subprocess.Process | None = None
    try:
        await add_followers(database_url, instances, PER_HOST)
        log = tmp_path / "server.log"
        proc = await _start(tmp_path, env, port, log)

        async with aiohttp.ClientSession() as http, http.post(
            f"http://127.0.0.1:{port}/api/articles", headers={"Authorization": f"Bearer {TOKEN}"},
            json={"title": "Panne « franche » ⚡", "url": "http://blog.test/panne", "slug": "panne",
                  "content": "<p>Même après un kill -9, tout arrive.</p>"}) as resp:
            assert resp.status == 201, await resp.text()
            object_id = (await resp.json())["id"]

        def creates() -> list[tuple[str, Received]]:
            return [(f"{inst.host}{r.path}", r) for inst in instances for r in inst.received
                    if r.type == "Create" and isinstance(r.json.get("object"), dict)
                    and r.json["object"].get("id") == object_id]

        total = HOSTS * PER_HOST

        async def some_arrived() -> bool:
            return len(creates()) >= total // 5

        await wait_for(some_arrived, 30, 0.005)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        at_kill = len(creates())
        assert at_kill < total, "the fan-out finished before the kill; the test proves nothing"

        proc = await _start(tmp_path, env, port, log)

        async def all_arrived() -> bool:
            return len({target for target, _ in creates()}) == total

        await wait_for(all_arrived, 60, 0.1)
        counts = Counter(target for target, _ in creates())
        duplicates = sum(n - 1 for n in counts.values())
        # Only rows in flight, or delivered but not yet recorded (outcomes are written every 0.1 s), when
        # the process died are sent twice; receivers dedupe by activity id, as the fediverse does.
        assert duplicates <= 30, (duplicates, at_kill)
        delivered: list[Any] = [r for _, r in creates()]
        # A copy received while the killed server could not serve its key cannot be checked; every
        # target still has a correctly signed copy.
        assert len({t for t, r in creates() if r.verified}) == total, {r.reason for r in delivered if not r.verified}
        assert all(r.json["object"]["content"].count("kill -9") == 1 for r in delivered)
    finally:
        await stop_serve(proc)
        for inst in instances:
            await inst.close()
