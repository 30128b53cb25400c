"""Shared by the end-to-end benchmarks: the bridge as a real `fedibridge serve` subprocess, and loopback hosts.

`Bridge` starts `python -m fedibridge serve` in a temporary directory configured by FEDIBRIDGE_* variables
(SQLite by default, allow_private_addresses so loopback "instances" can be fetched), waits until it
answers, reads its peak RSS (VmHWM) from /proc, and stops it with SIGTERM. With `profile=PATH` the process
runs under cProfile (bench/_profiled.py) and writes its stats to PATH when it stops.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def serve(app: web.Application, port: int, host: str = "127.0.0.1") -> web.AppRunner:
    """Run `app` on host:port in this process (a baseline handler or a played remote server)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def loopback_hosts(n: int, second: int = 2) -> list[str]:
    """n distinct loopback addresses 127.<second>.x.y: each one a separate "instance" (Linux answers all of
    127.0.0.0/8 without configuration)."""
    return [f"127.{second}.{i // 250}.{1 + i % 250}" for i in range(n)]


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size of a running process (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Bridge:
    """One `fedibridge serve --role ROLE` subprocess on 127.0.0.1 with its own temporary database and keys."""

    def __init__(self, role: str = "all", database_url: str | None = None, profile: str | None = None,
                 extra_env: dict[str, str] | None = None) -> None:
        self.role = role
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._tmp = tempfile.TemporaryDirectory(prefix="fedibridge-bench-")
        self.dir = Path(self._tmp.name)
        self.database_url = database_url or f"sqlite:///{self.dir}/bridge.db"
        self.profile = profile
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.peak_rss = 0.0

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FEDIBRIDGE_")}
        env.update({
            "FEDIBRIDGE_BASE_URL": self.base, "FEDIBRIDGE_HOST": "127.0.0.1", "FEDIBRIDGE_PORT": str(self.port),
            "FEDIBRIDGE_DATABASE_URL": self.database_url, "FEDIBRIDGE_KEYS_DIR": str(self.dir / "keys"),
            "FEDIBRIDGE_ADMIN_TOKEN": TOKEN, "FEDIBRIDGE_ALLOW_PRIVATE_ADDRESSES": "true",
            "FEDIBRIDGE_BLOG_URL": "http://blog.test/", "FEDIBRIDGE_MODERATION": "open",
            "FEDIBRIDGE_LOG_LEVEL": "warning", "PYTHONPATH": str(ROOT),
            # A throughput burst (400 replies per actor) is what the inbox rate limits exist to refuse: off.
            "FEDIBRIDGE_INBOX_HOST_BURST": "0", "FEDIBRIDGE_INBOX_ACTOR_BURST": "0",
        })
        env.update(self.extra_env)
        return env

    def _spawn(self) -> subprocess.Popen[bytes]:
        cmd = [sys.executable]
        if self.profile:
            cmd += [str(ROOT / "bench" / "_profiled.py"), self.profile]
        else:
            cmd += ["-m", "fedibridge"]
        cmd += ["serve", "--role", self.role]
        with open(self.dir / "stderr.log", "wb") as err:
            return subprocess.Popen(cmd, cwd=self.dir, env=self.env(), stdout=subprocess.DEVNULL, stderr=err)

    async def start(self) -> Bridge:
        self.proc = self._spawn()
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as session:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"bridge exited: {(self.dir / 'stderr.log').read_text()[-2000:]}")
                try:
                    async with session.get(f"{self.base}/healthz") as resp:
                        if resp.status < 500:
                            return self
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("bridge did not start within 60 s")
                await asyncio.sleep(0.1)

    def sample_rss(self) -> float:
        if self.proc is not None and self.proc.poll() is None:
            self.peak_rss = max(self.peak_rss, peak_rss_mb(self.proc.pid))
        return self.peak_rss

    async def stop(self) -> None:
        if self.proc is None:
            return
        self.sample_rss()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            for _ in range(300):
                if self.proc.poll() is not None:
                    break
                await asyncio.sleep(0.1)
            else:
                self.proc.kill()
        self.proc.wait()
        self.proc = None

    def stderr(self) -> str:
        return (self.dir / "stderr.log").read_text(errors="replace")

    async def __aenter__(self) -> Bridge:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            await self.stop()
        finally:
            self._tmp.cleanup()


