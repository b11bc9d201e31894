"""Compare two sets of ``bench/realtime.py`` results (an A/B of two versions of the code): the mean
over every run and mix of each figure, and the ratio of the second set to the first.

    .venv/bin/python -m bench.compare 'bench/results/realtime-quick-s10-base-*.json' \
        'bench/results/realtime-quick-s10-new-*.json'

Each set is a glob. The half-load p99 is given as a median and range, because one stalled run can
move a mean by seconds. Sets of ``bench/group_cost.py`` results compare the same way (CPU and wall
time per payment, groups of one and up to 32):

    .venv/bin/python -m bench.compare 'bench/results/group-cost-s10-base-*.json' \
        'bench/results/group-cost-s10-new-*.json'
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

Run = dict[str, Any]

SERVER_US = "server_cpu_us_per_success"
POSTGRES_US = "postgres_cpu_us_per_success"

FIGURES: list[tuple[str, Callable[[Run], float | None]]] = [
    ("payments/s at full load", lambda r: r["max"]["rate_per_s"]),
    ("server CPU per payment, full load (us)", lambda r: _cpu(r["max"], SERVER_US)),
    ("... API process", lambda r: _by_process(r, "api")),
    ("... committer process", lambda r: _by_process(r, "committer")),
    ("... projector process", lambda r: _by_process(r, "projector")),
    ("PostgreSQL CPU per payment (us)", lambda r: _cpu(r["max"], POSTGRES_US)),
    ("server CPU per payment, half load (us)", lambda r: _cpu(r.get("half") or {}, SERVER_US)),
]  # fmt: skip


def _cpu(part: Run, field: str) -> float | None:
    """A figure of a run's ``cpu`` record, if that run has it (older files lack some)."""
    value = (part.get("cpu") or {}).get(field)
    return float(value) if value is not None else None


def _by_process(run: Run, name: str) -> float | None:
    split = _cpu_split(run["max"]).get(name)
    return float(split) if split is not None else None


def _cpu_split(part: Run) -> dict[str, Any]:
    return (part.get("cpu") or {}).get("server_cpu_us_per_success_by_process") or {}


def runs(pattern: str) -> list[Run]:
    """Every mix of every results file matching ``pattern``, PostgreSQL and SQLite alike."""
    found: list[Run] = []
    for path in sorted(glob.glob(pattern)):
        data = json.loads(Path(path).read_text())
        for store in data["stores"].values():
            found.extend(store["mixes"].values())
    if not found:
        raise SystemExit(f"no results match {pattern!r}")
    return found


def mean_of(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def compare(first: list[Run], second: list[Run]) -> list[tuple[str, float | None, float | None]]:
    return [(name, mean_of([f(r) for r in first]), mean_of([f(r) for r in second]))
            for name, f in FIGURES]  # fmt: skip


def half_p99(found: list[Run]) -> tuple[float, float, float]:
    values = [r["half"]["latency_ms"]["p99"] for r in found if r.get("half")]
    return statistics.median(values), min(values), max(values)


def group_costs(pattern: str) -> dict[str, list[dict[str, float]]]:
    """``bench/group_cost.py`` results: every measurement of each group size."""
    found: dict[str, list[dict[str, float]]] = {}
    for path in sorted(glob.glob(pattern)):
        for size, measured in json.loads(Path(path).read_text())["per_payment"].items():
            found.setdefault(size, []).extend(measured)
    if not found:
        raise SystemExit(f"no results match {pattern!r}")
    return found


def compare_group_costs(first: str, second: str) -> None:
    a, b = group_costs(first), group_costs(second)
    print("| per payment, mean (range) | first | second | second / first |")
    print("| --- | ---: | ---: | ---: |")
    for size in a:
        for unit in ("cpu_us", "wall_us"):
            x = [m[unit] for m in a[size]]
            y = [m[unit] for m in b.get(size, [])]
            if not y:
                continue
            ratio = statistics.fmean(y) / statistics.fmean(x)
            print(f"| {size}, {unit} ({len(x)} / {len(y)}) | {_spread(x)} | {_spread(y)} "
                  f"| {ratio:.2f} |")  # fmt: skip


def _spread(values: list[float]) -> str:
    return f"{statistics.fmean(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", help="glob of the first set (the baseline)")
    parser.add_argument("second", help="glob of the second set")
    args = parser.parse_args()
    probe = sorted(glob.glob(args.first))
    if probe and "per_payment" in json.loads(Path(probe[0]).read_text()):
        compare_group_costs(args.first, args.second)
        return
    first, second = runs(args.first), runs(args.second)
    print(f"| mean of {len(first)} / {len(second)} runs | first | second | second / first |")
    print("| --- | ---: | ---: | ---: |")
    for name, a, b in compare(first, second):
        ratio = f"{b / a:.2f}" if a and b is not None else "-"
        print(f"| {name} | {_fmt(a)} | {_fmt(b)} | {ratio} |")
    (m1, lo1, hi1), (m2, lo2, hi2) = half_p99(first), half_p99(second)
    print(f"| half-load p99, median (range) | {m1:.1f} ms ({lo1:.1f}-{hi1:.1f}) "
          f"| {m2:.1f} ms ({lo2:.1f}-{hi2:.1f}) | - |")  # fmt: skip


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


if __name__ == "__main__":
    main()
