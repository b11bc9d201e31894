"""``payledger keys ...`` and ``payledger serve`` as real processes: a key created by the CLI
opens the API, a key revoked by the CLI is refused by the running server within seconds, the
CLI acts as ``cli:<os user>`` for its ``--tenant``, and production will not serve without keys."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import clean_env, free_port, payledger_cmd

pytestmark = pytest.mark.e2e

REVOCATION_WITHIN_S = 5.0


def test_keys_created_and_revoked_by_the_cli_rule_a_running_server(
    tmp_path: Path, start_server, cli_for
) -> None:
    url = f"sqlite:///{tmp_path / 'keys.sqlite3'}"
    cli = cli_for(url)
    admin = cli("keys", "create", "--tenant", "acme", "--role", "admin", "--name", "ops", "--json")
    submitter = cli("keys", "create", "--tenant", "acme", "--role", "submitter", "--json")
    assert admin.code == 0 and submitter.code == 0, admin.stderr + submitter.stderr
    a, s = admin.json(), submitter.json()
    assert {k: a[k] for k in ("tenant", "role")} == {"tenant": "acme", "role": "admin"}
    assert a["key"].startswith("pl_live_") and a["totp_uri"].startswith("otpauth://totp/")
    assert set(s) == {"id", "key", "tenant", "role", "name"}  # no second factor: no totp_uri

    listed = cli("keys", "list", "--json").json()
    assert [(k["id"], k["role"], k["revoked"]) for k in listed] == [
        (a["id"], "admin", False), (s["id"], "submitter", False),
    ]  # fmt: skip
    assert a["key"] not in str(listed)

    png = tmp_path / "qr.png"
    qr = cli("keys", "totp-qr", a["id"], "--png", str(png))
    assert qr.code == 0 and png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    terminal = cli("keys", "totp-qr", a["id"])
    assert terminal.code == 0 and "█" in terminal.stdout
    assert cli("keys", "totp-qr", s["id"]).code != 0  # no second factor to show

    # The CLI acts as cli:<os user> for its tenant: the server's acme keys see what it made.
    opened = cli("--tenant", "acme", "accounts", "open", "--owner", "shop", "--currency", "CNY",
                 "--kind", "merchant", "--json")  # fmt: skip
    assert opened.code == 0, opened.stderr

    server = start_server(url)
    headers = {"Authorization": f"Bearer {s['key']}"}
    with server.client() as http:
        assert http.get("/v1/payments").status_code == 401
        assert http.get(f"/v1/accounts/{opened.json()['id']}", headers=headers).status_code == 200

        revoked = cli("keys", "revoke", s["id"])
        assert revoked.code == 0, revoked.stderr
        deadline = time.monotonic() + REVOCATION_WITHIN_S
        while http.get("/v1/payments", headers=headers).status_code != 401:
            assert time.monotonic() < deadline, "the revoked key still works"
            time.sleep(0.1)
    assert cli("keys", "revoke", "00000000-0000-0000-0000-000000000000").code == 3


def test_the_cli_records_its_os_user_as_the_actor(tmp_path: Path, cli_for) -> None:
    cli = cli_for(f"sqlite:///{tmp_path / 'actor.sqlite3'}")
    alice = cli("--tenant", "acme", "accounts", "open", "--owner", "a", "--currency", "CNY",
                "--json").json()["id"]  # fmt: skip
    shop = cli("--tenant", "acme", "accounts", "open", "--owner", "s", "--currency", "CNY",
               "--kind", "merchant", "--json").json()["id"]  # fmt: skip
    assert cli("--tenant", "acme", "accounts", "deposit", alice, "10.00").code == 0
    paid = cli("--tenant", "acme", "pay", "--amount", "1.00", "--currency", "CNY", "--channel",
               "internal", "--from", alice, "--to", shop, "--json")  # fmt: skip
    assert paid.code == 0, paid.stderr

    shown = cli("--tenant", "acme", "payments", "show", paid.json()["id"], "--events", "--json")
    other_tenant = cli("payments", "show", paid.json()["id"])

    actors = {e["actor"] for e in shown.json()["events"]}
    assert len(actors) == 1 and actors.pop().startswith("cli:")
    assert other_tenant.code == 3  # the default tenant does not see acme's payment


def test_production_does_not_serve_without_a_key(tmp_path: Path) -> None:
    env = clean_env(
        f"sqlite:///{tmp_path / 'prod.sqlite3'}",
        PAYLEDGER_ENV="production",
        PAYLEDGER_SECRET_KEY="a-production-secret-key-for-this-test",
        **_encryption_env(),
    )
    done = subprocess.run(
        payledger_cmd("serve", "--port", str(free_port())),
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert done.returncode == 2, done.stderr
    assert "no API key exists" in done.stderr and "payledger keys create" in done.stderr
    assert "Traceback" not in done.stderr


def _encryption_env() -> dict[str, str]:
    """Production needs an encryption key when encryption at rest is there."""
    try:
        from application.encryption import new_key
    except ImportError:
        return {}
    return {"PAYLEDGER_ENCRYPTION_KEY": new_key()}


def test_a_production_server_with_a_key_refuses_anonymous_requests(
    tmp_path: Path, start_server, cli_for
) -> None:
    url = f"sqlite:///{tmp_path / 'prod-ok.sqlite3'}"
    env = {"PAYLEDGER_ENV": "production", "PAYLEDGER_SECRET_KEY": "another-production-secret"}
    env |= _encryption_env()
    cli = cli_for(url)
    cli.extra_env.update(env)
    key = cli("keys", "create", "--tenant", "acme", "--role", "auditor", "--json")
    assert key.code == 0, key.stderr

    server = start_server(url, env=env)
    with server.client() as http:
        assert http.get("/v1/payments").status_code == 401
        authorized = {"Authorization": f"Bearer {key.json()['key']}"}
        assert http.get("/v1/payments", headers=authorized).status_code == 200
    assert "no API key exists" not in server.log()