class Bare:
    """A baseline server (bench/_bare.py MODE) in its own process, like the bridge."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.peak_rss = 0.0

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        return subprocess.Popen([sys.executable, str(ROOT / "bench" / "_bare.py"), self.mode, str(self.port)],
                                env=env, stdout=subprocess.PIPE)

    async def __aenter__(self) -> Bare:
        self.proc = self._spawn()
        assert self.proc.stdout is not None
        line = await asyncio.get_running_loop().run_in_executor(None, self.proc.stdout.readline)
        if line.strip() != b"ready":
            raise RuntimeError(f"baseline server did not start: {line!r}")
        return self

    def sample_rss(self) -> float:
        if self.proc is not None and self.proc.poll() is None:
            self.peak_rss = max(self.peak_rss, peak_rss_mb(self.proc.pid))
        return self.peak_rss

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self.proc is not None:
            self.sample_rss()
            self.proc.send_signal(signal.SIGINT)
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.proc.wait, 10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def cpu_seconds(pids: list[int], postgres_db: str | None = None) -> dict[str, float]:
    """CPU seconds (user + system) used so far by `pids`, and by the PostgreSQL backends of `postgres_db`
    (processes titled `postgres: … <db> …`). Two samples' difference is what a phase cost: how a run uses
    the machine's cores, e.g. whether two workers and PostgreSQL saturate them."""
    tick = os.sysconf("SC_CLK_TCK")

    def used(pid: str) -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    out = {"workers": 0.0}  # and one "postgres:<pid>" entry per backend
    for pid in pids:
        try:
            out["workers"] += used(str(pid))
        except OSError:
            pass
    if postgres_db:
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                title = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if title.startswith("postgres: ") and f" {postgres_db} " in title:
                    out[f"postgres:{entry}"] = used(entry)
            except OSError:
                pass
    return out


def cpu_split(before: dict[str, float], after: dict[str, float], seconds: float) -> str:
    """'workers 111 %, PostgreSQL 50 % of 200 %' between two cpu_seconds() samples."""
    pg = sum(v - before.get(k, 0.0) for k, v in after.items() if k.startswith("postgres:"))
    workers = after["workers"] - before["workers"]
    return (f"workers {100 * workers / seconds:.0f} %, PostgreSQL {100 * pg / seconds:.0f} % "
            f"of {100 * (os.cpu_count() or 1)} %")


async def publish(session: aiohttp.ClientSession, bridge: Bridge, slug: str = "bench") -> str:
    """Publish an article through the admin API (as a blog would); its ActivityPub id."""
    doc = {"title": "Bench", "url": f"http://blog.test/{slug}/", "content": "<p>x</p>", "slug": slug}
    async with session.post(f"{bridge.base}/api/articles", json=doc, headers=bridge.admin) as resp:
        if resp.status >= 300:
            raise RuntimeError(f"publish failed: {resp.status} {await resp.text()}")
    return f"{bridge.base}/articles/{slug}"


async def total(session: aiohttp.ClientSession, bridge: Bridge, path: str) -> int:
    """`total` of an admin listing (GET /api/comments?status=all, GET /api/followers)."""
    sep = "&" if "?" in path else "?"
    async with session.get(f"{bridge.base}{path}{sep}limit=1", headers=bridge.admin) as resp:
        if resp.status != 200:
            raise RuntimeError(f"GET {path}: {resp.status} {await resp.text()}")
        return int((await resp.json())["total"])
