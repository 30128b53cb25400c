"""Prometheus text-format counters, kept in memory per process (each process is scraped on its own)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection

OTHER = "other"
Series = tuple[str, list[tuple[dict[str, str], float]]]  # a family supplied at scrape time: (help, [(labels, value)])


def bounded(value: str, allowed: Collection[str]) -> str:
    """A label value from outside (e.g. an activity type) kept only if known, else "other".

    Every distinct label value is a series kept in memory forever: a sender inventing types must not grow it.
    """
    return value if value in allowed else OTHER


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    """Counters by name and labels; gauges are supplied at scrape time by the caller."""

    HELP = {
        "fedibridge_inbox_requests_total": "Inbox POSTs by outcome (accepted, rejected reason).",
        "fedibridge_deliveries_total": "Delivery attempts by outcome (delivered, retry, failed, gone).",
        "fedibridge_inbox_activities_total": "Stored inbox activities handled, by type and outcome.",
        "fedibridge_inbox_rate_limited_total": "Inbox POSTs refused 429 by the per-server or per-actor rate limit.",
    }

    # Series the README documents, exported at 0 before anything happened: an alert on an absent series
    # (`fedibridge_delivery_queue{state="pending"} > 100`) never fires, and `rate()` needs the 0 to start from.
    ALWAYS: dict[str, tuple[dict[str, str], ...]] = {
        "fedibridge_deliveries_total": tuple({"outcome": o} for o in ("delivered", "retry", "failed", "gone")),
        "fedibridge_inbox_requests_total": tuple({"outcome": o} for o in (
            "accepted", "duplicate", "malformed", "unauthorized", "blocked", "too_large", "unsupported_media_type")),
        "fedibridge_inbox_rate_limited_total": ({"scope": "host"}, {"scope": "actor"}),
        "fedibridge_delivery_queue": tuple({"state": s} for s in ("pending", "done", "failed")),
        "fedibridge_inbox_queue": ({},),
    }
    GAUGE_HELP = {
        "fedibridge_delivery_queue": "Delivery rows by state.",
        "fedibridge_inbox_queue": "Inbox activities waiting to be handled.",
    }

    def __init__(self) -> None:
        self._counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        series = self._counters[name]
        series[key] = series.get(key, 0) + amount

    def value(self, name: str, **labels: str) -> float:
        return self._counters.get(name, {}).get(tuple(sorted(labels.items())), 0)

    def render(self, gauges: dict[str, Series] | None = None, counters: dict[str, Series] | None = None) -> str:
        """Text exposition format 0.0.4; `gauges` and `counters` (counted elsewhere, e.g. by the runtime) map
        name → (help, [(labels, value)])."""
        lines: list[str] = []
        for name in sorted(set(self._counters) | set(self.HELP)):
            lines.append(f"# HELP {name} {self.HELP.get(name, name)}")
            lines.append(f"# TYPE {name} counter")
            for key, value in sorted(self._with_zeros(name, self._counters.get(name, {})).items()):
                lines.append(f"{name}{_labels(dict(key))} {value:g}")
        empty: list[tuple[dict[str, str], float]] = []
        given = {name: (help_text, empty) for name, help_text in self.GAUGE_HELP.items()} | (gauges or {})
        for kind, families in (("counter", counters or {}), ("gauge", given)):
            for name, (help_text, samples) in sorted(families.items()):
                lines.append(f"# HELP {name} {help_text}")
                lines.append(f"# TYPE {name} {kind}")
                series = self._with_zeros(name, {tuple(sorted(labels.items())): value for labels, value in samples})
                for key, value in sorted(series.items()):
                    lines.append(f"{name}{_labels(dict(key))} {value:g}")
        return "\n".join(lines) + "\n"

    def _with_zeros(self, name: str, series: dict[tuple[tuple[str, str], ...], float]
                    ) -> dict[tuple[tuple[str, str], ...], float]:
        """The observed samples plus a 0 for each documented label set not seen yet."""
        zeros = {tuple(sorted(labels.items())): 0.0 for labels in self.ALWAYS.get(name, ())}
        return zeros | series
