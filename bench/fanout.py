"""Fan-out benchmark: one article to N followers on H loopback "instances", against a baseline measured in the same run.

    python bench/fanout.py      # 10,000 followers on 1,000 hosts, SQLite, in-process worker
    python bench/fanout.py --database postgresql://postgres@127.0.0.1:5432/test
    python bench/fanout.py --workers 2 --database postgresql://postgres@127.0.0.1:5432/test   # 40,000 on 4,000

Each host is a distinct 127.0.x.y address served by this process; it verifies the bridge's signature
(fedibridge.signatures.verify_request) on every POST and counts valid Creates of the article. Followers on
one host share its shared inbox, so the bridge makes one POST per host.

Fan-out time: from POST /api/articles (the admin API, as a blog would publish) until every host has a
correctly signed Create. Baseline: the same number of RSA signatures (sign_request) and POSTs of the same
bytes to the same inboxes with a plain aiohttp ClientSession, with the same global concurrency limit and
no database. Target: fan-out ≤ 1.2 × baseline (issue 12; 1.5 before), peak RSS < 300 MB.

--workers N runs the delivery in `fedibridge serve --role worker` subprocesses (the web part stays in
this process) — first with 1 worker, then with N, on fresh databases — and prints the speed-up; with a
PostgreSQL --database it also runs 1 worker on SQLite for comparison. There the receiving hosts run in a
process of their own, as a bare asyncio HTTP/1.1 server that only records each POST; every signature is
checked after the clock stops. The in-process aiohttp receivers verifying inline took a third of a core
of the two this bench targets, so adding a worker mostly measured the receivers (1.3× instead of ~1.8×).
The speed-up is read on "sending time", first to last receipt: the fixed start (publish request, the web
side enqueueing the rows, the wake-up) is the same for 1 and N workers and is printed separately.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from multidict import CIMultiDict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fedibridge.app import SERVICES, create_app  # noqa: E402
from fedibridge.config import Settings, validate  # noqa: E402
from fedibridge.signatures import load_public_key, sign_request, verify_request  # noqa: E402
from fedibridge.store import Store, utcnow  # noqa: E402
from fedibridge.tables import followers  # noqa: E402

TOKEN = "bench-token"


def addresses(n: int) -> list[str]:
    """n distinct loopback addresses 127.0.x.y (x from 2, y 1..250): each one is a separate "host"."""
    return [f"127.0.{2 + i // 250}.{1 + i % 250}" for i in range(n)]


@dataclass
class Instances:
    """Many remote servers in one aiohttp app bound to many addresses; verifies and counts Creates."""

    hosts: list[str]
    port: int
    public_pem: str
    object_id: str = ""
    done: set[str] = field(default_factory=set)
    bad: int = 0
    first: float = 0.0
    last: float = 0.0
    complete: asyncio.Event = field(default_factory=asyncio.Event)
    sample_body: bytes = b""
    runner: web.AppRunner | None = None

    def expect(self, object_id: str) -> None:
        self.object_id, self.done, self.bad, self.first, self.last = object_id, set(), 0, 0.0, 0.0
        self.complete = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        result = verify_request("POST", request.path_qs, request.headers, body, load_public_key(self.public_pem),
                                utcnow(), authority=request.host)
        if not result.ok:
            self.bad += 1
            return web.Response(status=401, text=result.reason)
        doc = json.loads(body)
        obj = doc.get("object")
        if doc.get("type") == "Create" and isinstance(obj, dict) and obj.get("id") == self.object_id:
            now = time.perf_counter()
            self.first = self.first or now
            self.last = now
            self.sample_body = self.sample_body or body
            self.done.add(request.host)
            if len(self.done) == len(self.hosts):
                self.complete.set()
        return web.Response(status=202)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/inbox", self.handle)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        for ip in self.hosts:
            await web.TCPSite(self.runner, ip, self.port, backlog=1024).start()

    async def close(self) -> None:
        if self.runner:
            await self.runner.cleanup()


class _Inbox(asyncio.Protocol):
    """Bare HTTP/1.1 keep-alive server for one POST at a time per connection: records, answers 202."""

    def __init__(self, sink: Receivers) -> None:
        self.sink = sink
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            headers: CIMultiDict[str] = CIMultiDict()
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers.add(name.strip(), value.strip())
            length = int(headers.get("Content-Length", "0"))
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4:end + 4 + length])
            del self.buf[:end + 4 + length]
            self.sink.record(lines[0].split(" ")[1], headers, body)
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")


@dataclass
class Receivers:
    """The hosts, in a child process: records POSTs of the expected Create; verifies them all at the end."""

    hosts: list[str]
    port: int
    public_pem: str
    marker: bytes = b""
    seen: dict[str, tuple[str, CIMultiDict[str], bytes]] = field(default_factory=dict)
    first: float = 0.0
    last: float = 0.0
    complete: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, path: str, headers: CIMultiDict[str], body: bytes) -> None:
        if self.marker and self.marker in body:
            now = time.perf_counter()  # CLOCK_MONOTONIC: comparable with the parent's
            self.first = self.first or now
            self.last = now
            self.seen.setdefault(headers.get("Host", ""), (path, headers, body))
            if len(self.seen) == len(self.hosts):
                self.complete.set()

    def bad_signatures(self, object_id: str) -> int:
        key = load_public_key(self.public_pem)
        bad = 0
        for host, (path, headers, body) in self.seen.items():
            doc = json.loads(body)
            ok = verify_request("POST", path, headers, body, key, utcnow(), authority=host).ok
            bad += not (ok and doc.get("type") == "Create" and doc["object"]["id"] == object_id)
        return bad

    async def serve(self, conn: Connection) -> None:
        loop = asyncio.get_running_loop()
        servers = [await loop.create_server(lambda: _Inbox(self), ip, self.port, backlog=1024) for ip in self.hosts]
        commands: asyncio.Queue[Any] = asyncio.Queue()

        def pump() -> None:  # Connection.recv blocks: read the parent's commands in a thread
            while True:
                try:
                    msg = conn.recv()
                except EOFError:
                    msg = "stop"
                loop.call_soon_threadsafe(commands.put_nowait, msg)
                if msg == "stop":
                    return

        threading.Thread(target=pump, daemon=True).start()
        conn.send("ready")
        while (cmd := await commands.get()) != "stop":
            object_id = cmd
            self.marker, self.seen, self.first, self.last = json.dumps(object_id).encode(), {}, 0.0, 0.0
            self.complete = asyncio.Event()
            conn.send("expecting")
            await self.complete.wait()
            conn.send((self.first, self.last, self.bad_signatures(object_id)))
        for server in servers:
            server.close()


def _receivers_main(hosts: list[str], port: int, public_pem: str, conn: Connection) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    asyncio.run(Receivers(hosts, port, public_pem).serve(conn))


class ReceiverProcess:
    """Parent side of the receivers' process."""

    def __init__(self, hosts: list[str], port: int, public_pem: str) -> None:
        self.hosts, self.port = hosts, port
        self.conn, child = multiprocessing.get_context("spawn").Pipe()
        self.proc = multiprocessing.get_context("spawn").Process(
            target=_receivers_main, args=(hosts, port, public_pem, child), daemon=True)

    async def _recv(self, timeout: float) -> Any:
        if not await asyncio.to_thread(self.conn.poll, timeout):
            raise SystemExit(f"receivers did not answer within {timeout} s")
        return self.conn.recv()

    async def start(self) -> None:
        self.proc.start()
        await self._recv(60)

    async def expect(self, object_id: str) -> None:
        self.conn.send(object_id)
        await self._recv(10)

    async def result(self, timeout: float) -> tuple[float, float, int]:
        first, last, bad = await self._recv(timeout)
        return first, last, bad

    async def close(self) -> None:
        self.conn.send("stop")
        await asyncio.to_thread(self.proc.join, 10)


