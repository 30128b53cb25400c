"""Shared fixtures: a real bridge on 127.0.0.1, real databases (SQLite file; PostgreSQL when
FEDIBRIDGE_TEST_DATABASE_URL is set), real RSA keys, and real loopback servers playing remote instances."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fedibridge.app import SERVICES, create_app
from fedibridge.config import Settings, validate
from fedibridge.services import Services
from fedibridge.store import Store

PG_ENV = "FEDIBRIDGE_TEST_DATABASE_URL"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    """One real RSA-2048 key for the whole run (generation is the slow part)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem_private(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def pem_public(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


async def _pg_create(admin_url: str) -> tuple[str, Callable[[], Awaitable[None]]]:
    """A fresh PostgreSQL database per test, dropped afterwards: tests never see each other's rows."""
    import asyncpg

    name = "fbtest_" + uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base, _, _ = admin_url.rpartition("/")

    async def drop() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    return f"{base}/{name}", drop


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Every storage-touching test runs on SQLite, and on PostgreSQL when FEDIBRIDGE_TEST_DATABASE_URL is set."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/fedibridge.db"
        return
    url, drop = await _pg_create(_pg_admin_url())
    yield url
    await drop()


def _pg_admin_url() -> str:
    """FEDIBRIDGE_TEST_DATABASE_URL; missing in CI is a failure, locally a skip with the reason."""
    admin = os.environ.get(PG_ENV)
    if not admin:
        if os.environ.get("CI"):
            pytest.fail(f"{PG_ENV} must be set in CI (the PostgreSQL half of the suite)")
        pytest.skip(f"PostgreSQL tests need {PG_ENV}=postgresql://…")
    return admin


@pytest.fixture
async def pg_database_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database only (tests that exist for PostgreSQL, like scale-out)."""
    url, drop = await _pg_create(_pg_admin_url())
    yield url
    await drop()


@dataclass
class Bridge:
    """A running fedibridge on 127.0.0.1 with an HTTP client pointed at it."""

    url: str
    settings: Settings
    app: web.Application
    http: aiohttp.ClientSession
    runner: web.AppRunner
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def token(self) -> str:
        return self.app[SERVICES].admin_token

    @property
    def services(self) -> Services:
        return self.app[SERVICES]

    @property
    def store(self) -> Store:
        return self.services.store

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def actor(self) -> str:
        return f"{self.settings.base}/users/{self.settings.username}"


BridgeFactory = Callable[..., Awaitable[Bridge]]


@pytest.fixture
async def make_bridge(tmp_path: Path, database_url: str, rsa_key: rsa.RSAPrivateKey) -> AsyncIterator[BridgeFactory]:
    """Start real bridges (role "all" by default); settings overrides as keyword arguments."""
    started: list[Bridge] = []

    async def start(role: str = "all", **overrides: Any) -> Bridge:
        port = free_port()
        keys = tmp_path / f"keys-{len(started)}"
        if not keys.exists():
            keys.mkdir()
            private = keys / "private.pem"
            private.write_bytes(pem_private(rsa_key))
            private.chmod(0o600)
        values: dict[str, Any] = dict(
            base_url=f"http://127.0.0.1:{port}", port=port, database_url=database_url, keys_dir=str(keys),
            admin_token="test-admin-token", allow_private_addresses=True, blog_url="http://blog.test",
            name="Carnet de Léa", summary="Le blog de Léa « en direct » 🌍", language="fr",
            feed_poll_interval=3600,
        )
        values.update(overrides)
        settings = validate(Settings(**values))
        app = create_app(settings, role)  # type: ignore[arg-type]
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        http = aiohttp.ClientSession()
        bridge = Bridge(settings.base, settings, app, http, runner)
        started.append(bridge)
        return bridge

    yield start
    for bridge in reversed(started):
        await bridge.http.close()
        await bridge.runner.cleanup()


@pytest.fixture
async def bridge(make_bridge: BridgeFactory) -> Bridge:
    return await make_bridge()


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0, interval: float = 0.05) -> None:
    """Poll until a condition holds; fails the test with a clear message otherwise."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if await predicate():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)
