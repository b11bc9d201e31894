"""Experiment server: the real application with knobs and counters, for finding where time goes.

NOT used for the figures in docs/performance.md (those come from ``payledger serve``). It serves
``interfaces.http.app:create_app()`` in one uvicorn process like ``payledger serve`` does, and adds:

* ``GET /__bench/stats``: the committer's counters, group sizes, time spent deciding and saving;
  ``POST /__bench/reset`` zeroes them;
* ``--switch-interval S``: ``sys.setswitchinterval`` (the GIL hand-over interval, 5 ms by
  default: the committer thread and the event loop share one GIL);
* ``--no-access-log``, ``--sqlite-synchronous normal`` and similar knobs to try a change before
  proposing it.

    PAYLEDGER_DATABASE_URL=sqlite:////tmp/x.sqlite3 \\
      .venv/bin/python bench/serve_instrumented.py --port 8100 --no-access-log
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import Counter
from typing import Any


def instrument() -> dict[str, Any]:
    from application import committer as committer_mod

    stats: dict[str, Any] = {
        "groups": 0, "commands": 0, "sizes": Counter(), "decide_s": 0.0, "save_s": 0.0,
        "save_calls": 0, "group_wall_s": 0.0,
    }  # fmt: skip
    lock = threading.Lock()
    cls = committer_mod.Committer
    orig_try, orig_save = cls._try_group, cls._save

    def _try_group(self: Any, group: list[Any], *, optimistic: bool) -> bool:
        t0 = time.perf_counter()
        ok = orig_try(self, group, optimistic=optimistic)
        with lock:
            stats["groups"] += 1
            stats["commands"] += len(group)
            stats["sizes"][len(group)] += 1
            stats["group_wall_s"] += time.perf_counter() - t0
        return ok

    def _save(self: Any, uow: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return orig_save(self, uow)
        finally:
            with lock:
                stats["save_s"] += time.perf_counter() - t0
                stats["save_calls"] += 1

    cls._try_group = _try_group  # type: ignore[method-assign]
    cls._save = _save  # type: ignore[method-assign]
    return stats


def sqlite_multirow_insert() -> None:
    """Prototype: one multi-row ``INSERT ... RETURNING rowid`` per save instead of one
    ``execute`` per event (each execute releases and re-takes the GIL)."""
    from eventsourcing.sqlite import SQLiteApplicationRecorder

    def _insert_events(self: Any, c: Any, stored_events: Any, **_: Any) -> list[int]:
        ids: list[int] = []
        for i in range(0, len(stored_events), 4000):
            chunk = stored_events[i : i + 4000]
            params: list[Any] = []
            for s in chunk:
                oid = s.originator_id
                params += (oid.hex if hasattr(oid, "hex") else oid, s.originator_version,
                           s.topic, s.state)  # fmt: skip
            c.execute(
                f"INSERT INTO {self.events_table_name} VALUES "
                + ",".join(["(?,?,?,?)"] * len(chunk))
                + " RETURNING rowid",
                params,
            )
            ids += sorted(r[0] for r in c.fetchall())
        return ids

    SQLiteApplicationRecorder._insert_events = _insert_events  # type: ignore[method-assign]


def fast_collect_events() -> None:
    """Prototype: skip the runtime-checkable Protocol ``isinstance`` checks (slow: typing's
    ``_get_protocol_attrs`` on every call) for ordinary aggregates."""
    from eventsourcing.application import ProcessingEvent
    from eventsourcing.domain import BaseAggregate

    orig = ProcessingEvent.collect_events

    def collect_events(self: Any, *objs: Any, **kwargs: Any) -> None:
        rest = []
        for obj in objs:
            if isinstance(obj, BaseAggregate):
                self.events.extend(obj.collect_events())
                self.aggregates[obj.id] = obj
            elif obj is not None:
                rest.append(obj)
        orig(self, *rest, **kwargs)

    ProcessingEvent.collect_events = collect_events  # type: ignore[method-assign]


def gc_meter(stats: dict[str, Any]) -> None:
    """Time the cyclic garbage collector's pauses (they stop both threads)."""
    import gc

    started: list[float] = [0.0]

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        pause = time.perf_counter() - started[0]
        gen = info.get("generation", 0)
        stats["gc_pause_s"] += pause
        stats[f"gc{gen}_count"] += 1
        stats["gc_max_pause_ms"] = max(stats["gc_max_pause_ms"], round(pause * 1000, 2))
        if gen == 2:
            stats["gc2_max_ms"] = max(stats["gc2_max_ms"], round(pause * 1000, 2))

    for k in ("gc_pause_s", "gc0_count", "gc1_count", "gc2_count", "gc_max_pause_ms",
              "gc2_max_ms"):  # fmt: skip
        stats[k] = 0
    gc.callbacks.append(callback)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--switch-interval", type=float, default=None)
    p.add_argument("--no-access-log", action="store_true")
    p.add_argument("--log-level", default="info")
    p.add_argument("--sqlite-synchronous", default=None, help="e.g. normal (WAL-safe, no fsync)")
    p.add_argument("--sqlite-multirow", action="store_true", help="prototype, see above")
    p.add_argument("--fast-collect", action="store_true", help="prototype, see above")
    p.add_argument(
        "--gc-threshold",
        type=int,
        nargs=3,
        default=None,
        metavar=("G0", "G1", "G2"),
        help="gc.set_threshold(G0, G1, G2), e.g. 50000 20 100",
    )
    args = p.parse_args()
    if args.sqlite_multirow:
        sqlite_multirow_insert()
    if args.fast_collect:
        fast_collect_events()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    if args.sqlite_synchronous:
        import sqlite3

        orig_connect = sqlite3.connect

        def connect(*a: Any, **kw: Any) -> Any:
            conn = orig_connect(*a, **kw)
            conn.execute(f"PRAGMA synchronous = {args.sqlite_synchronous}")
            return conn

        sqlite3.connect = connect  # type: ignore[assignment]
    stats = instrument()
    gc_meter(stats)
    if args.gc_threshold:
        import gc

        gc.set_threshold(*args.gc_threshold)

    import uvicorn
    from fastapi import FastAPI

    from interfaces.http.app import create_app

    app: FastAPI = create_app()

    @app.get("/__bench/stats", include_in_schema=False)
    def bench_stats() -> dict[str, Any]:
        out = {k: v for k, v in stats.items() if k != "sizes"}
        groups = stats["groups"] or 1
        out["mean_group"] = round(stats["commands"] / groups, 2)
        out["sizes_top"] = stats["sizes"].most_common(12)
        out["mean_save_ms"] = round(1000 * stats["save_s"] / (stats["save_calls"] or 1), 3)
        out["mean_group_ms"] = round(1000 * stats["group_wall_s"] / groups, 3)
        out["committer_stats"] = dict(app.state.service.committer.stats)
        out["switch_interval"] = sys.getswitchinterval()
        return out

    @app.post("/__bench/reset", include_in_schema=False)
    def bench_reset() -> dict[str, str]:
        for k in list(stats):
            stats[k] = Counter() if k == "sizes" else 0
        return {"status": "reset"}

    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                access_log=not args.no_access_log)  # fmt: skip


if __name__ == "__main__":
    main()
