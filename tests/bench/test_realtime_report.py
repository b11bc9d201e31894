"""bench/realtime.py: the CPU ceiling of a run, and ``--report`` on a results file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.realtime import cpu_ceiling, main


def max_run(rate: float, busy_pct: float) -> dict:
    return {
        "rate_per_s": rate,
        "latency_ms": {"p50": 10.0, "p95": 15.0, "p99": 20.0},
        "non_2xx": 0,
        "socket_errors": 0,
        "check": {"all_ok": True},
        "cpu": {"machine_busy_pct": busy_pct},
    }


def test_the_ceiling_scales_the_rate_to_every_core_busy():
    # 2,000/s with 2 cores 80% busy: 800 us of machine CPU a payment, 2,500/s at 100%.
    c = cpu_ceiling(max_run(2_000, 80.0), noop_rate=10_000, cpus=2)
    assert c == {
        "machine_cpu_us_per_payment": 800.0,
        "payments_per_s_at_full_cpu": 2_500.0,
        "ratio_to_noop_at_full_cpu": 0.25,
        "machine_cpu_us_per_payment_for_half_noop": 400.0,  # 2 cores / 5,000 a second
    }


def test_no_ceiling_without_a_busy_figure_or_a_no_op():
    assert cpu_ceiling(max_run(2_000, 0.0), noop_rate=10_000, cpus=2) == {}
    assert cpu_ceiling(max_run(2_000, 50.0), noop_rate=0.0, cpus=2) == {}


def test_report_judges_a_results_file_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    results = {
        "noop": {"rate_per_s": 8_000.0, "runs": [{"rate_per_s": 8_000.0}]},
        "machine": {"cpus": 2},
        "stores": {
            "postgres": {
                "mixes": {
                    "uniform": {
                        "max": max_run(2_000, 50.0),
                        "half": {"rate_per_s": 1_000, "latency_ms": {"p50": 4.0, "p99": 30.0}},
                    }
                }
            }
        },
    }
    path = tmp_path / "r.json"
    path.write_text(json.dumps(results))
    assert main(["--report", str(path)]) == 0
    out = capsys.readouterr().out
    assert "missed: ratio_ge_half_noop, half_load_p99_le_25ms" in out
    # 2 cores half busy at 2,000/s: 500 us a payment, 4,000/s = 0.50 x the no-op at 100%.
    assert (
        "postgres/uniform: machine CPU 500 us/payment; every core busy would give 4000/s = "
        "0.50 x no-op; 0.5 x no-op needs <= 500 us/payment" in out
    )
