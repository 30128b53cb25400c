"""`/metrics` on a real bridge: every documented series is there from the first scrape, at 0 when idle."""

from __future__ import annotations

import re

from .conftest import Bridge, wait_for
from .remote import RemoteInstance

SAMPLE = re.compile(r'^([a-z_]+)(\{[a-z_]+="[^"]*"(?:,[a-z_]+="[^"]*")*\})? (-?[0-9.e+]+)$')


async def scrape(bridge: Bridge) -> dict[str, float]:
    """Samples by `name{labels}`; every non-comment line must be a valid text-format sample."""
    async with bridge.http.get(bridge.url + "/metrics", headers=bridge.admin) as resp:
        assert resp.status == 200
        text = await resp.text()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, f"not a Prometheus sample: {line!r}"
        samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return samples


async def test_documented_series_exported_at_zero(bridge: Bridge) -> None:
    """A fresh bridge: the README's alert series exist with value 0, not absent."""
    samples = await scrape(bridge)
    for series in ('fedibridge_delivery_queue{state="pending"}', 'fedibridge_delivery_queue{state="done"}',
                   'fedibridge_delivery_queue{state="failed"}', "fedibridge_inbox_queue",
                   'fedibridge_deliveries_total{outcome="delivered"}', 'fedibridge_deliveries_total{outcome="retry"}',
                   'fedibridge_deliveries_total{outcome="failed"}', 'fedibridge_deliveries_total{outcome="gone"}',
                   'fedibridge_inbox_requests_total{outcome="accepted"}',
                   'fedibridge_inbox_requests_total{outcome="unauthorized"}'):
        assert samples.get(series) == 0, series


async def test_zero_series_stay_beside_real_ones(bridge: Bridge) -> None:
    """After a Mastodon follow is accepted and its Accept delivered, pending is still exported, at 0."""
    async with RemoteInstance() as masto:
        alice = masto.add_actor("alice")
        status, _ = await masto.send(alice, bridge.actor + "/inbox", masto.follow(alice, bridge.actor))
        assert status == 202

        async def delivered() -> bool:
            return (await scrape(bridge)).get('fedibridge_delivery_queue{state="done"}') == 1

        await wait_for(delivered)
        samples = await scrape(bridge)
        assert samples['fedibridge_delivery_queue{state="pending"}'] == 0
        assert samples['fedibridge_delivery_queue{state="failed"}'] == 0
        assert samples['fedibridge_deliveries_total{outcome="delivered"}'] == 1
        assert samples['fedibridge_deliveries_total{outcome="retry"}'] == 0
        assert samples['fedibridge_inbox_requests_total{outcome="accepted"}'] == 1
