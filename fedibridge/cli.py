"""The `fedibridge` console script: init, serve, doctor; feature commands come from cli_*.py modules.

Every expected failure is a FedibridgeError printed as one line with exit status 2 — no tracebacks.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import __version__, config, heap, installation
from .doctor import run_doctor
from .errors import ConfigError, FedibridgeError
from .hosts import host_of
from .keys import ensure_admin_token, ensure_keypair
from .store import Store, sqlite_path


def _settings(args: argparse.Namespace) -> config.Settings:
    return config.load(getattr(args, "config", None))


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


# ---------------------------------------------------------------------------------------------- init
TEMPLATE = """\
# fedibridge configuration. Every setting can be overridden by an environment variable
# FEDIBRIDGE_<NAME IN UPPER CASE>, e.g. FEDIBRIDGE_DATABASE_URL. Lines starting with # show defaults.

# Public URL where fedibridge itself is reachable (behind your reverse proxy).
base_url = {base_url}
# Host part of the handle (@{username}@{domain_shown}). Set it to the blog's domain and forward
# /.well-known/webfinger, /.well-known/host-meta and /.well-known/nodeinfo from it (see README).
{domain_line}
username = {username}
name = {name}
# summary = "Articles de mon blog, sur le fediverse."
# The blog's home page (the actor's profile links there; browsers are redirected there).
{blog_line}
# language = "fr"
# icon_url = "https://blog.example.org/avatar.png"
# header_url = "https://blog.example.org/header.jpg"

# Storage: SQLite by default; postgresql://user:pass@host/db to scale out.
database_url = {database_url}
# keys_dir = "keys"
# admin_token = ""          # empty: generated into keys/admin-token on first start
# host = "127.0.0.1"
# port = 8080

# Publishing
# object_type = "Note"      # Note (shown in full by Mastodon) or Article (long-form, FEP-b2b8 preview)
# content_mode = "excerpt"  # excerpt or full
# tag_url_template = "{{blog_url}}/tag/{{tag}}/"
# feed_entries = 20
# source_feed = "https://blog.example.org/feed/"   # poll the blog's own feed and publish new articles
# feed_poll_interval = 900
# quote_policy = "public"  # who may quote articles (Mastodon 4.5): public, followers or nobody
# also_known_as = []        # actor URLs of accounts whose followers move here (alsoKnownAs)
# attribution_domains = []  # sites whose link previews credit the blog (default: the blog's domain)

