"""Summarise a py-spy ``--format raw`` profile: per thread, top self, top inclusive frames.

    py-spy record -p PID --threads --nonblocking -r 100 -d 15 -f raw -o prof.txt
    .venv/bin/python bench/profile_summary.py prof.txt [--top 25] [--match application/]

Each line of the file is ``frame;frame;...;frame COUNT`` with frames ``function (file:line)``;
with ``--threads`` the first frame names the thread. Inclusive counts each function once per
sample, however deep the recursion.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

LINE = re.compile(r"^(.*) (\d+)$")
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::(?P<line>\d+))?\)$")


def short(frame: str) -> str:
    """``func (path/to/site-packages/pkg/mod.py:12)`` -> ``func (pkg/mod.py)``."""
    m = FRAME.match(frame)
    if not m:
        return frame
    path = m.group("file")
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m.group('func')} ({path})"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("file")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--match", default=None, help="also list inclusive frames whose path has this")
    p.add_argument("--thread", default=None, help="only samples of threads whose name has this")
    args = p.parse_args(argv)

    threads: Counter[str] = Counter()
    self_: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for raw in Path(args.file).read_text().splitlines():
        m = LINE.match(raw.strip())
        if not m:
            continue
        stack, n = m.group(1).split(";"), int(m.group(2))
        thread = stack[0] if stack[0].startswith(("thread", "process")) else "?"
        # py-spy --subprocesses --threads: "process 123:...;thread (0x..)" or "thread (0x..)"
        frames = [f for f in stack if not f.startswith(("thread", "process"))]
        name = next((f for f in stack if f.startswith("thread")), thread)
        if args.thread and args.thread not in name:
            continue
        threads[name] += n
        total += n
        if frames:
            self_[short(frames[-1])] += n
        for f in {short(f) for f in frames}:
            incl[f] += n
    if not total:
        print("no samples")
        return
    print(f"{total} samples")
    print("\nper thread:")
    for name, n in threads.most_common(10):
        print(f"  {100 * n / total:5.1f}%  {name}")
    print(f"\ntop {args.top} self:")
    for f, n in self_.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {f}")
    print(f"\ntop {args.top} inclusive:")
    for f, n in incl.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {f}")
    if args.match:
        print(f"\ninclusive, frames in {args.match!r}:")
        shown = 0
        for f, n in incl.most_common():
            if args.match in f and shown < args.top:
                print(f"  {100 * n / total:5.1f}%  {f}")
                shown += 1


if __name__ == "__main__":
    main()
