"""Print bench/results/realtime.json as the Markdown tables used in docs/performance.md.

.venv/bin/python bench/report.py [bench/results/realtime.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def yes(v: bool) -> str:
    return "yes" if v else "**no**"


def main(argv: list[str]) -> None:
    path = Path(argv[0] if argv else Path(__file__).parent / "results" / "realtime.json")
    d: dict[str, Any] = json.loads(path.read_text())
    g, m = d["git"], d["machine"]
    print(f"- command: `{d['command']}`")
    print(
        f"- date: {d['date']}; git commit `{(g['commit'] or '')[:12]}`"
        + (f" plus {g['uncommitted_files']} uncommitted files" if g["dirty"] else "")
    )
    print(
        f"- machine: {m['cpus']} x {m['cpu']}, {m['memory_gib']} GiB, Python {m['python']}, "
        f"PostgreSQL {m['postgres']}, {m['wrk']}".rstrip(", ")
    )
    print(
        f"- max-rate generator: {d['settings']['max_generator']}; half load: "
        f"{d['settings']['half_generator']}"
    )
    print()
    noop = d["noop"]
    print("| no-op run | requests/s | p50 ms | p99 ms | server CPU us/request | other load CPU-s |")
    print("|---|---:|---:|---:|---:|---:|")
    for i, r in enumerate(noop["runs"]):
        print(
            f"| {'before' if i == 0 else 'after'} | {r['rate_per_s']:.0f} | "
            f"{r['latency_ms']['p50']} | {r['latency_ms']['p99']} | "
            f"{r['cpu']['server_cpu_us_per_success']} | {r['cpu']['other_cpu_s']} |"
        )
    print(f"| **mean** | **{noop['rate_per_s']:.0f}** | | | | |")
    print()
    print(
        "| store | mix | payments/s | x no-op | p50 ms | p95 ms | p99 ms | errors | "
        "server CPU us/payment | PG CPU us/payment | other load CPU-s | half-load rate/s | "
        "half p50 ms | half p99 ms | balances |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for store, sd in d["stores"].items():
        for mix, r in sd["mixes"].items():
            mx, h = r["max"], r.get("half", {})
            ok = mx["check"]["all_ok"] and h.get("check", {}).get("all_ok", True)
            errs = (
                mx["non_2xx"]
                + mx["socket_errors"]
                + h.get("non_2xx", 0)
                + h.get("socket_errors", 0)
            )
            pg = mx["cpu"]["postgres_cpu_us_per_success"] if store == "postgres" else "-"
            print(
                f"| {store} | {mix} | {mx['rate_per_s']:.0f} | {r['ratio_to_noop']:.2f} | "
                f"{mx['latency_ms']['p50']} | {mx['latency_ms']['p95']} | "
                f"{mx['latency_ms']['p99']} | {errs} | {mx['cpu']['server_cpu_us_per_success']} | "
                f"{pg} | {mx['cpu']['other_cpu_s']} | {h.get('rate_per_s', 0):.0f} | "
                f"{h.get('latency_ms', {}).get('p50')} | {h.get('latency_ms', {}).get('p99')} | "
                f"{'exact' if ok else '**MISMATCH**'} |"
            )
    print()
    print(
        "| store | mix | >= 1,500/s | >= 0.5 x no-op | half-load p99 <= 25 ms | balances | "
        "no errors |"
    )
    print("|---|---|---|---|---|---|---|")
    for store, sd in d["stores"].items():
        for mix, r in sd["mixes"].items():
            gl = r["goals"]
            print(
                f"| {store} | {mix} | {yes(gl['rate_ge_1500'])} | {yes(gl['ratio_ge_half_noop'])}"
                f" | {yes(gl['half_load_p99_le_25ms'])} | {yes(gl['balances_correct'])} | "
                f"{yes(gl['no_errors'])} |"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
