"""Prometheus text-format counters, kept in memory per process (each process is scraped on its own)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection

OTHER = "other"


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
    }

    def __init__(self) -> None:
        self._counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        series = self._counters[name]
        series[key] = series.get(key, 0) + amount

    def value(self, name: str, **labels: str) -> float:
        return self._counters.get(name, {}).get(tuple(sorted(labels.items())), 0)

    def render(self, gauges: dict[str, tuple[str, list[tuple[dict[str, str], float]]]] | None = None) -> str:
        """Text exposition format 0.0.4; `gauges` maps name → (help, [(labels, value)])."""
        lines: list[str] = []
        for name in sorted(set(self._counters) | set(self.HELP)):
            lines.append(f"# HELP {name} {self.HELP.get(name, name)}")
            lines.append(f"# TYPE {name} counter")
            for key, value in sorted(self._counters.get(name, {}).items()):
                lines.append(f"{name}{_labels(dict(key))} {value:g}")
        for name, (help_text, samples) in sorted((gauges or {}).items()):
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} gauge")
            for labels, value in samples:
                lines.append(f"{name}{_labels(labels)} {value:g}")
        return "\n".join(lines) + "\n"
