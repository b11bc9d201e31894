"""``payledger audit verify`` as a user runs it, on SQLite and PostgreSQL: exit 0 and the head hash
on an untouched store; exit 1 naming the aggregate and version after a row is altered directly."""

from __future__ import annotations

from uuid import UUID

import pytest

from tests.application.test_audit_chain import Tamper

pytestmark = pytest.mark.e2e

SECRET = {"PAYLEDGER_SECRET_KEY": "payledger-e2e-audit-secret"}


@pytest.fixture
def cli(cli_for, database_url):  # type: ignore[no-untyped-def]
    cli = cli_for(database_url)
    cli.extra_env.update(SECRET)
    return cli


def _open(cli, owner, kind="customer"):  # type: ignore[no-untyped-def]
    opened = cli(
        "accounts", "open", "--owner", owner, "--currency", "CNY", "--kind", kind, "--json"
    )
    assert opened.code == 0, opened.stderr
    return UUID(opened.json()["id"])


@pytest.fixture
def alice(cli) -> UUID:  # type: ignore[no-untyped-def]
    alice, shop = _open(cli, "alice"), _open(cli, "shop", "merchant")
    assert cli("accounts", "deposit", str(alice), "50.00").code == 0
    for key in ("k-1", "k-2"):
        paid = cli("pay", "--amount", "5.00", "--currency", "CNY", "--channel", "internal",
                   "--from", str(alice), "--to", str(shop), "--key", key)  # fmt: skip
        assert paid.code == 0, paid.stderr
    return alice


def test_verify_passes_then_names_the_altered_event(cli, alice, database_url):  # type: ignore[no-untyped-def]
    intact = cli("audit", "verify")
    assert intact.code == 0, intact.stdout + intact.stderr
    assert "chain intact" in intact.stdout and "head hash:" in intact.stdout
    report = cli("audit", "verify", "--json").json()
    assert report["ok"] is True and report["first_broken"] is None
    assert report["events"] >= 8 and report["aggregates"] >= 4 and len(report["head_hash"]) == 64

    Tamper(database_url).alter_state(alice, 2)

    broken = cli("audit", "verify")
    assert broken.code == 1, broken.stdout + broken.stderr
    assert f"aggregate {alice} version 2: hash mismatch" in broken.stdout
    as_json = cli("audit", "verify", "--json")
    assert as_json.code == 1
    first = as_json.json()["first_broken"]
    assert (first["aggregate_id"], first["version"], first["reason"]) == (
        str(alice), 2, "hash mismatch",
    )  # fmt: skip
    assert as_json.json()["broken_total"] == 1


def test_a_deleted_event_and_a_wrong_key_fail_verification(cli, cli_for, alice, database_url):  # type: ignore[no-untyped-def]
    other_key = cli_for(database_url)
    other_key.extra_env["PAYLEDGER_SECRET_KEY"] = "not the key the chain was written with"
    assert other_key("audit", "verify").code == 1

    Tamper(database_url).delete_event(alice, 2)
    broken = cli("audit", "verify", "--json")
    assert broken.code == 1
    first = broken.json()["first_broken"]
    assert (first["aggregate_id"], first["version"], first["reason"]) == (
        str(alice), 2, "version gap",
    )  # fmt: skip


def test_until_reproduces_an_anchored_head_hash(cli, alice):  # type: ignore[no-untyped-def]
    anchored = cli("audit", "verify", "--json").json()
    assert cli("accounts", "deposit", str(alice), "1.00").code == 0
    now = cli("audit", "verify", "--json").json()
    assert now["head_hash"] != anchored["head_hash"]
    then = cli("audit", "verify", "--until", str(anchored["position"]), "--json")
    assert then.code == 0 and then.json()["head_hash"] == anchored["head_hash"]
