"""``payledger serve`` start-up: the default SQLite file, and one clear line for a bad store."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.e2e.conftest import clean_env, free_port, payledger_cmd

pytestmark = pytest.mark.e2e

FAIL_FAST_S = 10


def test_default_database_is_created_in_the_working_directory(tmp_path, start_server):
    server = start_server(None, cwd=tmp_path)
    assert (tmp_path / "var" / "payledger.sqlite3").is_file()
    with server.client() as http:
        assert http.get("/readyz").status_code == 200
    assert "sqlite:///var/payledger.sqlite3" in server.log()


@pytest.mark.parametrize(
    ("database_url", "expected"),
    [
        ("mysql://x", "unsupported scheme 'mysql'"),
        ("postgresql://postgres@127.0.0.1:1/x", "cannot reach PostgreSQL"),
        ("sqlite://no-path", "sqlite:///path"),
        ("postgresql://postgres:s3cret@127.0.0.1:notaport/x", "the port must be a number"),
        ("postgresql://postgres@127.0.0.1:5432", "names no database"),
        ("postgresql://", "names no database"),
        ("sqlite:///:memory:", "cannot use an in-memory SQLite database"),
    ],
    ids=[
        "unknown-scheme",
        "unreachable-postgres",
        "bad-sqlite-url",
        "bad-port",
        "no-database",
        "bare-postgresql",
        "in-memory",
    ],
)
def test_bad_store_fails_fast_with_one_line(tmp_path, database_url, expected):
    started = time.monotonic()
    done = subprocess.run(
        payledger_cmd("serve", "--port", str(free_port())),
        cwd=tmp_path,
        env=clean_env(database_url),
        capture_output=True,
        text=True,
        timeout=FAIL_FAST_S * 3,  # a hang still ends the test
    )
    elapsed_s = time.monotonic() - started
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and expected in lines[0]
    assert "Traceback" not in done.stderr and "s3cret" not in done.stderr
    assert elapsed_s < FAIL_FAST_S


def test_bad_setting_names_the_variable(tmp_path):
    env = clean_env(f"sqlite:///{tmp_path / 'x.sqlite3'}", PAYLEDGER_SANDBOX_LATENCY_MS='{"x":1}')
    done = subprocess.run(
        payledger_cmd("serve", "--port", str(free_port())),
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: invalid configuration: PAYLEDGER_SANDBOX_LATENCY_MS: "
        "Value error, unknown channels: ['x']"
    ]