@dataclass
class Run:
    label: str
    total: float
    drain: float  # first delivery received → last
    bad: int


async def pg_database(admin_url: str) -> tuple[str, Any]:
    import asyncpg

    name = "fbbench_" + uuid.uuid4().hex[:10]
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()

    async def drop() -> None:
        c = await asyncpg.connect(admin_url)
        await c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await c.close()

    return admin_url.rpartition("/")[0] + "/" + name, drop


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def fan_out(args: argparse.Namespace, inst: Instances | ReceiverProcess, tmp: Path, database: str,
                  workers: int, label: str) -> Run:
    """Fresh database with the followers, a bridge (in-process, or web here + worker subprocesses), one publish."""
    drop = None
    if database.startswith("postgresql"):
        db_url, drop = await pg_database(database)
    else:
        db_url = f"sqlite:///{tmp}/{uuid.uuid4().hex[:8]}.db"
    port = free_port()
    keys = tmp / "keys"
    values: dict[str, Any] = dict(
        base_url=f"http://127.0.0.1:{port}", port=port, database_url=db_url, keys_dir=str(keys),
        admin_token=TOKEN, allow_private_addresses=True, log_level="warning",
        delivery_concurrency=args.concurrency)
    settings = validate(Settings(**values))
    app = create_app(settings, "all" if workers == 0 else "web")
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    store: Store = app[SERVICES].store
    per_host = args.followers // len(inst.hosts)
    rows = [{"actor_id": f"http://{ip}:{inst.port}/users/u{n}", "handle": f"@u{n}@{ip}",
             "inbox": f"http://{ip}:{inst.port}/users/u{n}/inbox", "shared_inbox": f"http://{ip}:{inst.port}/inbox",
             "since": utcnow()} for ip in inst.hosts for n in range(per_host)]
    async with store.begin() as conn:
        for i in range(0, len(rows), 2000):
            await conn.execute(followers.insert(), rows[i:i + 2000])
    procs: list[asyncio.subprocess.Process] = []
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FEDIBRIDGE_")},
           **{f"FEDIBRIDGE_{k.upper()}": str(v) for k, v in values.items()}}
    try:
        for _ in range(workers):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "fedibridge", "serve", "--role", "worker", env=env, cwd=tmp,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            procs.append(proc)
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 60)  # the banner: migrations done, worker running
            if b"fedibridge" not in line:
                raise SystemExit(f"worker did not start: {line!r}")
        slug = "bench-" + uuid.uuid4().hex[:6]
        if isinstance(inst, ReceiverProcess):
            await inst.expect(f"{settings.base}/articles/{slug}")
        else:
            inst.expect(f"{settings.base}/articles/{slug}")
        start = time.perf_counter()
        async with aiohttp.ClientSession() as http, http.post(
            f"{settings.base}/api/articles", headers={"Authorization": f"Bearer {TOKEN}"},
            json={"title": "Banc d'essai « fan-out » 🚀", "url": f"https://blog.example/{slug}", "slug": slug,
                  "content": "<p>Une publication, dix mille abonnés : déjà livrée ?</p>"}) as resp:
            if resp.status != 201:
                raise SystemExit(f"publish failed: {resp.status} {await resp.text()}")
        # What the publishing endpoint does after its commit (a no-op when it already did): wake the
        # in-process worker now instead of at its next 1 s poll. Worker subprocesses are woken by the
        # NOTIFY the enqueue sent (PostgreSQL), or find the rows at their next poll (SQLite).
        app[SERVICES].wake.delivery.set()
        if isinstance(inst, ReceiverProcess):
            first, last, bad = await inst.result(args.timeout)
            return Run(label, last - start, last - first, bad)
        await asyncio.wait_for(inst.complete.wait(), args.timeout)
        return Run(label, time.perf_counter() - start, inst.last - inst.first, inst.bad)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            await proc.wait()
        await runner.cleanup()
        if drop:
            await drop()


