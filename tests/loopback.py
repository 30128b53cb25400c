"""One base for the small real aiohttp servers the tests run on 127.0.0.1 (webhook sinks, fake Akismet,
remote inboxes, a second-origin blog), so each test double only says which routes it answers."""

from __future__ import annotations

from typing import Self

from aiohttp import web

from .conftest import free_port


class LoopbackServer:
    """A real aiohttp server on a free loopback port; subclasses add their routes in `routes`.

    Use it as `async with Server() as s:` or call `start()` / `close()` when the port must be known first.
    """

    path = ""  # the one endpoint the code under test is pointed at, if the double has one

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = free_port(host) if port is None else port
        self.runner: web.AppRunner | None = None

    @property
    def base(self) -> str:
        """The server's origin, e.g. `http://127.0.0.1:54321`."""
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The address the code under test is pointed at: the origin plus `path`."""
        return f"{self.base}{self.path}"

    def routes(self, app: web.Application) -> None:
        """Register the handlers this test double answers."""
        raise NotImplementedError

    async def start(self) -> Self:
        app = web.Application()
        self.routes(app)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.host, self.port).start()
        return self

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