# Comments
# moderation = "known"      # known (first comment of a commenter waits), open, or hold
# blocked_domains = ["spam.example"]
# blocked_actors = []
# cors_origins = []         # default: the blog's origin
# spam_check_url = ""       # Akismet-compatible comment-check endpoint
# spam_check_key = ""
# webhook_url = ""
# webhook_secret = ""
"""


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _blog_url(args: argparse.Namespace, base_url: str, domain: str) -> str:
    """The blog's home page. When fedibridge lives under a path or on another host than the handle's, the
    default (base_url) would point every profile, redirect and hashtag link into fedibridge itself (404)."""
    if args.blog_url:
        return str(args.blog_url)
    parts = urlsplit(base_url)
    handle_host = domain or parts.netloc
    if parts.path.strip("/") == "" and parts.netloc == handle_host:
        return ""
    derived = f"{parts.scheme}://{handle_host}/"
    if sys.stdin.isatty():
        try:
            answer = input(f"the blog's home page (profile link, hashtag links) [{derived}]: ").strip()
        except EOFError:
            answer = ""
        return answer or derived
    print(f"blog_url: using {derived} (the blog's home page, where the profile and hashtags link); "
          "pass --blog-url to choose another")
    return derived


async def _trial_articles(settings: config.Settings) -> installation.ForeignArticles:
    store = await Store.open(settings.database_url, migrate=False)
    try:
        return await installation.foreign_articles(store, settings.base)
    finally:
        await store.close()


def cmd_init(args: argparse.Namespace) -> int:
    path = Path(args.config or "fedibridge.toml")
    if path.exists():
        raise ConfigError(f"{path} already exists; edit it, or remove it to start over")
    config.validate(config.Settings(base_url=args.base_url, domain=args.domain or ""))  # before asking anything
    candidate = config.Settings(
        base_url=args.base_url, domain=args.domain or "", username=args.username, name=args.name,
        blog_url=_blog_url(args, args.base_url, args.domain or ""), database_url=args.database_url,
        keys_dir=args.keys_dir,
    )
    settings = config.validate(candidate)
    # Nothing is written until every check passed, and the file comes last: a failed init can be re-run.
    database = sqlite_path(settings.database_url)
    if database is not None and database.exists():
        trial = asyncio.run(_trial_articles(settings))
        if trial.count and not args.fresh:
            raise ConfigError(f"{database} holds {trial.count} article(s) published during a trial at "
                              f"{', '.join(trial.bases)}; they would be served under {settings.base}: re-run with "
                              "--fresh to move that database aside (kept, not deleted) and start empty")
    _, created = ensure_keypair(settings.keys_path)
    ensure_admin_token(settings.keys_path)
    if args.fresh and database is not None and database.exists():
        moved = installation.move_aside(database, datetime.now(UTC).strftime("%Y%m%dT%H%M%S"))
        print(f"moved the trial database aside to {moved} (delete it yourself once you are sure)")
    text = TEMPLATE.format(
        base_url=_toml_str(settings.base_url),
        domain_line=f"domain = {_toml_str(settings.domain)}" if settings.domain else '# domain = "example.org"',
        domain_shown=settings.handle_domain,
        username=_toml_str(settings.username),
        name=_toml_str(settings.name),
        blog_line=f"blog_url = {_toml_str(settings.blog_url)}" if settings.blog_url
        else '# blog_url = "https://blog.example.org"',
        database_url=_toml_str(settings.database_url),
    )
    if args.keys_dir != "keys":
        text += f"keys_dir = {_toml_str(args.keys_dir)}\n"
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {path.resolve()}: {exc.strerror}") from None
    print(f"wrote {path}")
    print(f"{'generated' if created else 'kept existing'} RSA key pair in {settings.keys_path}/")
    print(f"fediverse handle: @{settings.username}@{settings.handle_domain}")
    print("next: `fedibridge doctor`, then `fedibridge serve`")
    return 0


# --------------------------------------------------------------------------------------------- serve
def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    changes: dict[str, Any] = {}
    if args.host:
        changes["host"] = args.host
    if args.port:
        changes["port"] = args.port
    if changes:
        settings = settings.replace(**changes)
    _setup_logging(settings.log_level)
    code = asyncio.run(_serve(settings, args.role))
    _exit_past_stuck_threads(code)
    return code


EXIT_WAIT_SECONDS = 0.5  # a task or thread still busy this long after the stop is blocked, not finishing


def _reachable_by_the_fediverse(settings: config.Settings) -> bool:
    """Fediverse servers fetch https:// URLs on public hosts only; localhost and plain http are a local trial."""
    host = host_of(settings.base_url)
    local = host in ("localhost", "::1") or host.endswith(".localhost") or host.startswith("127.")
    return settings.base_url.startswith("https://") and not local


def _banner(settings: config.Settings, role: str, key_created: bool, token_created: bool) -> None:
    actor = f"{settings.base}/users/{settings.username}"
    if role == "worker":
        print(f"fedibridge {__version__} (worker): deliveries, inbox and feed polling; no HTTP listener")
    else:
        print(f"fedibridge {__version__} ({role}) on http://{settings.host}:{settings.port}")
    print(f"  fediverse handle: @{settings.username}@{settings.handle_domain}")
    print(f"  actor:            {actor}")
    print(f"  feeds:            {settings.base}/feed.rss  {settings.base}/feed.atom")
    if key_created:
        print(f"  generated an RSA-2048 key pair in {settings.keys_path}/ (private key mode 0600)")
    if token_created:
        print(f"  generated the admin API token in {settings.keys_path}/admin-token")
    if key_created or token_created:
        print("next steps:")
        print("  - publish an article: fedibridge publish post.md   (or POST /api/articles)")
        if _reachable_by_the_fediverse(settings):
            print(f"  - search for @{settings.username}@{settings.handle_domain} from a fediverse account to follow it")
        else:
            print(f"  - fediverse servers cannot reach {settings.base}: following @{settings.username}@"
                  f"{settings.handle_domain} needs a public HTTPS URL. Run `fedibridge init --base-url "
                  "https://fedi.example.org --blog-url https://example.org/` and put fedibridge behind a reverse "
                  "proxy with TLS (README: Running in production)")
    sys.stdout.flush()


