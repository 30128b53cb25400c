"""Test doubles for an operator's bad day: a TCP proxy in front of PostgreSQL that can be cut and restored,
and a steady stream of signed replies that records what every request was answered."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from .conftest import free_port, wait_for
from .remote import RemoteAccount, RemoteInstance


class TcpProxy:
    """Forwards 127.0.0.1:port to a target; `stop()` closes the listener and aborts every connection (what
    a stopped PostgreSQL or a cut network looks like to its clients), `start()` listens on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port, reuse_address=True)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()


@dataclass
class Answer:
    status: int  # 0: no HTTP answer (connection refused or reset, client timeout)
    elapsed: float
    retry_after: str | None
    note_id: str
    at: float  # monotonic time the request started


@dataclass
class ReplyStream:
    """Signed Mastodon-shaped replies to one article, about `rate` a second, each request on its own."""

    remote: RemoteInstance
    account: RemoteAccount
    inbox: str
    article_id: str
    rate: float = 30.0
    timeout: float = 20.0
    answers: list[Answer] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _http: aiohttp.ClientSession | None = None
    _inflight: set[asyncio.Task[None]] = field(default_factory=set)

    def start(self) -> None:
        # No connection limit: a request's time is the server's, not a wait for a free client connection.
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout),
                                           connector=aiohttp.TCPConnector(limit=0))
        self._task = asyncio.create_task(self._run(self._http))

    async def stop(self) -> None:
        """Stop sending; requests already sent still get their answer (or their timeout)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.gather(*self._inflight, return_exceptions=True)
        if self._http is not None:
            await self._http.close()

    def accepted(self) -> list[Answer]:
        return [a for a in self.answers if a.status == 202]

    def since(self, t: float) -> list[Answer]:
        return [a for a in self.answers if a.at >= t]

    async def _run(self, http: aiohttp.ClientSession) -> None:
        n = 0
        while True:
            n += 1
            task = asyncio.create_task(self.send_one(http, n))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
            await asyncio.sleep(1 / self.rate)

    async def send_one(self, http: aiohttp.ClientSession, n: int) -> Answer:
        note = self.remote.note(self.account, f"<p>Réponse nº {n} « pendant la panne » ⚡</p>",
                                in_reply_to=self.article_id)
        body = json.dumps(self.remote.create(self.account, note), ensure_ascii=False).encode()
        headers = self.remote.sign_cavage(self.account, self.inbox, body, datetime.now(UTC))
        headers.pop("Host", None)
        started = time.monotonic()
        try:
            async with http.post(self.inbox, data=body, headers=headers) as resp:
                await resp.read()
                answer = Answer(resp.status, time.monotonic() - started, resp.headers.get("Retry-After"),
                                note["id"], started)
        except (aiohttp.ClientError, TimeoutError):
            answer = Answer(0, time.monotonic() - started, None, note["id"], started)
        self.answers.append(answer)
        return answer


def serve_env(tmp_path: Path, key_pem: bytes, database_url: str, port: int, token: str) -> dict[str, str]:
    """The environment of a real `fedibridge serve` on 127.0.0.1:port (this run's settings only)."""
    keys = tmp_path / "keys"
    keys.mkdir(exist_ok=True)
    (keys / "private.pem").write_bytes(key_pem)
    (keys / "private.pem").chmod(0o600)
    return {**{k: v for k, v in os.environ.items() if not k.startswith("FEDIBRIDGE_")},
            "FEDIBRIDGE_BASE_URL": f"http://127.0.0.1:{port}", "FEDIBRIDGE_PORT": str(port),
            "FEDIBRIDGE_DATABASE_URL": database_url, "FEDIBRIDGE_KEYS_DIR": str(keys),
            "FEDIBRIDGE_ADMIN_TOKEN": token, "FEDIBRIDGE_ALLOW_PRIVATE_ADDRESSES": "true",
            "FEDIBRIDGE_MODERATION": "open", "FEDIBRIDGE_LOG_LEVEL": "warning"}


async def stop_serve(proc: asyncio.subprocess.Process | None, timeout: float = 20) -> None:
    """Stop a test's server if it still runs: SIGTERM, then SIGKILL if it has not exited within `timeout`."""
    if proc is None or proc.returncode is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def serve(tmp_path: Path, env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    """Start `python -m fedibridge serve` and wait until /healthz answers 200."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fedibridge", "serve", cwd=tmp_path, env=env,
        stdout=log.open("ab"), stderr=asyncio.subprocess.STDOUT)
    url = f"http://127.0.0.1:{env['FEDIBRIDGE_PORT']}/healthz"

    async def up() -> bool:
        if proc.returncode is not None:
            raise AssertionError(f"server exited with {proc.returncode}; see {log}")
        try:
            async with aiohttp.ClientSession() as s, s.get(url) as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    await wait_for(up, 30, 0.1)
    return proc
