"""Find the installation a command works on, and refuse to invent a new one.

Only `serve` and `init` create a database or keys. Every other command works on an existing
installation: run from the wrong directory, it must stop and say where it looked, not quietly make a
second database and a second key pair that the running server never sees.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from . import config
from .errors import ConfigError
from .keys import PRIVATE
from .store import Store, sqlite_path
from .tables import activities, articles

HOW_TO_POINT = ("run it in the directory where `fedibridge serve` runs, or pass --config /path/to/fedibridge.toml "
                "(or set FEDIBRIDGE_CONFIG, or FEDIBRIDGE_DATABASE_URL and FEDIBRIDGE_KEYS_DIR)")


@dataclass(frozen=True)
class Found:
    """What exists on disk for these settings (absolute paths, for messages)."""

    config_file: Path | None
    database: Path | None  # the SQLite file; None for PostgreSQL
    database_exists: bool
    private_key: Path
    key_exists: bool


def locate(settings: config.Settings, config_arg: str | None, env: Mapping[str, str] | None = None) -> Found:
    """Look without touching anything: no directory, file or key is created here."""
    env = os.environ if env is None else env
    file = config.find_file(config_arg, env)
    db = sqlite_path(settings.database_url)
    db_abs = db.resolve() if db is not None else None
    key = (settings.keys_path / PRIVATE).resolve()
    return Found(file.resolve() if file else None, db_abs, db_abs is None or db_abs.exists(), key, key.exists())


def _nothing_here(found: Found) -> str:
    db = f"database {found.database}, " if found.database is not None else ""
    return (f"no fedibridge installation found: looked for fedibridge.toml in {Path.cwd()} (--config and "
            f"FEDIBRIDGE_CONFIG not given), {db}key pair {found.private_key}; none exists. {HOW_TO_POINT}")


def require_some(found: Found) -> None:
    """Stop when nothing at all says an installation is here (for `doctor`, which reports the rest)."""
    if found.config_file is None and not found.key_exists and (found.database is None or not found.database_exists):
        raise ConfigError(_nothing_here(found))


def require_complete(found: Found, *, keys: bool) -> None:
    """Stop unless the configured database (and, for commands that sign, the key pair) exist."""
    require_some(found)
    where = f"settings from {found.config_file}" if found.config_file else f"no fedibridge.toml in {Path.cwd()}"
    if keys and not found.key_exists:
        raise ConfigError(f"no key pair at {found.private_key} ({where}): `fedibridge serve` creates it on first "
                          f"start, or restore keys/ from your backup; if the installation is elsewhere, {HOW_TO_POINT}")
    if not found.database_exists:
        raise ConfigError(f"no database at {found.database} ({where}): `fedibridge serve` creates it on first start; "
                          f"if the installation is elsewhere, {HOW_TO_POINT}")


@dataclass(frozen=True)
class ForeignArticles:
    """Live articles first published under another base URL (a local trial's, typically)."""

    count: int
    bases: list[str]


async def foreign_articles(store: Store, base: str) -> ForeignArticles:
    """Articles whose ActivityPub id is not under `base`: they would now be served under the wrong identity."""
    if await store.current_revision() is None:
        return ForeignArticles(0, [])
    a, act = articles.c, activities.c
    query = (select(act.article_id, act.object_id).join(articles, a.id == act.article_id)
             .where(act.type == "Create", a.deleted.is_(None), ~act.object_id.startswith(base.rstrip("/") + "/")))
    async with store.connect() as conn:
        rows = (await conn.execute(query)).all()
    bases = sorted({str(r.object_id).rsplit("/articles/", 1)[0] for r in rows})
    return ForeignArticles(len({r.article_id for r in rows}), bases)


def move_aside(database: Path, stamp: str) -> Path:
    """Rename the SQLite file (and its WAL files) to `<name>.trial-<stamp>`: kept, never deleted."""
    target = database.with_name(f"{database.name}.trial-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        src = database.with_name(database.name + suffix)
        if src.exists():
            src.rename(target.with_name(target.name + suffix))
    return target


def load_existing(config_arg: str | None, *, keys: bool = False) -> config.Settings:
    """Settings for a command that works on an existing installation (anything but `serve` and `init`).

    `keys`: the command signs what it queues (publish, delete, import), so the key pair must exist too.
    """
    settings = config.load(config_arg)
    require_complete(locate(settings, config_arg), keys=keys)
    return settings
