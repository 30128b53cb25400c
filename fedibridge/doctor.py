"""`fedibridge doctor`: check what a site owner can get wrong and say how to fix it."""

from __future__ import annotations

from pathlib import Path

from . import config
from .errors import FedibridgeError
from .keys import PRIVATE, TOKEN, load_keypair, permission_problem


def _ok(msg: str) -> None:
    print(f"  ok    {msg}")


def _bad(msg: str, fix: str) -> None:
    print(f"  FAIL  {msg}\n        fix: {fix}")


async def run_doctor(config_path: str | None) -> int:
    """Returns 0 when all is well, 1 when something needs fixing (2 for unusable config, via the CLI)."""
    from .store import LOW_DISK_BYTES, Store, disk_free_bytes, head_revision

    problems = 0
    print("fedibridge doctor")
    settings = config.load(config_path)
    source = config_path or "fedibridge.toml"
    has_file = Path(source).exists()  # noqa: ASYNC240 - one stat at start-up
    _ok(f"configuration valid ({source if has_file else 'defaults'} + FEDIBRIDGE_* env)")
    _ok(f"handle @{settings.username}@{settings.handle_domain}, actor {settings.base}/users/{settings.username}")
    if settings.base_url.startswith("http://") and settings.handle_domain not in ("localhost",) \
            and not settings.handle_domain.startswith(("localhost:", "127.")):
        problems += 1
        _bad("base_url uses http://; fediverse servers only talk to https://", "put fedibridge behind TLS")
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
    try:
        store = await Store.open(settings.database_url, migrate=False)
    except FedibridgeError as exc:
        problems += 1
        _bad(str(exc), "check database_url / FEDIBRIDGE_DATABASE_URL and that the server is running")
        return 1
    try:
        current, head = await store.current_revision(), head_revision()
        if current == head:
            _ok(f"database reachable, schema up to date (revision {current})")
        else:
            print(f"  note  database schema at {current or 'empty'}, code expects {head}: "
                  "`fedibridge serve` applies migrations on start")
    finally:
        await store.close()
    free = disk_free_bytes(settings.database_url)
    if free is not None and free < LOW_DISK_BYTES:
        problems += 1
        _bad(f"only {free // 2**20} MiB free next to the database; when the disk is full the inbox answers 503",
             "free disk space (old logs, backups) or move data/ to a larger disk")
    elif free is not None:
        _ok(f"{free // 2**20} MiB free next to the database")
    if settings.domain and settings.domain != settings.base_url.split("/")[2]:
        print(f"  note  handle domain {settings.domain} differs from base_url: forward /.well-known/webfinger, "
              f"/.well-known/host-meta and /.well-known/nodeinfo from https://{settings.domain} (README)")
    print("all good" if problems == 0 else f"{problems} problem(s) found")
    return 0 if problems == 0 else 1
