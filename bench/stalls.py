"""When were the slow answers? Clusters of slow requests in a timeline from bench/openloop.py.

``bench/realtime.py --timelines DIR`` (or ``bench/openloop.py --timeline FILE``) writes each
half-load request's scheduled and answer times. A p99 says how slow the tail is, not whether it
is spread evenly (every request a little slow) or made of stalls (a moment when nothing is
answered). This prints the percentiles, then each stall: requests scheduled within ``--gap``
seconds of each other that took longer than ``--slow-ms``, with when it started (seconds from the
first request), how long it lasted and its worst latency.

    .venv/bin/python -m bench.stalls /tmp/tl/postgres-uniform-half.txt
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Stall:
    start_s: float  # scheduled time of its first slow request, from the first request
    length_ms: float  # from its first slow request's scheduled time to its last one's answer
    requests: int
    worst_ms: float


def read_timeline(path: Path) -> list[tuple[float, float]]:
    rows = []
    for line in path.read_text().splitlines():
        scheduled, answered = line.split()
        rows.append((float(scheduled), float(answered)))
    rows.sort()
    return rows


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p% of the values at or below it."""
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def stalls(rows: list[tuple[float, float]], slow_ms: float, gap_s: float) -> list[Stall]:
    if not rows:
        return []
    t0 = rows[0][0]
    found: list[Stall] = []
    last_scheduled = last_answered = 0.0
    for scheduled, answered in rows:
        latency_ms = (answered - scheduled) * 1000
        if latency_ms <= slow_ms:
            continue
        if found and scheduled - last_scheduled <= gap_s:
            stall = found[-1]
            stall.requests += 1
            stall.worst_ms = max(stall.worst_ms, latency_ms)
            last_answered = max(last_answered, answered)
            stall.length_ms = (last_answered - (t0 + stall.start_s)) * 1000
        else:
            found.append(Stall(scheduled - t0, latency_ms, 1, latency_ms))
            last_answered = answered
        last_scheduled = scheduled
    return found


def summary(path: Path, slow_ms: float, gap_s: float) -> dict[str, object]:
    rows = read_timeline(path)
    latencies = sorted((answered - scheduled) * 1000 for scheduled, answered in rows)
    found = stalls(rows, slow_ms, gap_s)
    in_stalls = sum(stall.requests for stall in found)
    return {
        "file": str(path),
        "requests": len(rows),
        "seconds": round(rows[-1][0] - rows[0][0], 2) if rows else 0.0,
        "latency_ms": {f"p{p:g}": round(percentile(latencies, p), 1) for p in (50, 90, 99)}
        | {"max": round(latencies[-1], 1) if latencies else 0.0},
        "slow_ms": slow_ms,
        "slow_requests": in_stalls,
        "stalls": [asdict(stall) for stall in found],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--slow-ms", type=float, default=20.0, help="slower than this is slow")
    p.add_argument("--gap", type=float, default=0.1, help="slow requests this close: one stall")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    for path in args.files:
        out = summary(path, args.slow_ms, args.gap)
        if args.json:
            print(json.dumps(out))
            continue
        lat = out["latency_ms"]
        assert isinstance(lat, dict)
        print(
            f"{path}: {out['requests']} requests in {out['seconds']} s, p50 {lat['p50']} p90 "
            f"{lat['p90']} p99 {lat['p99']} max {lat['max']} ms; {out['slow_requests']} slower "
            f"than {args.slow_ms:g} ms in {len(out['stalls'])} stalls"  # type: ignore[arg-type]
        )
        for stall in out["stalls"]:  # type: ignore[attr-defined]
            print(
                f"  at {stall['start_s']:6.2f} s: {stall['requests']:4d} slow requests over "
                f"{stall['length_ms']:6.1f} ms, worst {stall['worst_ms']:6.1f} ms"
            )


if __name__ == "__main__":
    main()
