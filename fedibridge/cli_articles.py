"""`fedibridge publish FILE`, `fedibridge delete SLUG`, `fedibridge import FEED_URL_OR_FILE`.

They write to the same database as the server: the running worker delivers what they queue.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any

from . import articles, config, doc_cache, feedsource, frontmatter, installation
from .app import make_site
from .errors import BadRequest, FetchError
from .http_client import GuardedClient
from .keys import load_keypair
from .store import Store
from .vocab import Site

IMPORT_MAX_BYTES = 50 * 1024 * 1024  # a full-history export can be big
BAR_WIDTH = 30


def add_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("publish", cmd_publish, "publish or update an article from a Markdown/HTML file with front matter")
    p.add_argument("file", help="post.md or post.html with YAML front matter (title, url, slug, date, tags…)")
    p.add_argument("--deliver", action=argparse.BooleanOptionalAction, default=True,
                   help="send to followers (default) or only record it in the outbox")
    p = add("delete", cmd_delete, "delete an article: federate a Delete and answer 410 at its id")
    p.add_argument("slug")
    p.add_argument("--deliver", action=argparse.BooleanOptionalAction, default=True)
    p = add("import", cmd_import, "backfill an existing blog's articles from its feed into the outbox")
    p.add_argument("source", metavar="FEED_URL_OR_FILE")
    p.add_argument("--deliver", action="store_true",
                   help="also send the imported articles to followers (default: outbox only)")


async def _open(args: argparse.Namespace) -> tuple[config.Settings, Store, Site]:
    settings = installation.load_existing(getattr(args, "config", None), keys=True)  # never a second identity
    keys = load_keypair(settings.keys_path)
    store = await Store.open(settings.database_url)
    doc_cache.tell_servers_on_close(store)  # a running server's cached documents show our changes at once
    return settings, store, make_site(settings, keys)


def _describe(site: Site, result: articles.PublishResult) -> str:
    what = "created" if result.created else "updated" if result.changed else "unchanged (same content)"
    line = f"{result.article.slug}: {what} — {site.article_id(result.article.slug)}"
    if result.activity:
        line += f"\n  {result.activity} queued for {result.queued} inbox(es)"
    return line


def cmd_publish(args: argparse.Namespace) -> int:
    async def go() -> int:
        file = frontmatter.read(args.file)  # fail on a bad file before touching the database
        try:
            inp = articles.validate(file.data, source="cli")
        except BadRequest as exc:
            raise file.explain(exc) from None
        _, store, site = await _open(args)
        try:
            result = await articles.publish_one(store, site, inp, deliver=args.deliver)
        finally:
            await store.close()
        print(_describe(site, result))
        return 0

    return asyncio.run(go())


def cmd_delete(args: argparse.Namespace) -> int:
    async def go() -> int:
        _, store, site = await _open(args)
        try:
            result = await articles.delete_one(store, site, args.slug, deliver=args.deliver)
        finally:
            await store.close()
        if result.activity is None:
            print(f"{args.slug}: already deleted")
        else:
            print(f"{args.slug}: deleted — {result.activity} queued for {result.queued} inbox(es)")
        return 0

    return asyncio.run(go())


def progress_bar(done: int, total: int) -> None:
    """`[#####     ] 12/40` redrawn in place on a terminal; elsewhere (systemd, Docker logs) plain lines,
    about every 10%, so a log gets a dozen readable lines instead of hundreds of carriage returns."""
    if not sys.stderr.isatty():
        step = max(1, total // 10)
        if done == 1 or done >= total or done % step == 0:
            sys.stderr.write(f"imported {done}/{total}\n")
            sys.stderr.flush()
        return
    filled = BAR_WIDTH * done // total if total else BAR_WIDTH
    sys.stderr.write(f"\r[{'#' * filled}{' ' * (BAR_WIDTH - filled)}] {done}/{total}")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


async def _fetch_source(settings: config.Settings, source: str) -> feedsource.Fetched:
    client: Any = None
    if source.startswith(("http://", "https://")):
        client = GuardedClient(user_agent=settings.agent, signer=None,
                               allow_private=settings.allow_private_addresses, timeout=max(settings.fetch_timeout, 30),
                               max_bytes=IMPORT_MAX_BYTES)
        await client.start()
    try:
        return await feedsource.fetch(client, source)
    finally:
        if client is not None:
            await client.close()


def cmd_import(args: argparse.Namespace) -> int:
    async def go() -> int:
        settings, store, site = await _open(args)
        try:
            try:
                fetched = await _fetch_source(settings, args.source)
                entries = feedsource.parse_feed(fetched.body, fetched.content_type)
            except (feedsource.FeedError, FetchError) as exc:
                raise feedsource.FeedError(f"cannot import {args.source}: {exc}") from None
            if not entries:
                print(f"{args.source}: no entries")
                return 0
            result = await feedsource.publish_entries(store, site, entries, deliver=args.deliver, source="import",
                                                      progress=progress_bar)
        finally:
            await store.close()
        print(f"imported {len(entries)} entries: {result.created} new, {result.updated} updated, "
              f"{result.unchanged} unchanged, {result.skipped} skipped"
              + ("" if args.deliver else " (outbox only, nothing sent to followers)"))
        return 0

    return asyncio.run(go())
