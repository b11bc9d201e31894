"""Reconciliation through the real ``payledger`` CLI: card payments made with ``payledger pay``,
a statement written from ``payledger payments list``, then ``payledger reconcile`` (the summary
table, ``--json``, the period from the statement's dates, ``--fail-on-discrepancy``) and
``payledger reconciliations list/show/items/export/annotate/accept/approve``."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from application.reconciliation.statements import StatementLine, write_csv_statement
from domain.money import parse_amount
from domain.reconciliations import CATEGORIES
from tests.e2e.conftest import Cli, CliResult

pytestmark = [pytest.mark.e2e]

TENANT = "recon-shop"
CARD = ["--exp", "12/2035", "--cvc", "123"]


def today() -> date:
    return datetime.now(UTC).date()


class Shop:
    """``payledger --tenant recon-shop ...`` on one store, with a merchant and card payments."""

    def __init__(self, cli: Cli, workdir: Path) -> None:
        self.cli = cli
        self.workdir = workdir
        self.merchant = self.json(
            "accounts", "open", "--owner", "shop", "--currency", "EUR", "--kind", "merchant"
        )["id"]
        self.paid: dict[str, dict[str, Any]] = {}

    def run(self, *args: str, ok: tuple[int, ...] = (0,)) -> CliResult:
        result = self.cli("--tenant", TENANT, *args)
        assert result.code in ok, (
            f"payledger {' '.join(args)} exited {result.code}\n"
            f"stdout: {result.stdout[-3000:]}\nstderr: {result.stderr[-3000:]}"
        )
        return result

    def json(self, *args: str, ok: tuple[int, ...] = (0,)) -> Any:
        return self.run(*args, "--json", ok=ok).json()

    def pay(self, name: str, amount: str, number: str = "4242424242424242") -> dict[str, Any]:
        made = self.json(
            "pay",
            "--amount",
            amount,
            "--currency",
            "EUR",
            "--channel",
            "card",
            "--card",
            number,
            *CARD,
            "--to",
            self.merchant,
            ok=(0, 6),
        )
        self.paid[name] = made
        return made  # type: ignore[no-any-return]

    def id(self, name: str) -> str:
        return str(self.paid[name]["id"])

    def faithful_lines(self, booked_on: date | None = None) -> list[StatementLine]:
        listed = {p["id"]: p for p in self.json("payments", "list", "--channel", "card")["items"]}
        lines = []
        for name, made in self.paid.items():
            p = listed[made["id"]]
            lines.append(
                StatementLine(
                    len(lines) + 1,
                    p["channel_reference"],
                    (p["id"],),
                    parse_amount(p["amount"], "EUR"),
                    "EUR",
                    "credit",
                    "failed" if p["status"] == "failed" else "settled",
                    booked_on or today(),
                    f"E-{name}",
                )
            )
        return lines

    def statement(self, lines: list[StatementLine], name: str = "statement.csv") -> Path:
        path = self.workdir / name
        with path.open("w", newline="") as out:
            write_csv_statement([replace(x, line_no=n) for n, x in enumerate(lines, 1)], out)
        return path

    def reconcile(self, path: Path, *args: str, ok: tuple[int, ...] = (0,)) -> CliResult:
        return self.run("reconcile", "--channel", "card", str(path), *args, ok=ok)


def make_shop(cli_for: Callable[[str | None], Cli], url: str, tmp_path: Path) -> Shop:
    shop = Shop(cli_for(url), tmp_path)
    shop.pay("s1", "10.00")
    shop.pay("s2", "11.00")
    shop.pay("s3", "12.00")
    assert shop.pay("declined", "13.00", "4000000000000002")["status"] == "failed"
    return shop


@pytest.fixture(scope="module")
def sqlite_shop(tmp_path_factory: pytest.TempPathFactory) -> Shop:
    """One SQLite store and its payments for the module (a CLI call costs over a second):
    each test reconciles its own statement, a run of its own."""
    workdir = tmp_path_factory.mktemp("recon-cli")
    url = f"sqlite:///{workdir / 'payledger.sqlite3'}"
    return make_shop(lambda u: Cli(u, workdir), url, workdir)


@pytest.fixture
def shop(sqlite_shop: Shop, tmp_path: Path) -> Shop:
    sqlite_shop.workdir = tmp_path  # this test's statement files
    return sqlite_shop


def signed_minor(amount: str) -> int:
    return (
        -parse_amount(amount[1:], "EUR") if amount.startswith("-") else parse_amount(amount, "EUR")
    )


def table_counts(stdout: str) -> dict[str, tuple[int, str]]:
    """The summary table's rows: category -> (count, amount)."""
    rows = {}
    for category in CATEGORIES:
        found = re.search(rf"{category}\s*\W\s*(\d+)\s*\W\s*([\d.]+)", stdout)
        assert found, f"no row for {category} in:\n{stdout}"
        rows[category] = (int(found.group(1)), found.group(2))
    return rows


