"""Log every garbage-collector pass longer than 2 ms, in every Python process started with it.

    PYTHONPATH=bench/gc_probe .venv/bin/python bench/realtime.py --quick --stores postgres --no-noop

Python imports ``sitecustomize`` at start-up, so the server, its committer and projector
children (spawned: fresh interpreters) all install the callback. Each process appends
``<time> gen<N> <ms>ms collected=<n> comm=<process name>`` to ``/tmp/gc-probe/gc-<pid>.log``
(``GC_PROBE_DIR`` to change it). Session 9's figures (docs/performance.md) came from it.
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path
from typing import Any

_DIR = Path(os.environ.get("GC_PROBE_DIR", "/tmp/gc-probe"))
_LOG = _DIR / f"gc-{os.getpid()}.log"
_started = [0.0]


def _process_name() -> str:
    try:
        return Path("/proc/self/comm").read_text().strip()  # pl-committer, pl-projector, ...
    except OSError:
        return "?"


def _timed(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    took = time.perf_counter() - _started[0]
    if took > 0.002:
        _DIR.mkdir(parents=True, exist_ok=True)
        with _LOG.open("a") as f:
            f.write(
                f"{time.time():.3f} gen{info['generation']} {took * 1000:.1f}ms "
                f"collected={info['collected']} comm={_process_name()}\n"
            )


gc.callbacks.append(_timed)