async def _serve(settings: config.Settings, role: str) -> int:
    # Lazy on purpose (start-up cost): only `serve` needs aiohttp and the whole app; `init`, `doctor`
    # and `--help` stay quick.
    from aiohttp import web

    from .app import create_app  # lazy-import: start-up cost

    _, key_created = ensure_keypair(settings.keys_path)
    token_created = False
    if not settings.admin_token:
        _, token_created = ensure_admin_token(settings.keys_path)
    app = create_app(settings, role)  # type: ignore[arg-type]
    # On SIGTERM, requests in flight get WEB_SHUTDOWN_SECONDS (2 s), then the jobs stop: deliveries in flight get
    # delivery.SHUTDOWN_SECONDS + RECORD_SECONDS (7.5 s), the inbox worker twice worker.STOP_WAIT_SECONDS
    # (7.5 s), side by side; then EXIT_WAIT_SECONDS (0.5 s): the whole stop stays within the README's 10 s.
    runner = web.AppRunner(app, access_log=None if role == "worker" else logging.getLogger("aiohttp.access"),
                           shutdown_timeout=WEB_SHUTDOWN_SECONDS)
    await runner.setup()  # runs cleanup_ctx: opens the database (migrations), starts workers
    try:
        if role != "worker":
            site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True)
            try:
                await site.start()
            except OSError as exc:
                raise ConfigError(f"cannot listen on {settings.host}:{settings.port} ({exc.strerror}): stop the other "
                                  "program using that port, or choose another with --port or FEDIBRIDGE_PORT") from None
        _banner(settings, role, key_created, token_created)
        heap.settle()  # start-up is done: what it built lives as long as the process (see heap.py)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        logging.getLogger(__name__).info("shutting down")
    finally:
        await runner.cleanup()
    await _settle_or_exit(0)
    return 0


async def _settle_or_exit(code: int) -> None:
    """Give tasks left after the stop (a write cut off by its bound) a moment to end, then exit without them.

    Such a task may wait on a database call blocked in its thread (SQLite's busy wait lasts up to 30 s while
    another process holds the write lock): `asyncio.run` would wait for it, and Python's exit for that thread.
    What the stop could not record or hand back returns when its lease expires; the README promises 10 s.
    """
    current = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not current]
    for task in left:
        task.cancel()
    if left:
        _, pending = await asyncio.wait(left, timeout=EXIT_WAIT_SECONDS)
        if pending:
            _exit_now(code, f"{len(pending)} task(s) still waiting on the database")


def _exit_past_stuck_threads(code: int) -> None:
    """After the loop: a database call still blocked in its thread would hold Python's exit (see above)."""
    deadline = time.monotonic() + EXIT_WAIT_SECONDS
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [t for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon
             and t.is_alive()]
    if stuck:
        _exit_now(code, f"{len(stuck)} database thread(s) still blocked")


def _exit_now(code: int, why: str) -> None:
    logging.getLogger(__name__).warning("exiting without waiting: %s (a database locked by another process?)", why)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


WEB_SHUTDOWN_SECONDS = 2.0  # an inbox request is answered within milliseconds once its batch is written


# -------------------------------------------------------------------------------------------- doctor
def cmd_doctor(args: argparse.Namespace) -> int:
    return asyncio.run(run_doctor(getattr(args, "config", None)))


# ---------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedibridge", description="Bridge a blog to the fediverse.")
    parser.add_argument("--version", action="version", version=f"fedibridge {__version__}")
    config_help = "path to fedibridge.toml (default ./fedibridge.toml, or FEDIBRIDGE_CONFIG)"
    # Accepted before or after the command: `fedibridge --config F doctor` and `fedibridge doctor --config F`.
    # SUPPRESS keeps the subcommand's absent option from overwriting the value given before it.
    parser.add_argument("--config", "-c", help=config_help)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--config", "-c", help=config_help, default=argparse.SUPPRESS)
        p.set_defaults(func=func)
        return p

    p = add("init", cmd_init, "write fedibridge.toml and generate the keys")
    p.add_argument("--base-url", required=True, help="public URL of fedibridge, e.g. https://blog.example.org/fediverse")
    p.add_argument("--domain", help="host of the handle, e.g. example.org (default: base URL's host)")
    p.add_argument("--username", default="blog")
    p.add_argument("--name", default="My blog")
    p.add_argument("--blog-url", help="the blog's home page, e.g. https://example.org/ (default: https://DOMAIN/ "
                   "when the base URL has a path or another host)")
    p.add_argument("--fresh", action="store_true",
                   help="move a trial database found at database_url aside (renamed, never deleted) and start empty")
    p.add_argument("--database-url", default=config.Settings.database_url)
    p.add_argument("--keys-dir", default="keys")

    p = add("serve", cmd_serve, "run the bridge (HTTP server and background workers)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--role", choices=("all", "web", "worker"), default="all",
                   help="web: HTTP only; worker: deliveries, inbox and feed polling only; all: both")

    add("doctor", cmd_doctor, "check configuration, keys, database and migrations")

    # Feature commands: each module adds its subparsers through `add` and sets their `func`.
    # Lazy on purpose (start-up cost): the feature commands load the app (aiohttp) for what they publish.
    from . import cli_account, cli_admin, cli_articles, cli_comments, cli_delivery  # lazy-import: start-up cost

    for module in (cli_articles, cli_delivery, cli_comments, cli_account, cli_admin):
        module.add_commands(add)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FedibridgeError as exc:
        print(f"fedibridge: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