async def baseline(inst: Instances, key: rsa.RSAPrivateKey, key_id: str, concurrency: int) -> tuple[float, float]:
    """(pure signing time for len(hosts) signatures, sign+POST time with the same concurrency and no database)."""
    body = inst.sample_body
    urls = [f"http://{ip}:{inst.port}/inbox" for ip in inst.hosts]
    t = time.perf_counter()
    for url in urls:
        sign_request("POST", url, {"Content-Type": "application/activity+json"}, body, key, key_id, utcnow())
    signing = time.perf_counter() - t

    inst.expect(json.loads(body)["object"]["id"])
    limit = asyncio.Semaphore(concurrency)

    async def post(session: aiohttp.ClientSession, url: str) -> None:
        async with limit:
            headers = sign_request("POST", url, {"Content-Type": "application/activity+json"}, body, key, key_id,
                                   utcnow())
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                assert resp.status == 202, resp.status

    t = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session:
        await asyncio.gather(*(post(session, u) for u in urls))
    return signing, time.perf_counter() - t


def rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


async def main(args: argparse.Namespace) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = Path(tempfile.mkdtemp(prefix="fedibridge-bench-"))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp / "keys").mkdir()
    pem = tmp / "keys" / "private.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    pem.chmod(0o600)
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    print(f"{args.followers} followers on {args.hosts} hosts ({args.followers // args.hosts} per shared inbox), "
          f"delivery_concurrency={args.concurrency}, database={args.database.split('@')[-1]}")
    if args.workers:
        recv = ReceiverProcess(addresses(args.hosts), free_port(), public)
        await recv.start()
        try:
            await compare_workers(args, recv, tmp)
        finally:
            await recv.close()
        return
    inst = Instances(addresses(args.hosts), free_port(), public)
    await inst.start()
    try:
        run = await fan_out(args, inst, tmp, args.database, 0, "in-process worker")
        rss_after_fanout = rss_mb()
        key_id = "http://127.0.0.1:0/users/blog#main-key"
        signing, base = await baseline(inst, key, key_id, args.concurrency)
        print(f"fan-out through the bridge: {run.total:.2f} s (first→last delivery {run.drain:.2f} s), "
              f"bad signatures {run.bad}")
        print(f"baseline, sign + plain aiohttp POST, same concurrency, no DB: {base:.2f} s "
              f"(of which pure signing of {args.hosts} requests, sequential: {signing:.2f} s)")
        print(f"ratio: {run.total / base:.2f} (target ≤ 1.2, issue 12; ≤ 1.5 before)")
        print(f"peak RSS of this process (bridge + {args.hosts} test servers): {rss_after_fanout:.0f} MB "
              f"(target < 300 MB)")
    finally:
        await inst.close()


