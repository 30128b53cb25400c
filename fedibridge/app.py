"""create_app(settings): builds the aiohttp application, its shared state and its background jobs.

No globals: everything hangs on AppKeys; long-lived things (database engine, HTTP client, workers)
start and stop in cleanup_ctx, so tests can run several apps in one process.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC
from typing import Literal, cast

from aiohttp import web

from .config import Settings
from .health import Health
from .keys import KeyPair, ensure_admin_token, ensure_keypair
from .logsafe import logger, register_secret
from .metrics import Metrics
from .remote_actors import Resolver
from .resolver import GuardedClient, Signer
from .services import Services
from .store import Store
from .vocab import Site

log = logger(__name__)  # arguments escaped and redacted (logsafe)
Role = Literal["all", "web", "worker"]

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
KEYS = web.AppKey("keys", KeyPair)
SITE = web.AppKey("site", Site)
CLIENT = web.AppKey("client", GuardedClient)
RESOLVER = web.AppKey("resolver", Resolver)
METRICS = web.AppKey("metrics", Metrics)
ADMIN_TOKEN = web.AppKey("admin_token", str)
ROLE = web.AppKey("role", str)
WORKER_ID = web.AppKey("worker_id", str)
# Background jobs started for the worker role: (name, coroutine factory taking the app).
JOBS = web.AppKey("jobs", list)
# Snapshot of the blocklists the inbox checks on every request; cleared when an admin changes blocks.
BLOCK_CACHE = web.AppKey("block_cache", dict)
# Long-lived tasks report here; /healthz answers 503 naming any failing for longer than the grace.
HEALTH = web.AppKey("health", Health)
# Everything above in one object, set once storage and the client are open: what new code should use.
SERVICES = web.AppKey("services", Services)

JobFactory = Callable[[web.Application], Awaitable[None]]


def make_site(settings: Settings, keys: KeyPair) -> Site:
    from datetime import datetime

    pem_file = settings.keys_path / "private.pem"
    try:
        created = datetime.fromtimestamp(pem_file.stat().st_mtime, UTC).replace(microsecond=0)
    except OSError:
        created = datetime(2024, 1, 1, tzinfo=UTC)
    return Site(
        base_url=settings.base,
        domain=settings.handle_domain,
        username=settings.username,
        name=settings.name,
        summary=settings.summary,
        blog_url=settings.blog,
        public_key_pem=keys.public_pem,
        published=created,
        icon_url=settings.icon_url or None,
        header_url=settings.header_url or None,
        object_type=settings.object_type,  # type: ignore[arg-type]
        content_mode=settings.content_mode,  # type: ignore[arg-type]
        discoverable=settings.discoverable,
        indexable=settings.indexable,
        tag_url_template=settings.tag_url_template,
        language=settings.language or None,
        also_known_as=tuple(settings.also_known_as),
        attribution_domains=tuple(settings.attribution),
        quote_policy=settings.quote_policy,  # type: ignore[arg-type]
    )


def create_app(settings: Settings, role: Role = "all") -> web.Application:
    """Build the app. `role` decides whether HTTP routes, background jobs, or both are active."""
    from .web.middleware import error_middleware
    from .web.routes import setup_routes

    body_cap = max(settings.max_inbox_bytes, settings.max_article_bytes)
    app = web.Application(middlewares=[error_middleware], client_max_size=body_cap)
    keys, _ = ensure_keypair(settings.keys_path)
    token = settings.admin_token or ensure_admin_token(settings.keys_path)[0]
    for secret in (token, settings.spam_check_key, settings.webhook_secret):
        register_secret(secret)  # replaced by *** wherever a log line would carry it
    app[SETTINGS] = settings
    app[KEYS] = keys
    app[SITE] = make_site(settings, keys)
    app[ADMIN_TOKEN] = token
    app[ROLE] = role
    app[METRICS] = Metrics()
    app[WORKER_ID] = f"{socket.gethostname()}:{os.getpid()}:{id(app):x}"
    app[JOBS] = []
    app[BLOCK_CACHE] = {}
    app[HEALTH] = Health(grace=settings.health_grace_seconds)
    app.cleanup_ctx.append(_storage)
    app.cleanup_ctx.append(_http_client)
    app.cleanup_ctx.append(_services)
    app.cleanup_ctx.append(_identity_sync)
    if role in ("all", "web"):
        setup_routes(app)
    if role in ("all", "worker"):
        _register_jobs(app)
        app.cleanup_ctx.append(_background_jobs)
    return app


def _register_jobs(app: web.Application) -> None:
    """Each job module exposes `run(app)`; imported here so the web role loads none of them."""
    from . import delivery, feedsource, inbox_worker, retention

    for module in (delivery, inbox_worker, feedsource):
        app[JOBS].append((module.__name__.rsplit(".", 1)[1], module.run))

    async def prune(app: web.Application) -> None:
        await retention.run(app[STORE], app[SETTINGS].inbox_retention_days, app[WORKER_ID])

    app[JOBS].append(("retention", prune))


async def _storage(app: web.Application) -> AsyncIterator[None]:
    store = await Store.open(app[SETTINGS].database_url)
    app[STORE] = store
    yield
    await store.close()


async def _http_client(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    client = GuardedClient(
        user_agent=settings.agent,
        signer=Signer(app[KEYS].private_key, app[SITE].key_id, settings.signature_scheme),  # type: ignore[arg-type]
        allow_private=settings.allow_private_addresses,
        timeout=settings.fetch_timeout,
    )
    await client.start()
    app[CLIENT] = client
    app[RESOLVER] = Resolver(client)
    yield
    await client.close()


async def _services(app: web.Application) -> AsyncIterator[None]:
    app[SERVICES] = Services(
        settings=app[SETTINGS], keys=app[KEYS], site=app[SITE], admin_token=app[ADMIN_TOKEN],
        role=cast(Role, app[ROLE]),
        worker_id=app[WORKER_ID], metrics=app[METRICS], health=app[HEALTH], store=app[STORE],
        client=app[CLIENT], resolver=app[RESOLVER], block_cache=app[BLOCK_CACHE],
    )
    yield


async def _identity_sync(app: web.Application) -> AsyncIterator[None]:
    """Every role caches remote actors and keys: on PostgreSQL each process hears which ones to forget."""
    from .wakeup import listen_identity

    resolver = app[RESOLVER]
    task = asyncio.create_task(listen_identity(app, resolver.forget, resolver.forget_all), name="identity-listen")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _background_jobs(app: web.Application) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(_supervise(app, name, job), name=name) for name, job in app[JOBS]]
    yield
    pending = set(tasks)
    for _ in range(10):  # a job that swallowed one cancellation (a library bug) gets another
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=15)
        if not pending:
            return
        log.error("background jobs %s did not stop; cancelling again", [t.get_name() for t in pending])


async def _supervise(app: web.Application, name: str, job: JobFactory) -> None:
    """Restart a crashed job after a pause: one bug must not silently stop deliveries for good."""
    while True:
        try:
            await job(app)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("background job %s crashed; restarting in 5 s", name)
            app[HEALTH].failing(name, exc)
            await asyncio.sleep(5)
