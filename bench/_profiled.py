"""Run `fedibridge <args>` under cProfile and write the stats to argv[1] when it exits (SIGTERM included).

    python bench/_profiled.py PATH serve --role all

Used by bench/_bridge.py: the benchmark's own process is never profiled, only the bridge's. Read with
`python -m pstats PATH` (sort tottime) or see bench/profile_summary.py.
"""

from __future__ import annotations

import cProfile
import sys

from fedibridge.cli import main

if __name__ == "__main__":
    path, args = sys.argv[1], sys.argv[2:]
    profiler = cProfile.Profile()
    try:
        code = profiler.runcall(main, args)
    finally:
        profiler.dump_stats(path)
    sys.exit(code)
