"""What waking the projector process costs the API process per commit: a byte written to a
non-blocking pipe (``projections/projector_process.py``) against the ``multiprocessing.Event``
it replaced.

    .venv/bin/python -m bench.nudge_cost [--calls 20000] [--out bench/results/nudge-cost.json]

A child process waits on each bell as the projector does (select on the pipe; wait on the
event), doing 0.5 ms of work after each wake-up. The parent rings ``--calls`` times, 0.2 ms
apart, and adds up its CPU time inside each call, less the same for a call that does nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import select
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.replay import RESULTS, git_info, machine_info

PAUSE_S = 0.0002


def _pipe_follower(door: Connection) -> None:
    fd = door.fileno()
    while True:
        if select.select([fd], [], [], 1.0)[0]:
            rung = os.read(fd, 4096)
            if not rung or b"s" in rung:
                return
            time.sleep(0.0005)


def _event_follower(nudge: Any, stop: Any) -> None:
    while not stop.is_set():
        if nudge.wait(1.0):
            nudge.clear()
            time.sleep(0.0005)


def _cpu_of(ring: Any, calls: int) -> float:
    """CPU seconds spent inside ``ring()`` over ``calls`` calls, 0.2 ms apart."""
    spent = 0.0
    for _ in range(calls):
        started = time.process_time()
        ring()
        spent += time.process_time() - started
        time.sleep(PAUSE_S)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--out", default=str(RESULTS / "nudge-cost.json"))
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    idle = _cpu_of(lambda: None, args.calls)

    door, bell_end = context.Pipe(duplex=False)  # as ProjectorProcess makes its bell
    child = context.Process(target=_pipe_follower, args=(door,), daemon=True)
    child.start()
    door.close()
    bell = bell_end.fileno()
    os.set_blocking(bell, False)
    lock = threading.Lock()

    def ring_pipe() -> None:
        with lock, contextlib.suppress(BlockingIOError):
            os.write(bell, b"n")

    pipe = _cpu_of(ring_pipe, args.calls)
    os.write(bell, b"s")
    child.join()
    bell_end.close()

    nudge, stop = context.Event(), context.Event()
    child = context.Process(target=_event_follower, args=(nudge, stop), daemon=True)
    child.start()
    event = _cpu_of(nudge.set, args.calls)
    stop.set()
    nudge.set()
    child.join()

    per_call = {"pipe_byte": (pipe - idle) / args.calls, "mp_event": (event - idle) / args.calls}
    for name, seconds in per_call.items():
        print(f"{name:<10} {seconds * 1e6:6.2f} us of the ringing process's CPU per call")
    document = {
        "command": "python -m bench.nudge_cost", "calls": args.calls,
        "machine": machine_info(), "git": git_info(),
        "cpu_us_per_call": {k: round(v * 1e6, 3) for k, v in per_call.items()},
    }  # fmt: skip
    Path(args.out).write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
