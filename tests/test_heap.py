"""The garbage-collector policy (fedibridge/heap.py): start-up frozen, young generation widened, both visible on
/metrics of a real `fedibridge serve`."""

from __future__ import annotations

import gc
import re
import weakref
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from fedibridge import heap
from fedibridge.metrics import Metrics
from tests.conftest import free_port, pem_private, wait_for
from tests.faults import serve, serve_env, stop_serve

TOKEN = "heap-test-token"


class _Node:
    other: _Node | None = None


@pytest.fixture
def restored_gc() -> Iterator[None]:
    """settle() changes this test process's collector: put it back afterwards."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_settle_freezes_what_exists_and_widens_the_young_generation(restored_gc: None) -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    garbage = _Node()
    garbage.other = _Node()
    garbage.other.other = garbage  # a cycle start-up left behind: collected, not frozen for ever
    dead = weakref.ref(garbage)
    del garbage
    heap.settle()
    assert dead() is None
    assert gc.get_freeze_count() > 10_000  # this process's modules and the test's own objects
    assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, 10, 10)
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1  # what is made after start-up is still collected


def test_settle_keeps_a_larger_threshold_already_set(restored_gc: None) -> None:
    gc.set_threshold(50_000, 10, 10)
    heap.settle()
    assert gc.get_threshold()[0] == 50_000


def test_metrics_render_gc_series() -> None:
    body = Metrics().render(heap.gauges(), heap.counters())
    assert "# TYPE fedibridge_gc_collections_total counter" in body
    for generation in "012":
        assert re.search(rf'^fedibridge_gc_collections_total{{generation="{generation}"}} \d+$', body, re.M)
        assert re.search(rf'^fedibridge_gc_collected_objects_total{{generation="{generation}"}} \d+$', body, re.M)
    assert "# TYPE fedibridge_gc_frozen_objects gauge" in body


async def test_serve_freezes_its_start_up(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    """A real `fedibridge serve` froze what start-up built: /metrics says so (0 if settle() were not called)."""
    port = free_port()
    env = serve_env(tmp_path, pem_private(rsa_key), f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}", port, TOKEN)
    proc = await serve(tmp_path, env, tmp_path / "serve.log")
    frozen = [0.0]
    try:
        async with aiohttp.ClientSession() as http:
            async def settled() -> bool:
                async with http.get(f"http://127.0.0.1:{port}/metrics",
                                    headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                    assert resp.status == 200
                    found = re.search(r"^fedibridge_gc_frozen_objects (\d+)$", await resp.text(), re.M)
                assert found, "no fedibridge_gc_frozen_objects on /metrics"
                frozen[0] = float(found.group(1))
                return frozen[0] > 0

            await wait_for(settled, 10, 0.1)
    finally:
        await stop_serve(proc)
    assert frozen[0] > 50_000  # aiohttp, SQLAlchemy, cryptography and the app: far more than a few objects
    assert proc.returncode == 0