def zero_but(**nonzero: tuple[int, str]) -> dict[str, tuple[int, str]]:
    return {c: nonzero.get(c, (0, "0.00")) for c in CATEGORIES}


def test_reconcile_prints_the_summary_table_and_json(shop: Shop) -> None:
    path = shop.statement(shop.faithful_lines())

    printed = shop.reconcile(path)
    assert table_counts(printed.stdout) == zero_but(matched=(4, "46.00"))
    assert "difference 0.00" in printed.stdout.replace("\n", " ")

    again = shop.reconcile(path, "--json")
    body = again.json()
    assert body["replayed"] is True  # the same file: its earlier run
    assert body["status"] == "completed"
    assert {c: (t["count"], t["amount"]) for c, t in body["summary"].items()} == zero_but(
        matched=(4, "46.00")
    )
    assert body["discrepancy_count"] == 0
    assert body["balances"]["difference"] == "0.00"
    listed = shop.json("reconciliations", "list")["items"]
    assert [r["id"] for r in listed].count(body["id"]) == 1


def test_a_doctored_statement_through_the_cli(shop: Shop) -> None:
    lines = [x for x in shop.faithful_lines() if x.payment_ids != (shop.id("s2"),)]
    stranger = StatementLine(
        0, "card_unknown_to_us_0001", (), 500, "EUR", "credit", "settled", today(), "E-x"
    )
    path = shop.statement([*lines, stranger], "doctored.csv")

    printed = shop.reconcile(path)
    assert table_counts(printed.stdout) == zero_but(
        matched=(3, "35.00"), missing_in_ledger=(1, "5.00"), missing_in_statement=(1, "11.00")
    )
    failing = shop.reconcile(path, "--fail-on-discrepancy", "--json", ok=(6,))
    assert failing.json()["discrepancy_count"] == 2


def test_the_period_defaults_to_the_statements_booking_dates(shop: Shop) -> None:
    yesterday = today() - timedelta(days=1)
    early = StatementLine(
        0, "card_from_yesterday_0001", (), 700, "EUR", "credit", "settled", yesterday, "E-y"
    )
    path = shop.statement([early, *shop.faithful_lines()], "two-days.csv")

    body = shop.reconcile(path, "--json").json()
    assert (body["period_start"], body["period_end"]) == (
        yesterday.isoformat(),
        today().isoformat(),
    )
    assert body["summary"]["matched"]["count"] == 4
    assert body["summary"]["missing_in_ledger"]["count"] == 1

    only_end = shop.statement([*shop.faithful_lines()[:1]], "one.csv")
    given = shop.reconcile(only_end, "--period-start", yesterday.isoformat(), "--json").json()
    assert (given["period_start"], given["period_end"]) == (
        yesterday.isoformat(),
        today().isoformat(),
    )


def test_list_show_items_export_and_annotate(shop: Shop, tmp_path: Path) -> None:
    lines = [x for x in shop.faithful_lines() if x.payment_ids != (shop.id("s2"),)]
    run = shop.reconcile(shop.statement(lines), "--json").json()
    run_id = run["id"]

    listed = shop.run("reconciliations", "list")
    assert run_id in listed.stdout and "card" in listed.stdout
    shown = shop.json("reconciliations", "show", run_id)
    assert shown["summary"] == run["summary"]
    table = shop.run("reconciliations", "show", run_id)
    assert table_counts(table.stdout)["missing_in_statement"] == (1, "11.00")

    missing = shop.json("reconciliations", "items", run_id, "--category", "missing_in_statement")
    (item,) = missing["items"]
    assert item["payment_ids"] == [shop.id("s2")]
    everything = shop.json("reconciliations", "items", run_id)["items"]
    assert len(everything) == run["item_count"] == 4
    bad = shop.run("reconciliations", "items", run_id, "--category", "lost", ok=(2,))
    assert "category" in bad.stderr

    out = tmp_path / "export.csv"
    shop.run("reconciliations", "export", run_id, "-o", str(out))
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(int(r["item_index"]), r["category"]) for r in rows] == [
        (i["index"], i["category"]) for i in everything
    ]
    assert sorted(r["category"] for r in rows) == ["matched"] * 3 + ["missing_in_statement"]
    to_stdout = shop.run("reconciliations", "export", run_id, "--category", "matched")
    assert [r["category"] for r in csv.DictReader(io.StringIO(to_stdout.stdout))] == ["matched"] * 3

    noted = shop.json(
        "reconciliations", "annotate", run_id, str(item["index"]), "--note", "asked the acquirer"
    )
    assert noted["decision"] == "annotated"
    assert [n["note"] for n in noted["notes"]] == ["asked the acquirer"]
    assert noted["notes"][0]["by"].startswith("cli:")
    after = shop.json("reconciliations", "items", run_id, "--category", "missing_in_statement")
    assert after["items"][0]["notes"][0]["note"] == "asked the acquirer"


