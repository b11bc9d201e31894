"""The CLI as a user runs it: subprocesses on an SQLite file, exit codes and output."""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.e2e

CARD_OK = "4242424242424242"
CARD_DECLINED = "4000000000000002"
CARD_TIMEOUT = "4000000000000119"


@pytest.fixture
def cli(cli_for, sqlite_url):  # type: ignore[no-untyped-def]
    return cli_for(sqlite_url)


def _open(cli, owner, kind="customer"):  # type: ignore[no-untyped-def]
    opened = cli(
        "accounts", "open", "--owner", owner, "--currency", "CNY", "--kind", kind, "--json"
    )
    assert opened.code == 0, opened.stderr
    return opened.json()["id"]


def _card_payment(cli, number, payee):  # type: ignore[no-untyped-def]
    return cli(
        "pay", "--amount", "12.00", "--currency", "CNY", "--channel", "card",
        "--card", number, "--exp", "12/2031", "--cvc", "123", "--to", payee, "--json",
    )  # fmt: skip


def test_demo_lists_every_outcome_and_the_ledger_balances(cli):
    demo = cli("demo", "--json")
    assert demo.code == 0, demo.stderr
    outcomes = {(p["channel"], p["status"], p["failure_code"]) for p in demo.json()}
    assert outcomes == {
        ("internal", "succeeded", None),
        ("internal", "failed", "insufficient_funds"),
        ("card", "succeeded", None),
        ("card", "failed", "card_declined"),
        ("card", "exception", "channel_timeout"),
        ("alipay", "failed", "wallet_declined"),
        ("bank_transfer", "failed", "AC04"),
    }
    assert all(p["amount"].count(".") == 1 for p in demo.json())  # decimal strings
    table = cli("demo")
    assert table.code == 0 and "card_declined" in table.stdout and "AC04" in table.stdout
    check = cli("ledger", "check", "--json")
    assert check.code == 0, check.stdout + check.stderr
    assert check.json() == [{"currency": "CNY", "total": "0.00", "balanced": True}]
    for number in (CARD_OK, CARD_DECLINED, CARD_TIMEOUT):
        assert number not in demo.stdout + table.stdout


def test_pay_exit_code_follows_the_outcome(cli):
    alice, shop = _open(cli, "alice"), _open(cli, "shop", "merchant")
    assert cli("accounts", "deposit", alice, "50.00").code == 0
    internal = ("pay", "--currency", "CNY", "--channel", "internal", "--from", alice, "--to", shop)

    ok = cli(*internal, "--amount", "20.00", "--key", "k-ok", "--json")
    assert (ok.code, ok.json()["status"]) == (0, "succeeded"), ok.stderr
    refused = cli(*internal, "--amount", "999.00", "--json")
    assert (refused.code, refused.json()["failure_code"]) == (6, "insufficient_funds")
    declined = _card_payment(cli, CARD_DECLINED, shop)
    assert (declined.code, declined.json()["failure_code"]) == (6, "card_declined")
    unknown = _card_payment(cli, CARD_TIMEOUT, shop)
    assert (unknown.code, unknown.json()["status"]) == (7, "exception")
    charged = _card_payment(cli, CARD_OK, shop)
    assert charged.code == 0 and charged.json()["payer"]["last4"] == "4242"
    for result in (declined, unknown, charged):
        assert CARD_OK not in result.stdout + result.stderr
        assert CARD_DECLINED not in result.stdout + result.stderr

    # The same key replays the first answer instead of paying twice.
    replay = cli(*internal, "--amount", "20.00", "--key", "k-ok", "--json")
    assert (replay.code, replay.json()["id"]) == (0, ok.json()["id"])
    assert cli("accounts", "show", alice, "--json").json()["balance"] == "30.00"
    human = cli("payments", "show", ok.json()["id"], "--events")
    assert human.code == 0 and "Requested" in human.stdout and "succeeded" in human.stdout


def test_validation_errors_exit_2_and_name_the_field(cli):
    shop = _open(cli, "shop", "merchant")
    bad = cli("pay", "--amount", "1.001", "--currency", "CNY", "--channel", "internal",
              "--to", shop)  # fmt: skip
    assert bad.code == 2
    assert len(bad.stderr.splitlines()) == 1
    assert "amount" in bad.stderr and "too many decimals" in bad.stderr
    assert "payer" in bad.stderr

    card = cli("pay", "--amount", "1.00", "--currency", "CNY", "--channel", "card",
               "--card", "4242424242424241", "--exp", "1/20", "--to", shop)  # fmt: skip
    assert card.code == 2
    assert "--exp" in card.stderr and "--cvc" in card.stderr and "--card" in card.stderr
    assert "4242424242424241" not in card.stderr

    opened = cli("accounts", "open", "--owner", "x", "--currency", "XXY")
    assert opened.code == 2 and "currency" in opened.stderr
    assert cli("accounts", "show", "not-a-uuid").code == 2  # usage error


def test_other_errors_have_their_own_exit_codes(cli, cli_for, tmp_path):
    missing = cli("payments", "show", str(uuid.uuid4()))
    assert missing.code == 3 and missing.stderr.startswith("error: payment ")
    assert cli("accounts", "show", str(uuid.uuid4())).code == 3

    alice = _open(cli, "alice")
    assert cli("accounts", "deposit", alice, "1.00").code == 0
    refused = cli("accounts", "close", alice)
    assert refused.code == 4 and "account_rule_violation" in refused.stderr
    # A deposit the rules refuse (a closed account) is printed and exits 6, as `pay` does.
    bob = _open(cli, "bob")
    assert cli("accounts", "close", bob).code == 0
    closed = cli("accounts", "deposit", bob, "1.00", "--json")
    assert (closed.code, closed.json()["status"], closed.json()["failure_code"]) == (
        6, "failed", "account_closed",
    )  # fmt: skip
    assert cli("accounts", "deposit", bob, "1.00").code == 6
    assert "6 failed" in cli("accounts", "deposit", "--help").stdout

    down = cli_for("postgresql://postgres@127.0.0.1:1/x")("accounts", "show", alice)
    assert down.code == 5 and len(down.stderr.splitlines()) == 1
    assert "Traceback" not in down.stderr

    badurl = cli_for("mysql://x")("ledger", "check")
    assert badurl.code == 2 and "unsupported scheme" in badurl.stderr


def test_help_documents_the_exit_codes(cli):
    pay_help = cli("pay", "--help")
    assert pay_help.code == 0
    assert "6 failed" in pay_help.stdout and "7 exception" in pay_help.stdout
    assert "Exit codes" in cli("--help").stdout
