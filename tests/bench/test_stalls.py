"""bench/stalls.py: slow requests close together are one stall, apart they are two."""

from __future__ import annotations

from pathlib import Path

from bench.stalls import stalls, summary

T0 = 1_800_000_000.0


def request(at_s: float, latency_ms: float) -> tuple[float, float]:
    return (T0 + at_s, T0 + at_s + latency_ms / 1000)


def test_slow_requests_close_together_are_one_stall_and_apart_two():
    rows = [request(i * 0.01, 4.0) for i in range(300)]  # 3 s of fast answers
    rows += [request(1.0 + i * 0.01, 40.0 - i) for i in range(5)]  # one stall at 1.00-1.04
    rows += [request(2.5, 90.0)]  # another, alone
    found = stalls(sorted(rows), slow_ms=20.0, gap_s=0.1)
    assert [(round(s.start_s, 2), s.requests, round(s.worst_ms, 1)) for s in found] == [
        (1.0, 5, 40.0),
        (2.5, 1, 90.0),
    ]
    assert round(found[0].length_ms, 1) == 76.0  # 1.00 s to the last answer at 1.04 + 36 ms
    assert round(found[1].length_ms, 1) == 90.0


def test_summary_reads_a_timeline_file(tmp_path: Path):
    path = tmp_path / "t.txt"
    rows = [request(i * 0.001, 2.0) for i in range(99)] + [request(0.5, 30.0)]
    path.write_text("".join(f"{s:.6f} {a:.6f}\n" for s, a in sorted(rows)))
    out = summary(path, slow_ms=20.0, gap_s=0.1)
    assert out["requests"] == 100
    assert out["latency_ms"] == {"p50": 2.0, "p90": 2.0, "p99": 2.0, "max": 30.0}  # 99 of 100
    assert out["slow_requests"] == 1 and len(out["stalls"]) == 1
