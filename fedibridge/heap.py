"""How the bridge's process uses Python's cyclic garbage collector: what start-up built is frozen, and young
objects are collected in larger steps.

Why: a burst allocates many short-lived containers (each activity's parsed JSON, rows, SQLAlchemy's parameter
lists), so the collector ran ~1,700 times during a 10,000-follow burst, and each of its ~14 full collections
walked every object start-up had built (the modules of aiohttp, SQLAlchemy, cryptography…) and every cached
document: ~100 ms each, with the event loop stopped. Timed with `gc.callbacks` (2026-12-04): 1.8-2.1 s of the
bridge's 15-18 s of CPU in that burst, 0.6-0.8 s of 8-10 s in a 20,000-reply burst, 0.75-1.0 s of a
`--role worker`'s 5-6 s handling 40,000 replies; 0.2-0.4 s in each with this module.

Frozen objects are never collected: only what exists once the process has started (modules, the app, the
routes, the engine) is frozen, which lives as long as the process anyway. A larger first-generation threshold
trades a little memory (garbage cycles live a few thousand allocations longer) for far fewer passes.
"""

from __future__ import annotations

import gc

from .metrics import Series

YOUNG_THRESHOLD = 10_000  # allocations between first-generation passes (CPython's default: 700)


def settle() -> None:
    """Call once start-up is done: collect its garbage, freeze what is left, and widen the young generation."""
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(YOUNG_THRESHOLD, young), middle, old)


def gauges() -> dict[str, Series]:
    """For /metrics: how many objects start-up froze (0: `settle` has not run in this process)."""
    return {"fedibridge_gc_frozen_objects": ("Objects frozen once start-up was done (never collected).",
                                             [({}, float(gc.get_freeze_count()))])}


def counters() -> dict[str, Series]:
    """For /metrics: the collector's passes and what they freed, per generation, since the process started."""
    stats = gc.get_stats()
    return {
        "fedibridge_gc_collections_total": ("Garbage-collector passes by generation.",
                                            [({"generation": str(g)}, float(s["collections"]))
                                             for g, s in enumerate(stats)]),
        "fedibridge_gc_collected_objects_total": ("Objects the garbage collector freed, by generation.",
                                                  [({"generation": str(g)}, float(s["collected"]))
                                                   for g, s in enumerate(stats)]),
    }
