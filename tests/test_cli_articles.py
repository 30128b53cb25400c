"""`fedibridge publish / delete / import`, run as real subprocesses against the database a real bridge serves."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import feedparser
import pytest
from aiohttp import web
from sqlalchemy import func, select

from fedibridge.tables import activities, articles, deliveries, followers

from .conftest import Bridge, free_port

FEEDS = Path(__file__).parent / "fixtures" / "feeds"
AP = {"Accept": "application/activity+json"}

POST_MD = """---
title: "L’été à Paris « enfin » 🌞"
slug: ete-a-paris
date: 2024-07-14T10:30:00+02:00
tags: [voyage, été]
lang: fr
summary: "Chaud, très chaud."
image: http://blog.test/media/seine.jpg
image_alt: La Seine au coucher du soleil
url: http://blog.test/2024/07/ete-a-paris/
---

Il fait chaud à Paris\u00a0! « Enfin », dit-on 🌞.

* les quais
* les ponts
"""


async def cli(bridge: Bridge, *args: str, cwd: Path) -> tuple[int, str, str]:
    """Run `python -m fedibridge` with FEDIBRIDGE_* pointing at the bridge's database and keys."""
    s = bridge.settings
    env = {**os.environ, "FEDIBRIDGE_BASE_URL": s.base_url, "FEDIBRIDGE_DATABASE_URL": s.database_url,
           "FEDIBRIDGE_KEYS_DIR": s.keys_dir, "FEDIBRIDGE_BLOG_URL": s.blog_url, "FEDIBRIDGE_LANGUAGE": "fr",
           "FEDIBRIDGE_ALLOW_PRIVATE_ADDRESSES": "true", "FEDIBRIDGE_ADMIN_TOKEN": "x"}
    env.pop("FEDIBRIDGE_CONFIG", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fedibridge", *args, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def add_follower(bridge: Bridge) -> None:
    async with bridge.store.begin() as conn:
        await conn.execute(followers.insert().values(
            actor_id="https://pleroma.example/users/dana", inbox="https://pleroma.example/users/dana/inbox",
            shared_inbox="https://pleroma.example/inbox", since=datetime.now(UTC)))


async def count(bridge: Bridge, table: object) -> int:
    async with bridge.store.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())  # type: ignore[arg-type]


async def test_publish_update_delete_from_files(bridge: Bridge, tmp_path: Path) -> None:
    await add_follower(bridge)
    post = tmp_path / "ete.md"
    post.write_text(POST_MD, encoding="utf-8")

    code, out, err = await cli(bridge, "publish", str(post), cwd=tmp_path)
    assert code == 0, err
    assert "ete-a-paris: created" in out and "queued for 1 inbox" in out
    async with bridge.http.get(f"{bridge.url}/articles/ete-a-paris", headers=AP) as resp:
        raw = await resp.read()
    assert "« enfin » 🌞".encode() in raw  # the title, byte for byte
    note = json.loads(raw)
    assert note["published"] == "2024-07-14T08:30:00Z" and "Chaud, très chaud." in note["content"]
    assert note["attachment"][0]["name"] == "La Seine au coucher du soleil"
    assert note["contentMap"]["fr"] == note["content"]
    async with bridge.http.get(f"{bridge.url}/feed.rss") as resp:
        feed = feedparser.parse(await resp.read())
    assert feed.bozo == 0 and feed.entries[0].title == "L’été à Paris « enfin » 🌞"
    assert "<li>les quais</li>" in feed.entries[0].content[0].value
    assert "Il fait chaud à Paris\u00a0! « Enfin », dit-on 🌞." in feed.entries[0].content[0].value

    code, out, _ = await cli(bridge, "publish", str(post), cwd=tmp_path)
    assert code == 0 and "unchanged" in out
    post.write_text(POST_MD.replace("les ponts", "les ponts de Paris"), encoding="utf-8")
    code, out, _ = await cli(bridge, "publish", "--no-deliver", str(post), cwd=tmp_path)
    assert code == 0 and "updated" in out and "queued for 0 inbox" in out
    assert await count(bridge, deliveries) == 1

    code, out, _ = await cli(bridge, "delete", "ete-a-paris", cwd=tmp_path)
    assert code == 0 and "deleted" in out
    async with bridge.http.get(f"{bridge.url}/articles/ete-a-paris", headers=AP) as resp:
        assert resp.status == 410
    assert await count(bridge, deliveries) == 2

    code, _, err = await cli(bridge, "delete", "nope", cwd=tmp_path)
    assert code == 2 and "no article with slug nope" in err and "Traceback" not in err
    bad = tmp_path / "bad.md"
    bad.write_text("---\ntitle: Sans adresse\n---\nTexte\n", encoding="utf-8")
    code, _, err = await cli(bridge, "publish", str(bad), cwd=tmp_path)
    assert code == 2 and "url is required" in err


async def test_import_backfills_without_delivering(bridge: Bridge, tmp_path: Path) -> None:
    await add_follower(bridge)
    code, out, err = await cli(bridge, "import", str(FEEDS / "wordpress.rss"), cwd=tmp_path)
    assert code == 0, err
    # stderr is a pipe here, as under systemd or Docker: plain progress lines, no carriage-return redraws
    assert "imported 1/2\nimported 2/2\n" in err and "\r" not in err
    assert "2 new" in out and "nothing sent" in out
    assert await count(bridge, articles) == 2 and await count(bridge, deliveries) == 0
    async with bridge.http.get(f"{bridge.actor}/outbox?page=1", headers=AP) as resp:
        items = (await resp.json())["orderedItems"]
    # Original dates kept: the outbox reads like the blog's history, newest first.
    assert [i["object"]["published"] for i in items] == ["2024-07-14T08:30:00Z", "2024-01-10T09:00:00Z"]
    assert [i["published"] for i in items] == ["2024-07-14T08:30:00Z", "2024-01-10T09:00:00Z"]

    # Importing again changes nothing; --deliver sends what is new.
    code, out, _ = await cli(bridge, "import", str(FEEDS / "wordpress.rss"), cwd=tmp_path)
    assert code == 0 and "2 unchanged" in out
    code, out, _ = await cli(bridge, "import", "--deliver", str(FEEDS / "jekyll.atom"), cwd=tmp_path)
    assert code == 0 and "2 new" in out
    assert await count(bridge, deliveries) == 2 and await count(bridge, activities) == 4


@pytest.fixture
async def hugo_server() -> AsyncIterator[str]:
    port = free_port()

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=(FEEDS / "hugo.xml").read_bytes(), content_type="application/rss+xml")

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get("/posts/index.xml", handle)
    app.router.add_get("/broken", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_import_from_url_and_errors(bridge: Bridge, tmp_path: Path, hugo_server: str) -> None:
    code, out, err = await cli(bridge, "import", f"{hugo_server}/posts/index.xml", cwd=tmp_path)
    assert code == 0, err
    assert "2 new" in out
    async with bridge.http.get(f"{bridge.url}/articles/rust-raspberry-pi", headers=AP) as resp:
        note = await resp.json()
    assert "c’est plus rapide" in note["content"]
    code, _, err = await cli(bridge, "import", f"{hugo_server}/broken", cwd=tmp_path)
    assert code == 2 and "HTTP 503" in err and "Traceback" not in err
    page = tmp_path / "page.html"
    page.write_text("<!doctype html><p>pas un flux</p>", encoding="utf-8")
    code, _, err = await cli(bridge, "import", str(page), cwd=tmp_path)
    assert code == 2 and "not a feed" in err
    assert await count(bridge, articles) == 2
