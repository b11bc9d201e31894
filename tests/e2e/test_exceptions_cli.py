"""``payledger exceptions`` as a user runs it: subprocesses on one store (SQLite and PostgreSQL).

Payments left in exception by ``payledger pay`` are listed, one is resolved by hand (its hold
consumed, the OS user in its history), and a resolver pass with ``--until-done`` finds out the
other: the CLI's sandbox channel, a process of its own, never saw that charge, so once older than
the channel time-out plus 5 s it fails ``not_received_by_channel`` and nothing stays held.
"""

from __future__ import annotations

import getpass
import time

import pytest

pytestmark = pytest.mark.e2e

CARD_TIMEOUT = "4000000000000119"
IBAN_TIMEOUT = "DE82370400440532010119"
# Exceptions are first asked about once older than the channel time-out plus 5 s: 8 s here,
# long enough for the steps before the final pass, short enough not to wait long.
ENV = {"PAYLEDGER_CHANNEL_TIMEOUT_MS": "3000"}


def _open(cli, owner, currency, kind="customer"):  # type: ignore[no-untyped-def]
    opened = cli("accounts", "open", "--owner", owner, "--currency", currency, "--kind", kind,
                 "--json")  # fmt: skip
    assert opened.code == 0, opened.stderr
    return opened.json()["id"]


def test_list_resolve_by_hand_and_resolve_until_done(database_url, cli_for):  # type: ignore[no-untyped-def]
    cli = cli_for(database_url)
    cli.extra_env.update(ENV)
    payer, shop = _open(cli, "payer", "EUR"), _open(cli, "shop", "CNY", "merchant")
    assert cli("accounts", "deposit", payer, "100.00").code == 0
    payout = cli("pay", "--amount", "30.00", "--currency", "EUR", "--channel", "bank_transfer",
                 "--from", payer, "--iban", IBAN_TIMEOUT, "--name", "Bob", "--json")  # fmt: skip
    card = cli("pay", "--amount", "12.00", "--currency", "CNY", "--channel", "card",
               "--card", CARD_TIMEOUT, "--exp", "12/2031", "--cvc", "123", "--to", shop,
               "--json")  # fmt: skip
    card_made = time.monotonic()
    assert (payout.code, card.code) == (7, 7), payout.stderr + card.stderr
    by_hand, asked = payout.json()["id"], card.json()["id"]

    # Too young to ask about: still open when the time is up (exit 7, as `pay`'s exception).
    young = cli("exceptions", "resolve", "--until-done", "--timeout", "1", "--json")
    assert time.monotonic() - card_made < 8, "too slow a machine for this test's settle time"
    assert young.code == 7, young.stdout + young.stderr
    assert young.json() == {"succeeded": 0, "failed": 0, "open": 2, "flagged": 0, "asked": 0}
    assert "sandbox channels" in young.stderr

    listed = cli("exceptions", "list", "--json")
    assert listed.code == 0, listed.stderr
    items = {x["payment_id"]: x for x in listed.json()["items"]}
    assert set(items) == {by_hand, asked}
    assert (items[by_hand]["amount"], items[by_hand]["currency"], items[by_hand]["code"]) == (
        "30.00", "EUR", "channel_timeout",
    )  # fmt: skip
    assert items[asked]["age_seconds"] >= 0 and items[asked]["flagged"] is False
    table = cli("exceptions", "list")
    assert table.code == 0 and "12.00 CNY" in table.stdout and "channel_timeout" in table.stdout

    reason = "on the bank statement of the day, line 4"
    resolved = cli("exceptions", "resolve", by_hand, "--outcome", "succeeded", "--reason", reason,
                   "--channel-reference", "BANK-4", "--json")  # fmt: skip
    assert resolved.code == 0, resolved.stderr
    assert (resolved.json()["status"], resolved.json()["channel_reference"]) == (
        "succeeded", "BANK-4",
    )  # fmt: skip
    again = cli("exceptions", "resolve", by_hand, "--outcome", "failed", "--reason", "oops")
    assert again.code == 4 and "payment_not_in_exception" in again.stderr
    no_reason = cli("exceptions", "resolve", asked, "--outcome", "failed")
    assert no_reason.code == 2 and "--reason" in no_reason.stderr
    account = cli("accounts", "show", payer, "--json").json()
    assert (account["balance"], account["reserved"]) == ("70.00", "0.00")

    done = cli("exceptions", "resolve", "--until-done", "--timeout", "60", "--json")
    assert done.code == 0, done.stdout + done.stderr
    assert done.json() == {"succeeded": 0, "failed": 1, "open": 0, "flagged": 0, "asked": 1}

    failed = cli("payments", "show", asked, "--events", "--json").json()
    assert (failed["status"], failed["failure_code"]) == ("failed", "not_received_by_channel")
    resolution = [e for e in failed["events"] if e["type"] == "ExceptionResolved"]
    assert [(e["actor"], e["data"]["how"]) for e in resolution] == [
        ("system:exception-resolver", "channel_status")
    ]
    history = cli("payments", "show", by_hand, "--events", "--json").json()["events"]
    manual = [e for e in history if e["type"] == "ExceptionResolved"]
    assert [(e["actor"], e["data"]["reason"]) for e in manual] == [
        (f"cli:{getpass.getuser()}", reason)
    ]
    assert cli("exceptions", "list", "--json").json()["items"] == []
    nothing = cli("exceptions", "resolve")
    assert nothing.code == 0 and "resolved 0 succeeded, 0 failed" in nothing.stdout
    check = cli("ledger", "check", "--json")
    assert check.code == 0 and all(row["balanced"] for row in check.json()), check.stdout