async def compare_workers(args: argparse.Namespace, recv: ReceiverProcess, tmp: Path) -> None:
    """1 worker, then N, on fresh databases; the best of --repeat runs each (a 2-core machine is noisy)."""
    plan = [(args.database, 1, "1 worker process"), (args.database, args.workers, f"{args.workers} worker processes")]
    if args.database.startswith("postgresql"):
        plan.append(("sqlite", 1, "1 worker process, SQLite"))
    runs: list[Run] = []
    for database, workers, label in plan:
        tries = [await fan_out(args, recv, tmp, database, workers, label) for _ in range(args.repeat)]
        runs.append(min(tries, key=lambda r: r.drain))
    print("sending time = first to last receipt; start = publish request until the first receipt")
    for r in runs:
        print(f"  {r.label:<28} sending {r.drain:5.2f} s ({args.hosts / r.drain:6.0f} POSTs/s), start "
              f"{r.total - r.drain:4.2f} s, total {r.total:5.2f} s, bad signatures {r.bad}")
    print(f"speed-up of {args.workers} workers over 1 on PostgreSQL: {runs[0].drain / runs[1].drain:.2f}× sending "
          f"time (target ≥ 1.6×), {runs[0].total / runs[1].total:.2f}× total")
    print(f"peak RSS: bench process {rss_mb():.0f} MB, largest child {rss_mb(resource.RUSAGE_CHILDREN):.0f} MB")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--followers", type=int, help="default 10 per host")
    p.add_argument("--hosts", type=int, help="default 1,000; 4,000 with --workers (fixed costs must not dominate)")
    p.add_argument("--database", default="sqlite", help="sqlite (a fresh file) or postgresql://… (fresh databases "
                                                        "are created in that server and dropped)")
    p.add_argument("--workers", type=int, default=0, help="compare N worker subprocesses with 1")
    p.add_argument("--concurrency", type=int, default=Settings.delivery_concurrency)
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--repeat", type=int, default=2, help="with --workers: runs per configuration, best kept")
    args = p.parse_args(argv)
    args.hosts = args.hosts or (4_000 if args.workers else 1_000)
    args.followers = args.followers or 10 * args.hosts
    return args


if __name__ == "__main__":
    asyncio.run(main(parse()))
