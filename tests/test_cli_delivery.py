"""`fedibridge followers` and `fedibridge deliveries` on a real database."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from fedibridge.cli import main
from fedibridge.store import Store, utcnow
from fedibridge.tables import activities, deliveries, domains, followers

from .conftest import BridgeFactory, wait_for
from .remote import RemoteInstance


def _config(tmp_path: Path, database_url: str) -> str:
    path = tmp_path / "fedibridge.toml"
    path.write_text(f'base_url = "https://blog.example"\ndatabase_url = "{database_url}"\n'
                    f'keys_dir = "{tmp_path / "keys"}"\n', encoding="utf-8")
    return str(path)


async def _seed(database_url: str) -> None:
    store = await Store.open(database_url)
    now = utcnow()
    try:
        async with store.begin() as conn:
            await conn.execute(followers.insert(), [
                {"actor_id": "https://mastodon.example/users/léa", "handle": "@léa@mastodon.example",
                 "inbox": "https://mastodon.example/users/l%C3%A9a/inbox",
                 "shared_inbox": "https://mastodon.example/inbox", "since": datetime(2024, 3, 1, 9, 30, tzinfo=UTC)},
                {"actor_id": "https://gts.example/users/bob", "handle": "@bob@gts.example",
                 "inbox": "https://gts.example/users/bob/inbox", "shared_inbox": None,
                 "since": datetime(2024, 3, 2, tzinfo=UTC)},
            ])
            aid = (await conn.execute(activities.insert().values(
                key="k1", type="Create", payload={"type": "Create"}, published=now))).inserted_primary_key[0]
            base = {"activity_id": aid, "kind": "ap", "next_attempt_at": now, "created_at": now, "last_status": None,
                    "last_error": None, "finished_at": None}
            await conn.execute(deliveries.insert(), [
                {**base, "inbox": "https://mastodon.example/inbox", "host": "mastodon.example", "state": "done",
                 "attempts": 1},
                {**base, "inbox": "https://gts.example/users/bob/inbox", "host": "gts.example", "state": "pending",
                 "attempts": 3, "last_error": "HTTP 503"},
                {**base, "inbox": "https://misskey.example/inbox", "host": "misskey.example", "state": "pending",
                 "attempts": 0},
                {**base, "inbox": "https://gone.example/inbox", "host": "gone.example", "state": "failed",
                 "attempts": 1, "last_status": 404, "last_error": "HTTP 404: Record « introuvable »",
                 "finished_at": now},
            ])
            await conn.execute(domains.insert().values(host="dead.example", unavailable=True,
                                                       failing_since=now - timedelta(days=8)))
    finally:
        await store.close()


@pytest.fixture
def config_file(tmp_path: Path, database_url: str) -> str:
    asyncio.run(_seed(database_url))
    return _config(tmp_path, database_url)


def test_followers_table_and_json(config_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["followers", "--config", config_file]) == 0
    out = capsys.readouterr().out
    assert "@léa@mastodon.example" in out and "https://mastodon.example/inbox" in out and "2024-03-01 09:30" in out
    assert "2 follower(s)" in out
    assert main(["followers", "--config", config_file, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total"] == 2
    assert data["followers"][0] == {
        "id": "https://mastodon.example/users/léa", "handle": "@léa@mastodon.example",
        "inbox": "https://mastodon.example/users/l%C3%A9a/inbox", "shared_inbox": "https://mastodon.example/inbox",
        "since": "2024-03-01T09:30:00Z"}


def test_deliveries_summary(config_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deliveries", "--config", config_file]) == 0
    out = capsys.readouterr().out
    assert "pending 1  retrying 1  failed 1  done 1" in out
    assert "gts.example" in out and "dead.example" in out
    assert main(["deliveries", "--config", config_file, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["totals"] == {"pending": 1, "retrying": 1, "failed": 1, "done": 1}
    hosts = {h["host"]: h for h in data["hosts"]}
    assert hosts["gts.example"]["pending"] == 1 and hosts["gone.example"]["failed"] == 1
    assert [d["host"] for d in data["unavailable"]] == ["dead.example"]


def test_failed_listing_and_retry(config_file: str, database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deliveries", "--config", config_file, "--failed"]) == 0
    out = capsys.readouterr().out
    assert "https://gone.example/inbox" in out and "HTTP 404: Record « introuvable »" in out
    assert "misskey" not in out
    assert main(["deliveries", "--config", config_file, "--retry-failed"]) == 0
    assert "requeued 1 failed delivery" in capsys.readouterr().out

    async def check() -> None:
        store = await Store.open(database_url)
        try:
            async with store.connect() as conn:
                row = (await conn.execute(select(deliveries).where(deliveries.c.host == "gone.example"))).one()
        finally:
            await store.close()
        assert row.state == "pending" and row.attempts == 0 and row.next_attempt_at <= utcnow()

    asyncio.run(check())
    assert main(["deliveries", "--config", config_file, "--failed"]) == 0
    assert "no failed deliveries" in capsys.readouterr().out


def test_empty_database(tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    async def as_serve_leaves_it() -> None:  # the CLI works on an existing database, it never creates one
        await (await Store.open(database_url)).close()

    asyncio.run(as_serve_leaves_it())
    cfg = _config(tmp_path, database_url)
    assert main(["followers", "--config", cfg]) == 0
    assert "no followers yet" in capsys.readouterr().out
    assert main(["deliveries", "--config", cfg]) == 0
    assert "pending 0  retrying 0  failed 0  done 0" in capsys.readouterr().out


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m fedibridge …` as the site owner runs it, without the test run's FEDIBRIDGE_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDIBRIDGE_")}
    return subprocess.run([sys.executable, "-m", "fedibridge", *args], capture_output=True, text=True, timeout=60,
                          env=env)


async def test_deliveries_shows_latest_error_per_failing_server(make_bridge: BridgeFactory, tmp_path: Path,
                                                                 database_url: str) -> None:
    """A real run: a Mastodon inbox answering 500 and a healthy one; the CLI (a subprocess) names the failing
    server and its error, which used to be only in the server log."""
    bridge = await make_bridge()
    async with RemoteInstance(host_ip="127.0.0.2", inbox_status=500) as broken, \
            RemoteInstance(host_ip="127.0.0.3") as healthy:
        for remote, acct in ((broken, broken.add_actor("alice")), (healthy, healthy.add_actor("bob"))):
            status, text = await remote.send(acct, bridge.actor + "/inbox", remote.follow(acct, bridge.actor))
            assert status == 202, text

        async def settled() -> bool:
            async with bridge.store.connect() as conn:
                found = {r.host: r for r in await conn.execute(select(deliveries))}
            return (broken.host in found and found[broken.host].attempts == 1
                    and healthy.host in found and found[healthy.host].state == "done")

        await wait_for(settled)
    cfg = _config(tmp_path, database_url)
    run = await asyncio.to_thread(_cli, "deliveries", "--config", cfg)
    assert run.returncode == 0, run.stderr
    assert "pending 0  retrying 1  failed 0  done 1" in run.stdout
    failing = run.stdout.split("failing servers, latest error:")[1]
    [line] = [x for x in failing.splitlines() if x.startswith("127.")]
    assert line.split()[:2] == [broken.host, "retrying"] and line.endswith("HTTP 500: error")
    assert healthy.host not in failing  # a healthy server is not listed as failing
    run = await asyncio.to_thread(_cli, "deliveries", "--config", cfg, "--json")
    [entry] = json.loads(run.stdout)["failing"]
    assert entry["host"] == broken.host and entry["state"] == "retrying"
    assert entry["last_status"] == 500 and entry["last_error"] == "HTTP 500: error" and entry["at"].endswith("Z")
