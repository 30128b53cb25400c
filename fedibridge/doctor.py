"""`fedibridge doctor`: check what a site owner can get wrong and say how to fix it."""

from __future__ import annotations

import os
from pathlib import Path

from . import config, installation
from .errors import FedibridgeError
from .keys import PRIVATE, TOKEN, load_keypair, permission_problem
from .store import LOW_DISK_BYTES, Store, disk_free_bytes, head_revision


def _ok(msg: str) -> None:
    print(f"  ok    {msg}")


def _bad(msg: str, fix: str) -> None:
    print(f"  FAIL  {msg}\n        fix: {fix}")


def _blog_points_into_fedibridge(settings: config.Settings) -> bool:
    blog, base = settings.blog.rstrip("/") + "/", settings.base + "/"
    return blog.startswith(base)


def _local(settings: config.Settings) -> bool:
    return settings.handle_domain == "localhost" or settings.handle_domain.startswith(("localhost:", "127."))


async def run_doctor(config_path: str | None) -> int:
    """Returns 0 when all is well, 1 when something needs fixing (2 for unusable config, via the CLI).

    It only looks: no database file, directory or key is created (a missing one is reported instead).
    """
    problems = 0
    print("fedibridge doctor")
    settings = config.load(config_path)
    found = installation.locate(settings, config_path)
    installation.require_some(found)
    _ok(f"configuration valid ({found.config_file or 'defaults'} + FEDIBRIDGE_* env)")
    _ok(f"handle @{settings.username}@{settings.handle_domain}, actor {settings.base}/users/{settings.username}")
    if settings.base_url.startswith("http://") and not _local(settings):
        problems += 1
        _bad("base_url uses http://; fediverse servers only talk to https://", "put fedibridge behind TLS")
    if _blog_points_into_fedibridge(settings):
        what = (f"blog_url {settings.blog} is inside fedibridge's base_url: the profile link, browser redirects "
                "and hashtag links would land on fedibridge, not on the blog")
        if not _local(settings):
            problems += 1
            _bad(what, "set blog_url (FEDIBRIDGE_BLOG_URL) to the blog's home page, e.g. https://example.org/")
        else:
            print(f"  note  {what} (fine for a local trial)")
    keys_dir = settings.keys_path
    try:
        load_keypair(keys_dir)
        _ok(f"RSA key pair readable in {keys_dir}/")
    except FedibridgeError as exc:
        problems += 1
        _bad(str(exc), "run `fedibridge init` or restore keys/ from your backup")
    for name in (PRIVATE, TOKEN):
        path = keys_dir / name
        if name == TOKEN and settings.admin_token:
            continue
        if not path.exists():
            if name == TOKEN:
                print(f"  note  {path} will be generated on first start")
            continue
        issue = permission_problem(path)
        if issue:
            problems += 1
            _bad(issue, f"chmod 600 {path}")
        else:
            _ok(f"{path} is private (0600)")
    if found.database is not None and not found.database_exists:
        problems += _missing_sqlite(found.database)
    else:
        problems += await _check_database(settings)
    problems += _check_disk(settings)
    if settings.domain and settings.domain != settings.base_url.split("/")[2]:
        print(f"  note  handle domain {settings.domain} differs from base_url: forward /.well-known/webfinger, "
              f"/.well-known/host-meta and /.well-known/nodeinfo from https://{settings.domain} (README)")
    handle = f"@{settings.username}@{settings.handle_domain}"
    print(f'  note  author attribution: put <meta name="fediverse:creator" content="{handle}"> in the <head> of '
          f"the blog's pages, so Mastodon shows \"More from {handle}\" under their link previews "
          f"(attributionDomains: {', '.join(settings.attribution)})")
    print("all good" if problems == 0 else f"{problems} problem(s) found")
    return 0 if problems == 0 else 1


def _check_disk(settings: config.Settings) -> int:
    """SQLite only: a full disk stops the inbox (503s), so warn while there is time."""
    free = disk_free_bytes(settings.database_url)
    if free is not None and free < LOW_DISK_BYTES:
        _bad(f"only {free // 2**20} MiB free next to the database; when the disk is full the inbox answers 503",
             "free disk space (old logs, backups) or move data/ to a larger disk")
        return 1
    if free is not None:
        _ok(f"{free // 2**20} MiB free next to the database")
    return 0


def _missing_sqlite(database: Path) -> int:
    """Never create the file here. A missing data/ under an existing directory is the normal state before the
    first `serve`; a path whose directories do not exist at all is more likely a typo in database_url."""
    directory = database.parent
    usable = next((d for d in (directory, directory.parent) if d.is_dir()), None)
    if usable is not None and os.access(usable, os.W_OK | os.X_OK):
        made = "" if usable == directory else f" (and {directory})"
        print(f"  note  database {database} does not exist yet: `fedibridge serve` creates it{made} on first start")
        return 0
    reason = (f"{usable} is not writable by this user" if usable
              else f"neither {directory} nor {directory.parent} exists")
    _bad(f"database {database} does not exist and cannot be created: {reason}",
         "fix database_url / FEDIBRIDGE_DATABASE_URL, or create the directory for the user fedibridge runs as")
    return 1


async def _check_database(settings: config.Settings) -> int:
    try:
        store = await Store.open(settings.database_url, migrate=False)
    except FedibridgeError as exc:
        _bad(str(exc), "check database_url / FEDIBRIDGE_DATABASE_URL and that the server is running")
        return 1
    problems = 0
    try:
        current, head = await store.current_revision(), head_revision()
        if current == head:
            _ok(f"database reachable, schema up to date (revision {current})")
        else:
            print(f"  note  database schema at {current or 'empty'}, code expects {head}: "
                  "`fedibridge serve` applies migrations on start")
        if current == head:
            foreign = await installation.foreign_articles(store, settings.base)
            if foreign.count:
                problems += 1
                _bad(f"{foreign.count} article(s) were published under {', '.join(foreign.bases)}, not {settings.base} "
                     "(a local trial?): they are now served under this base URL",
                     "`fedibridge delete SLUG` each one, or start from an empty database (`fedibridge init --fresh` "
                     "moves a SQLite database aside)")
    finally:
        await store.close()
    return problems