def test_a_correction_proposed_in_the_cli_needs_another_person(shop: Shop) -> None:
    lines = shop.faithful_lines()
    s2 = next(x for x in lines if x.payment_ids == (shop.id("s2"),))
    doctored = [replace(x, amount_minor=1150) if x is s2 else x for x in lines]
    run = shop.reconcile(shop.statement(doctored), "--json").json()
    (item,) = shop.json("reconciliations", "items", run["id"], "--category", "amount_mismatch")[
        "items"
    ]
    index = str(item["index"])
    clearing = run["balances"]["ledger"]["EUR"]["clearing_account_id"]
    before = signed_minor(shop.json("accounts", "show", clearing)["balance"])

    proposed = shop.json("reconciliations", "accept", run["id"], index, "--reason", "paid 11.50")
    assert proposed["decision"] == "correction_proposed"
    own = shop.run("reconciliations", "approve", run["id"], index, ok=(8,))
    assert "same_person_approval" in own.stderr or "second person" in own.stderr
    operator = shop.json("keys", "create", "--tenant", TENANT, "--role", "operator")["key"]
    approved = shop.json("reconciliations", "approve", run["id"], index, "--api-key", operator)
    assert approved["decision"] == "accepted"
    after = signed_minor(shop.json("accounts", "show", clearing)["balance"])
    assert after == before - 50  # debited by the 0.50 the channel paid more
    shop.run("reconciliations", "approve", run["id"], index, "--api-key", operator, ok=(4,))
    assert signed_minor(shop.json("accounts", "show", clearing)["balance"]) == after


def test_bad_statements_and_unknown_runs(shop: Shop) -> None:
    runs_before = shop.json("reconciliations", "list")["items"]
    good = shop.statement(shop.faithful_lines()).read_text().splitlines()
    fields = good[3].split(",")
    fields[3] = "12.3x"
    broken = shop.workdir / "broken.csv"
    broken.write_text("\n".join([*good[:3], ",".join(fields), *good[4:]]) + "\n")
    refused = shop.reconcile(broken, ok=(2,))
    assert "row 3" in refused.stderr and "amount" in refused.stderr

    empty = shop.workdir / "empty.csv"
    empty.write_bytes(b"")
    shop.reconcile(empty, ok=(2,))
    shop.run("reconcile", "--channel", "paypal", str(broken), ok=(2,))
    shop.reconcile(shop.statement(shop.faithful_lines()), "--period-start", "2026-13-01", ok=(2,))
    assert shop.json("reconciliations", "list")["items"] == runs_before

    unknown = "00000000-0000-4000-8000-000000000000"
    shop.run("reconciliations", "show", unknown, ok=(3,))
    shop.run("reconciliations", "items", unknown, ok=(3,))
    shop.run("reconciliations", "export", unknown, ok=(3,))


def test_reconcile_on_both_stores(
    database_url: str, cli_for: Callable[[str | None], Cli], tmp_path: Path
) -> None:
    shop = make_shop(cli_for, database_url, tmp_path)
    lines = shop.faithful_lines()
    body = shop.reconcile(shop.statement(lines), "--json").json()
    assert {c: t["count"] for c, t in body["summary"].items() if t["count"]} == {"matched": 4}
    assert body["balances"]["difference"] == "0.00"
    dropped = [x for x in lines if x.payment_ids != (shop.id("s1"),)]
    doctored = shop.reconcile(shop.statement(dropped, "dropped.csv"), "--json").json()
    assert {c: t["count"] for c, t in doctored["summary"].items() if t["count"]} == {
        "matched": 3,
        "missing_in_statement": 1,
    }
    assert len(shop.json("reconciliations", "list")["items"]) == 2
