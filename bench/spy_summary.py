"""Where a running bridge's time goes, from a py-spy sampling profile (all threads, native waits included).

cProfile (`--serve-profile`) sees only the main thread and bills nothing to SQLite's threads; py-spy samples
every thread of the live process from outside, so it also shows what aiosqlite's and the inbox writer's
threads do. Record while a benchmark runs, then summarise:

    pip install py-spy
    py-spy record --pid "$(pgrep -n -f 'm fedibridge serve')" --threads --idle --format raw --rate 100 \\
        --duration 20 -o /tmp/spy.txt
    python bench/spy_summary.py /tmp/spy.txt [--rows 20000]

Printed: samples per thread; the main thread's samples by the innermost fedibridge function (idle = waiting
in epoll) and by the package of the innermost frame; the busiest non-idle frames of the other threads.
With --rows, the main thread's busy time per row (for the sampled window only).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

IDLE = "EpollSelector.select"
_THREAD = re.compile(r"thread \(\d+\): ")
_FILE = re.compile(r"\(([^:)]*)")


def read(path: Path) -> list[tuple[str, list[str], int]]:
    """(thread name, frames outermost first, samples) per distinct stack of py-spy's raw output."""
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        stacks.append((_THREAD.sub("", frames[0]), frames[1:] or ["<no frame>"], int(count)))
    return stacks


def package(frame: str) -> str:
    m = _FILE.search(frame)
    return m.group(1).split("/")[0] if m else frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path)
    parser.add_argument("--rows", type=int, help="rows handled in the window: print busy time per row")
    parser.add_argument("--rate", type=float, default=100.0, help="py-spy's --rate (samples per second)")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    stacks = read(args.path)
    threads: Counter[str] = Counter()
    own: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    others: Counter[str] = Counter()
    for thread, frames, n in stacks:
        threads[thread] += n
        idle = frames[-1].startswith(IDLE)
        if thread != "MainThread":
            if not idle and "core.py:59" not in frames[-1] and "thread.py:81" not in frames[-1]:
                others[f"{thread[:28]}: {frames[-1][:90]}"] += n
            continue
        if idle:
            own["<idle: waiting in epoll>"] += n
            continue
        mine = [f for f in frames if "fedibridge/" in f]
        own[(mine[-1] if mine else f"<outside fedibridge> {frames[-1]}")[:110]] += n
        packages[package(frames[-1])] += n
    main_total = threads["MainThread"] or 1
    print("samples per thread:", ", ".join(f"{t} {n}" for t, n in threads.most_common(8)))
    print(f"\nmain thread ({main_total} samples), innermost fedibridge function:")
    for name, n in own.most_common(args.top):
        print(f"  {100 * n / main_total:5.1f} %  {name}")
    print("\nmain thread, busy samples by the innermost frame's package:")
    for name, n in packages.most_common(12):
        print(f"  {100 * n / main_total:5.1f} %  {name}")
    print("\nother threads, busiest frames (not counting their idle waits):")
    for name, n in others.most_common(10):
        print(f"  {n:6d}  {name}")
    if args.rows:
        busy = (main_total - own["<idle: waiting in epoll>"]) / args.rate
        print(f"\nmain thread busy {busy:.1f} s for {args.rows} rows: {1e6 * busy / args.rows:.0f} µs per row")


if __name__ == "__main__":
    main()
