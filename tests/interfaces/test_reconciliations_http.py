"""Reconciliation over real HTTP, on SQLite and PostgreSQL: card payments through the sandbox
(successes, a decline, a timeout that ends ``exception``), a statement written from what the
channel did, and that statement imported faithfully or doctored.

A faithful statement reconciles fully; each doctored one is reported in exactly the right
category and nothing else moves; 1:N and N:1 settlements match; a payment at the period's end
is ``timing``; an exception is resolved from its statement line; a correcting entry needs a
second person; the same file twice is one run; bad input records nothing; the queries, the
export and tenant isolation hold.

Each test has its own tenant (and API keys) on one server per store; the server's exception
resolver is off, so a timed-out payment stays ``exception`` until the test resolves it.
"""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from application.reconciliation.statements import StatementLine, write_csv_statement
from application.store import parse_database_url
from domain.money import parse_amount
from domain.reconciliations import CATEGORIES, RESULT_CHUNK, suspense_account_id
from interfaces.http.app import create_app
from tests.conftest import make_postgres_url, make_settings, require_postgres
from tests.interfaces.conftest import LiveServer, card, new_key, serving
from tests.interfaces.keys_helpers import HttpKey, issue, new_tenant, problem_code

OK_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"
TIMEOUT_CARD = "4000000000000119"  # charged, but the answer never comes: ``exception``
CURRENCY = "EUR"


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def recon_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """One server per store for the module (tests use their own tenants), with the exception
    resolver off: nothing but the test's own requests records events."""
    if request.param == "postgres":
        require_postgres()
        url = make_postgres_url()
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('recon') / 'payledger.sqlite3'}"
    try:
        with serving(create_app(make_settings(url, exception_resolver_interval_s=0))) as live:
            yield live
    finally:
        if request.param == "postgres":
            parse_database_url(url).drop()


def today() -> date:
    return datetime.now(UTC).date()


def minor(amount: str) -> int:
    return parse_amount(amount, CURRENCY)


@dataclass
class Shop:
    """One tenant: an admin (makes payments, proposes corrections), an operator (a second
    person), a merchant account, and the card payments made so far."""

    live: LiveServer
    tenant: str
    admin: HttpKey
    operator: HttpKey
    client: httpx.Client
    second: httpx.Client
    merchant: str
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)

    def pay(self, name: str, amount: str, number: str = OK_CARD) -> dict[str, Any]:
        response = self.client.post(
            "/v1/payments",
            json={
                "amount": amount,
                "currency": CURRENCY,
                "channel": "card",
                "payment_method": card(number),
                "payee_account_id": self.merchant,
            },
            headers={"Idempotency-Key": new_key()},
        )
        assert response.status_code == 201, response.text
        self.payments[name] = response.json()
        return response.json()  # type: ignore[no-any-return]

    def listed(self) -> dict[str, dict[str, Any]]:
        """The card payments as GET /v1/payments shows them, by id."""
        response = self.client.get(
            "/v1/payments",
            params={
                "channel": "card",
                "limit": 500,
                "wait_for_position": self.live.notification_position(),
            },
        )
        assert response.status_code == 200, response.text
        return {p["id"]: p for p in response.json()["items"]}

    def id(self, name: str) -> str:
        return str(self.payments[name]["id"])

    def channel_reference(self, payment_id: str) -> str | None:
        """What the card channel itself knows about a payment (also one that timed out)."""
        known = asyncio.run(self.live.service.channels["card"].status(uuid.UUID(payment_id)))
        return None if known is None else known.reference

    def faithful_lines(self, booked_on: date | None = None) -> list[StatementLine]:
        """One line per payment the channel saw, as it saw it: settled for what it charged
        (a timed-out payment was charged too), failed for what it declined."""
        listed = self.listed()
        lines = []
        for name, made in self.payments.items():
            p = listed[made["id"]]
            status = "failed" if p["status"] == "failed" else "settled"
            reference = p["channel_reference"] or self.channel_reference(p["id"])
            lines.append(
                StatementLine(
                    len(lines) + 1,
                    reference,
                    (p["id"],),
                    minor(p["amount"]),
                    p["currency"],
                    "credit",
                    status,
                    booked_on or today(),
                    f"E-{name}",
                )
            )
        return lines

    def line(self, lines: list[StatementLine], name: str) -> StatementLine:
        return next(x for x in lines if x.payment_ids == (self.id(name),))

    def reconcile(
        self,
        content: bytes,
        *,
        client: httpx.Client | None = None,
        filename: str = "statement.csv",
        **form: Any,
    ) -> httpx.Response:
        data = {
            "channel": "card",
            "period_start": today().isoformat(),
            "period_end": today().isoformat(),
            "timing_window_minutes": "0",
        }
        data.update({k: str(v) for k, v in form.items()})
        data = {k: v for k, v in data.items() if v != "None"}
        return (client or self.client).post(
            "/v1/reconciliations", data=data, files={"file": (filename, content, "text/csv")}
        )

    def run(self, lines: list[StatementLine], **form: Any) -> dict[str, Any]:
        response = self.reconcile(csv_bytes(lines), **form)
        assert response.status_code == 201, response.text
        run: dict[str, Any] = response.json()
        assert run["status"] == "completed"
        return run

    def items(self, run_id: str, category: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": 1000}
        if category:
            params["category"] = category
        response = self.client.get(f"/v1/reconciliations/{run_id}/items", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["next_cursor"] is None
        return body["items"]  # type: ignore[no-any-return]

    def balance(self, account_id: str) -> str:
        response = self.client.get(f"/v1/accounts/{account_id}")
        assert response.status_code == 200, response.text
        return str(response.json()["balance"])


def csv_bytes(lines: list[StatementLine]) -> bytes:
    out = io.StringIO()
    write_csv_statement(lines, out)
    return out.getvalue().encode()


def renumbered(lines: list[StatementLine]) -> list[StatementLine]:
    return [replace(x, line_no=n) for n, x in enumerate(lines, 1)]


def expect(**nonzero: tuple[int, str]) -> dict[str, dict[str, Any]]:
    """The whole summary: every category zero but those given as (count, amount)."""
    unknown = set(nonzero) - set(CATEGORIES)
    assert not unknown, unknown
    summary = {c: {"count": 0, "amount": "0.00"} for c in CATEGORIES}
    for category, (count, amount) in nonzero.items():
        summary[category] = {"count": count, "amount": amount}
    return summary


def new_shop(live: LiveServer) -> Iterator[Shop]:
    tenant = new_tenant()
    admin = issue(live.service, tenant, "admin")
    operator = issue(live.service, tenant, "operator")
    with admin.client(live.base_url) as client, operator.client(live.base_url) as second:
        opened = client.post(
            "/v1/accounts", json={"owner": "shop", "currency": CURRENCY, "kind": "merchant"}
        )
        assert opened.status_code == 201, opened.text
        yield Shop(live, tenant, admin, operator, client, second, opened.json()["id"])


@pytest.fixture
def shop(recon_server: LiveServer) -> Iterator[Shop]:
    """Four card payments that succeed (10.00 to 13.00) and one declined (14.00)."""
    for made in new_shop(recon_server):
        for i, name in enumerate(("s1", "s2", "s3", "s4")):
            assert made.pay(name, f"{10 + i}.00")["status"] == "succeeded"
        assert made.pay("declined", "14.00", DECLINED_CARD)["status"] == "failed"
        yield made


# --- a faithful statement -----------------------------------------------------------------------

FAITHFUL = expect(matched=(5, "60.00"))


def test_a_faithful_statement_reconciles_fully(shop: Shop) -> None:
    lines = shop.faithful_lines()
    run = shop.run(lines)

    assert run["summary"] == FAITHFUL
    assert run["discrepancy_count"] == 0
    assert (run["channel"], run["format"], run["line_count"], run["item_count"]) == (
        "card",
        "csv",
        5,
        5,
    )
    assert (run["period_start"], run["period_end"]) == (today().isoformat(),) * 2
    assert run["started_by"] == f"key:{shop.admin.id}"
    balances = run["balances"]
    assert balances["currency"] == CURRENCY
    assert balances["statement_net_settled"] == "46.00"  # the decline settles nothing
    assert balances["ledger_expected_net"] == "46.00"
    assert balances["difference"] == "0.00"
    items = shop.items(run["id"])
    assert [i["category"] for i in items] == ["matched"] * 5
    by_payment = {i["payment_ids"][0]: i for i in items}
    assert set(by_payment) == {p["id"] for p in shop.payments.values()}
    for name, made in shop.payments.items():
        item = by_payment[made["id"]]
        assert item["statement_amount"] == item["ledger_amount"] == made["amount"]
        assert item["ledger_status"] == made["status"]
        assert item["reference"] == made["channel_reference"]
        assert item["line_no"] == shop.line(lines, name).line_no


# --- doctored statements: each in exactly its category -------------------------------------------


def _drop(shop: Shop, lines: list[StatementLine]) -> list[StatementLine]:
    return renumbered([x for x in lines if x is not shop.line(lines, "s2")])


def _amount(shop: Shop, lines: list[StatementLine]) -> list[StatementLine]:
    s2 = shop.line(lines, "s2")
    return [replace(x, amount_minor=1150) if x is s2 else x for x in lines]


def _extra(shop: Shop, lines: list[StatementLine]) -> list[StatementLine]:
    stranger = StatementLine(
        len(lines) + 1,
        "card_nobody_we_know_0001",
        (),
        500,
        CURRENCY,
        "credit",
        "settled",
        today(),
        "E-extra",
    )
    return [*lines, stranger]


def _flip(shop: Shop, lines: list[StatementLine]) -> list[StatementLine]:
    s2 = shop.line(lines, "s2")
    return [replace(x, status="failed") if x is s2 else x for x in lines]


def _settle_declined(shop: Shop, lines: list[StatementLine]) -> list[StatementLine]:
    declined = shop.line(lines, "declined")
    return [replace(x, status="settled") if x is declined else x for x in lines]


def _duplicate(shop: Shop, lines: list[StatementLine]) -> list[StatementLine]:
    return renumbered([*lines, shop.line(lines, "s2")])


def _duplicate_new_entry(shop: Shop, lines: list[StatementLine]) -> list[StatementLine]:
    """The channel settles the same charge twice, each booking with its own entry id."""
    return renumbered([*lines, replace(shop.line(lines, "s2"), entry_ref="E-s2-again")])


@dataclass(frozen=True)
class Doctoring:
    doctor: Callable[[Shop, list[StatementLine]], list[StatementLine]]
    summary: dict[str, dict[str, Any]]
    category: str
    about: str | None  # the payment the discrepancy names (None: a line of nobody's)
    difference: str  # statement net settled - what the ledger expects
    also_matched: bool = False  # the payment has a matched line too (a duplicate's original)


DOCTORINGS = {
    "dropped_line": Doctoring(
        _drop,
        expect(matched=(4, "49.00"), missing_in_statement=(1, "11.00")),
        "missing_in_statement",
        "s2",
        "-11.00",
    ),
    "changed_amount": Doctoring(
        _amount,
        expect(matched=(4, "49.00"), amount_mismatch=(1, "11.50")),
        "amount_mismatch",
        "s2",
        "0.50",
    ),
    "extra_line": Doctoring(
        _extra,
        expect(matched=(5, "60.00"), missing_in_ledger=(1, "5.00")),
        "missing_in_ledger",
        None,
        "5.00",
    ),
    "settled_marked_failed": Doctoring(
        _flip,
        expect(matched=(4, "49.00"), status_mismatch=(1, "11.00")),
        "status_mismatch",
        "s2",
        "-11.00",
    ),
    "declined_marked_settled": Doctoring(
        _settle_declined,
        expect(matched=(4, "46.00"), status_mismatch=(1, "14.00")),
        "status_mismatch",
        "declined",
        "14.00",
    ),
    "duplicated_line": Doctoring(
        _duplicate,
        expect(matched=(5, "60.00"), duplicate_in_statement=(1, "11.00")),
        "duplicate_in_statement",
        "s2",
        "11.00",
        True,
    ),
    "settled_twice_new_entry_ref": Doctoring(
        _duplicate_new_entry,
        expect(matched=(5, "60.00"), duplicate_in_statement=(1, "11.00")),
        "duplicate_in_statement",
        "s2",
        "11.00",
        True,
    ),
}


@pytest.mark.parametrize("name", list(DOCTORINGS))
def test_a_doctored_statement_is_reported_in_exactly_its_category(shop: Shop, name: str) -> None:
    case = DOCTORINGS[name]
    run = shop.run(case.doctor(shop, shop.faithful_lines()))

    assert run["summary"] == case.summary
    assert run["discrepancy_count"] == 1
    assert run["balances"]["difference"] == case.difference
    found = shop.items(run["id"], case.category)
    assert len(found) == 1, found
    (item,) = found
    if case.about is None:
        assert item["payment_ids"] == [] and item["ledger_amount"] is None
        assert item["reference"] == "card_nobody_we_know_0001"
    else:
        assert item["payment_ids"] == [shop.id(case.about)]
        assert item["ledger_amount"] == shop.payments[case.about]["amount"]
    everything = shop.items(run["id"])
    assert {i["category"] for i in everything} == {"matched", case.category}
    matched_ids = {
        pid for i in everything if i["category"] == "matched" for pid in i["payment_ids"]
    }
    untouched = {p["id"] for n, p in shop.payments.items() if n != case.about or case.also_matched}
    assert matched_ids == untouched  # nothing else changed


def test_a_changed_amount_shows_both_amounts(shop: Shop) -> None:
    run = shop.run(_amount(shop, shop.faithful_lines()))
    (item,) = shop.items(run["id"], "amount_mismatch")
    assert (item["statement_amount"], item["ledger_amount"]) == ("11.50", "11.00")
    assert (item["statement_status"], item["ledger_status"]) == ("settled", "succeeded")


# --- 1:N and N:1 ---------------------------------------------------------------------------------


def _one_line_for_three(shop: Shop, total_minor: int) -> list[StatementLine]:
    lines = shop.faithful_lines()
    three = tuple(shop.id(n) for n in ("s1", "s2", "s3"))
    batch = StatementLine(
        1,
        "card_settlement_batch_1",
        three,
        total_minor,
        CURRENCY,
        "credit",
        "settled",
        today(),
        "E-batch",
    )
    rest = [x for x in lines if x.payment_ids[0] not in three]
    return renumbered([batch, *rest])


def test_one_line_settling_several_payments_matches(shop: Shop) -> None:
    run = shop.run(_one_line_for_three(shop, 3300))

    assert run["summary"] == expect(matched=(3, "60.00"))
    assert run["balances"]["difference"] == "0.00"
    batch = next(i for i in shop.items(run["id"]) if i["line_no"] == 1)
    assert batch["category"] == "matched"
    assert sorted(batch["payment_ids"]) == sorted(shop.id(n) for n in ("s1", "s2", "s3"))
    assert (batch["statement_amount"], batch["ledger_amount"]) == ("33.00", "33.00")


def test_one_line_for_several_payments_with_a_wrong_total_is_an_amount_mismatch(
    shop: Shop,
) -> None:
    run = shop.run(_one_line_for_three(shop, 3301))

    assert run["summary"] == expect(matched=(2, "27.00"), amount_mismatch=(1, "33.01"))
    (item,) = shop.items(run["id"], "amount_mismatch")
    assert (item["line_no"], item["statement_amount"], item["ledger_amount"]) == (
        1,
        "33.01",
        "33.00",
    )
    assert len(item["payment_ids"]) == 3


def test_two_lines_splitting_one_payment_match(shop: Shop) -> None:
    lines = shop.faithful_lines()
    s1 = shop.line(lines, "s1")
    split = [
        replace(s1, amount_minor=400, entry_ref="E-s1-a"),
        replace(s1, amount_minor=600, entry_ref="E-s1-b"),
    ]
    run = shop.run(renumbered([*split, *(x for x in lines if x is not s1)]))

    assert run["summary"] == expect(matched=(6, "60.00"))
    assert run["balances"]["difference"] == "0.00"
    halves = [i for i in shop.items(run["id"]) if i["payment_ids"] == [shop.id("s1")]]
    assert sorted(i["statement_amount"] for i in halves) == ["4.00", "6.00"]
    assert {i["category"] for i in halves} == {"matched"}


# --- timing --------------------------------------------------------------------------------------


def test_a_payment_at_the_end_of_the_period_is_timing_not_missing(shop: Shop) -> None:
    """Completed within ``timing_window_minutes`` of the period's end and absent: it is
    expected in the next statement."""
    lines = renumbered([x for x in shop.faithful_lines() if x.payment_ids != (shop.id("s4"),)])
    run = shop.run(lines, timing_window_minutes=1440)

    assert run["summary"] == expect(matched=(4, "47.00"), timing=(1, "13.00"))
    assert run["discrepancy_count"] == 0
    (item,) = shop.items(run["id"], "timing")
    assert item["payment_ids"] == [shop.id("s4")]
    assert item["line_no"] is None


# --- an exception resolved from the statement -----------------------------------------------------


def test_an_exception_settled_by_the_channel_is_resolved_to_succeeded(shop: Shop) -> None:
    made = shop.pay("timeout", "15.00", TIMEOUT_CARD)
    assert made["status"] == "exception"
    before = shop.balance(shop.merchant)
    assert before == "46.00"
    run = shop.run(shop.faithful_lines())

    assert run["summary"] == expect(matched=(5, "60.00"), status_mismatch=(1, "15.00"))
    (item,) = shop.items(run["id"], "status_mismatch")
    assert item["payment_ids"] == [made["id"]]
    assert (item["statement_status"], item["ledger_status"]) == ("settled", "exception")

    resolved = shop.second.post(
        f"/v1/reconciliations/{run['id']}/items/{item['index']}/resolve-exception",
        json={"reason": "settled on the card statement"},
    )
    assert resolved.status_code == 200, resolved.text
    decided = resolved.json()
    assert decided["decision"] == "exception_resolved_succeeded"
    assert decided["decided_by"] == f"key:{shop.operator.id}"
    assert any(n["note"] == "settled on the card statement" for n in decided["notes"])
    payment = shop.client.get(f"/v1/payments/{made['id']}")
    assert payment.status_code == 200 and payment.json()["status"] == "succeeded"
    assert shop.balance(shop.merchant) == "61.00"  # 46.00 + 15.00, once

    again = shop.second.post(
        f"/v1/reconciliations/{run['id']}/items/{item['index']}/resolve-exception",
        json={"reason": "once more"},
    )
    assert again.status_code == 409, again.text
    assert shop.balance(shop.merchant) == "61.00"
    (after,) = shop.items(run["id"], "status_mismatch")
    assert after["decision"] == "exception_resolved_succeeded"


def test_resolve_exception_on_an_item_without_one_is_refused(shop: Shop) -> None:
    run = shop.run(shop.faithful_lines())
    position = shop.live.notification_position()
    refused = shop.second.post(
        f"/v1/reconciliations/{run['id']}/items/0/resolve-exception", json={"reason": "no"}
    )
    assert refused.status_code == 409, refused.text
    assert shop.live.notification_position() == position


# --- the same file twice --------------------------------------------------------------------------


def test_importing_the_same_statement_again_answers_the_earlier_run(shop: Shop) -> None:
    content = csv_bytes(shop.faithful_lines())
    first = shop.reconcile(content)
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    position = shop.live.notification_position()

    for filename in ("statement.csv", "renamed.csv"):
        again = shop.reconcile(content, filename=filename)
        assert again.status_code == 200, again.text
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json()["id"] == first.json()["id"]
        assert again.json()["summary"] == first.json()["summary"]
    assert shop.live.notification_position() == position  # nothing recorded
    listed = shop.client.get("/v1/reconciliations").json()["items"]
    assert [r["id"] for r in listed] == [first.json()["id"]]


# --- a correcting entry, four eyes ---------------------------------------------------------------


def test_an_accepted_difference_is_posted_once_a_second_person_approves(shop: Shop) -> None:
    run = shop.run(_amount(shop, shop.faithful_lines()))
    (item,) = shop.items(run["id"], "amount_mismatch")
    clearing = run["balances"]["ledger"][CURRENCY]["clearing_account_id"]
    assert shop.balance(clearing) == "-46.00"
    base = f"/v1/reconciliations/{run['id']}/items/{item['index']}"

    proposed = shop.client.post(f"{base}/accept", json={"reason": "the channel paid 11.50"})
    assert proposed.status_code == 200, proposed.text
    assert proposed.json()["decision"] == "correction_proposed"
    proposal = proposed.json()["proposal"]
    assert (proposal["amount"], proposal["currency"], proposal["clearing_side"]) == (
        "0.50",
        CURRENCY,
        "debit",
    )
    assert shop.balance(clearing) == "-46.00"  # nothing posted before the approval

    position = shop.live.notification_position()
    own = shop.client.post(f"{base}/approve")
    assert own.status_code == 403, own.text
    assert problem_code(own) == "same_person_approval"
    assert shop.live.notification_position() == position

    approved = shop.second.post(f"{base}/approve")
    assert approved.status_code == 200, approved.text
    assert approved.json()["decision"] == "accepted"
    assert approved.json()["decided_by"] == f"key:{shop.operator.id}"
    # The channel owes 0.50 more than the ledger had: clearing is debited by the difference.
    assert shop.balance(clearing) == "-46.50"
    suspense = str(suspense_account_id(shop.tenant, "card", CURRENCY))
    assert shop.balance(suspense) == "0.50"

    position = shop.live.notification_position()
    twice = shop.second.post(f"{base}/approve")
    assert twice.status_code == 409, twice.text
    again = shop.client.post(f"{base}/accept", json={"reason": "again"})
    assert again.status_code == 409, again.text
    assert shop.live.notification_position() == position
    assert shop.balance(clearing) == "-46.50"


def test_accept_on_a_matched_item_or_without_a_proposal_is_refused(shop: Shop) -> None:
    run = shop.run(_amount(shop, shop.faithful_lines()))
    matched = shop.items(run["id"], "matched")[0]
    (mismatch,) = shop.items(run["id"], "amount_mismatch")
    position = shop.live.notification_position()

    refused = shop.client.post(
        f"/v1/reconciliations/{run['id']}/items/{matched['index']}/accept", json={"reason": "x"}
    )
    assert refused.status_code == 409, refused.text
    unproposed = shop.second.post(
        f"/v1/reconciliations/{run['id']}/items/{mismatch['index']}/approve"
    )
    assert unproposed.status_code == 409, unproposed.text
    missing = shop.client.post(
        f"/v1/reconciliations/{run['id']}/items/999/accept", json={"reason": "x"}
    )
    assert missing.status_code == 404, missing.text
    assert shop.live.notification_position() == position


def test_a_missing_payment_accepted_credits_the_clearing_account(shop: Shop) -> None:
    run = shop.run(_drop(shop, shop.faithful_lines()))
    (item,) = shop.items(run["id"], "missing_in_statement")
    clearing = run["balances"]["ledger"][CURRENCY]["clearing_account_id"]
    base = f"/v1/reconciliations/{run['id']}/items/{item['index']}"
    proposed = shop.second.post(f"{base}/accept", json={"reason": "never settled"})
    assert proposed.status_code == 200, proposed.text
    assert proposed.json()["proposal"]["clearing_side"] == "credit"
    approved = shop.client.post(f"{base}/approve")
    assert approved.status_code == 200, approved.text
    assert shop.balance(clearing) == "-35.00"  # -46.00 + 11.00


def test_annotating_an_item_records_the_note(shop: Shop) -> None:
    run = shop.run(_extra(shop, shop.faithful_lines()))
    (item,) = shop.items(run["id"], "missing_in_ledger")
    noted = shop.client.post(
        f"/v1/reconciliations/{run['id']}/items/{item['index']}/annotate",
        json={"note": "asked the acquirer"},
    )
    assert noted.status_code == 200, noted.text
    body = noted.json()
    assert body["decision"] == "annotated"
    assert [n["note"] for n in body["notes"]] == ["asked the acquirer"]
    (after,) = shop.items(run["id"], "missing_in_ledger")
    assert after["notes"][0]["note"] == "asked the acquirer"


# --- bad input changes nothing --------------------------------------------------------------------


def _csv_with(shop: Shop, edit: Callable[[list[str]], list[str]]) -> bytes:
    rows = csv_bytes(shop.faithful_lines()).decode().splitlines()
    return ("\n".join(edit(rows)) + "\n").encode()


def _bad_amount_row3(rows: list[str]) -> list[str]:
    fields = rows[3].split(",")
    fields[3] = "12.3x"
    return [*rows[:3], ",".join(fields), *rows[4:]]


def _usd_row2(rows: list[str]) -> list[str]:
    return [*rows[:2], rows[2].replace(",EUR,", ",USD,"), *rows[3:]]


BAD_INPUT: dict[str, tuple[dict[str, Any], Callable[[Shop], bytes] | None, str]] = {
    "no_channel": ({"channel": None}, None, "channel"),
    "no_period_and_no_lines": (
        {"period_start": None, "period_end": None},
        lambda s: _csv_with(s, lambda r: r[:1]),
        "period_start",
    ),
    "bad_period_start": ({"period_start": "2026-02-30"}, None, "period_start"),
    "bad_period_end": ({"period_end": "tomorrow"}, None, "period_end"),
    "end_before_start": (
        {"period_start": "2026-03-02", "period_end": "2026-03-01"},
        None,
        "period_end",
    ),
    "unknown_channel": ({"channel": "paypal"}, None, "channel"),
    "bad_tolerance": ({"tolerance_days": "99"}, None, "tolerance_days"),
    "bad_window": ({"timing_window_minutes": "soon"}, None, "timing_window_minutes"),
    "window_too_long": ({"timing_window_minutes": "1441"}, None, "timing_window_minutes"),
    "negative_tolerance": ({"tolerance_days": "-1"}, None, "tolerance_days"),
    "period_too_long": (
        {"period_start": "2025-01-01", "period_end": "2026-03-01"},
        None,
        "period_end",
    ),
    "bad_amount_on_line_3": ({}, lambda s: _csv_with(s, _bad_amount_row3), "row 3: amount"),
    "mixed_currencies": ({}, lambda s: _csv_with(s, _usd_row2), "line 2.currency"),
    "missing_column": (
        {},
        lambda s: _csv_with(s, lambda r: [r[0].replace("status", "state"), *r[1:]]),
        "status",
    ),
    "empty_file": ({}, lambda s: b"", "file"),
    "blank_file": ({}, lambda s: b"\n  \n", "file"),
}


def test_the_period_defaults_to_the_statements_booking_dates(shop: Shop) -> None:
    """Without period fields the statement's own first and last booking dates are the period;
    an ISO time is taken for its date."""
    body = csv_bytes(shop.faithful_lines())
    response = shop.reconcile(body, period_start=None, period_end=None)
    assert response.status_code == 201, response.text
    run = response.json()
    assert (run["period_start"], run["period_end"]) == (today().isoformat(),) * 2
    assert run["summary"] == FAITHFUL
    other = _csv_with(shop, lambda rows: rows[:-1])  # another file: a new run
    timed = shop.reconcile(other, period_start=f"{today().isoformat()}T00:00:00Z", period_end=None)
    assert timed.status_code == 201, timed.text
    assert timed.json()["period_start"] == today().isoformat()


@pytest.mark.parametrize("name", list(BAD_INPUT))
def test_bad_input_is_refused_and_records_nothing(shop: Shop, name: str) -> None:
    form, content, field_name = BAD_INPUT[name]
    body = content(shop) if content is not None else csv_bytes(shop.faithful_lines())
    position = shop.live.notification_position()

    response = shop.reconcile(body, **form)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    fields = [e["field"] for e in response.json()["errors"]]
    assert any(field_name in f for f in fields), (fields, response.text)
    assert shop.live.notification_position() == position
    assert shop.client.get("/v1/reconciliations").json()["items"] == []


def test_a_request_without_a_file_is_refused(shop: Shop) -> None:
    position = shop.live.notification_position()
    response = shop.client.post(
        "/v1/reconciliations",
        data={"channel": "card", "period_start": "2026-01-01", "period_end": "2026-01-01"},
        files={"other": ("x.txt", b"hello", "text/plain")},
    )
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["file"]
    not_multipart = shop.client.post("/v1/reconciliations", json={"channel": "card"})
    assert not_multipart.status_code in (415, 422), not_multipart.text
    assert shop.live.notification_position() == position


def test_the_bad_amount_error_names_the_row_and_the_value(shop: Shop) -> None:
    response = shop.reconcile(_csv_with(shop, _bad_amount_row3))
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error["field"] == "row 3: amount"
    assert "12.3x" in error["reason"]


# --- queries, export, isolation, permissions ------------------------------------------------------


def test_runs_items_pagination_and_export(shop: Shop) -> None:
    faithful = shop.run(shop.faithful_lines())
    dropped = shop.run(_drop(shop, shop.faithful_lines()))
    extra = shop.run(_extra(shop, shop.faithful_lines()))

    listed = shop.client.get("/v1/reconciliations")
    assert listed.status_code == 200
    assert [r["id"] for r in listed.json()["items"]] == [extra["id"], dropped["id"], faithful["id"]]
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 1} | ({"cursor": cursor} if cursor else {})
        page = shop.client.get("/v1/reconciliations", params=params).json()
        seen += [r["id"] for r in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [extra["id"], dropped["id"], faithful["id"]]
    other_channel = shop.client.get("/v1/reconciliations", params={"channel": "alipay"})
    assert other_channel.json()["items"] == []

    one = shop.client.get(f"/v1/reconciliations/{dropped['id']}")
    assert one.status_code == 200
    assert one.json()["summary"] == dropped["summary"]
    assert one.json()["balances"] == dropped["balances"]

    missing = shop.items(dropped["id"], "missing_in_statement")
    assert [i["payment_ids"] for i in missing] == [[shop.id("s2")]]
    assert shop.items(dropped["id"], "amount_mismatch") == []

    indexes, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = shop.client.get(f"/v1/reconciliations/{faithful['id']}/items", params=params)
        assert page.status_code == 200
        assert len(page.json()["items"]) <= 2
        indexes += [i["index"] for i in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert indexes == list(range(5))

    bad_cursor = shop.client.get(
        f"/v1/reconciliations/{faithful['id']}/items", params={"cursor": "not-a-cursor"}
    )
    assert bad_cursor.status_code == 422, bad_cursor.text
    bad_list_cursor = shop.client.get("/v1/reconciliations", params={"cursor": "garbage"})
    assert bad_list_cursor.status_code == 422, bad_list_cursor.text
    bad_category = shop.client.get(
        f"/v1/reconciliations/{faithful['id']}/items", params={"category": "lost"}
    )
    assert bad_category.status_code == 422

    exported = shop.client.get(f"/v1/reconciliations/{extra['id']}/export")
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    assert "attachment" in exported.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    items = shop.items(extra["id"])
    assert len(rows) == len(items) == extra["item_count"] == 6
    assert [(int(r["item_index"]), r["category"]) for r in rows] == [
        (i["index"], i["category"]) for i in items
    ]
    stranger = next(r for r in rows if r["category"] == "missing_in_ledger")
    assert (stranger["statement_amount"], stranger["ledger_amount"], stranger["payment_ids"]) == (
        "5.00",
        "",
        "",
    )
    for row in rows:
        if row["category"] == "matched":
            assert row["statement_amount"] == row["ledger_amount"] != ""
    only = shop.client.get(
        f"/v1/reconciliations/{extra['id']}/export", params={"category": "missing_in_ledger"}
    )
    assert [r["category"] for r in csv.DictReader(io.StringIO(only.text))] == ["missing_in_ledger"]


def test_unknown_and_other_tenants_runs_are_not_found(shop: Shop, recon_server: LiveServer) -> None:
    run = shop.run(shop.faithful_lines())
    unknown = uuid.uuid4()
    for path in ("", "/items", "/export"):
        response = shop.client.get(f"/v1/reconciliations/{unknown}{path}")
        assert response.status_code == 404, (path, response.text)

    other = issue(recon_server.service, new_tenant(), "admin")
    with other.client(recon_server.base_url) as stranger:
        for path in ("", "/items", "/export"):
            response = stranger.get(f"/v1/reconciliations/{run['id']}{path}")
            assert response.status_code == 404, (path, response.text)
        assert stranger.get("/v1/reconciliations").json()["items"] == []
        position = recon_server.notification_position()
        for action, body in (
            ("annotate", {"note": "x"}),
            ("accept", {"reason": "x"}),
            ("approve", None),
        ):
            response = stranger.post(f"/v1/reconciliations/{run['id']}/items/0/{action}", json=body)
            assert response.status_code == 404, (action, response.text)
        assert recon_server.notification_position() == position
        # The same file in another tenant is another tenant's run, not a replay of this one.
        theirs = stranger.post(
            "/v1/reconciliations",
            data={
                "channel": "card",
                "period_start": today().isoformat(),
                "period_end": today().isoformat(),
            },
            files={"file": ("s.csv", csv_bytes(shop.faithful_lines()), "text/csv")},
        )
        assert theirs.status_code == 201, theirs.text
        assert theirs.json()["id"] != run["id"]
        assert theirs.json()["summary"]["missing_in_ledger"]["count"] == 5


def test_roles_without_the_permission_are_forbidden(shop: Shop, recon_server: LiveServer) -> None:
    run = shop.run(shop.faithful_lines())
    submitter = issue(recon_server.service, shop.tenant, "submitter")
    auditor = issue(recon_server.service, shop.tenant, "auditor")
    position = recon_server.notification_position()
    with submitter.client(recon_server.base_url) as c:
        for path in (
            "/v1/reconciliations",
            f"/v1/reconciliations/{run['id']}",
            f"/v1/reconciliations/{run['id']}/items",
            f"/v1/reconciliations/{run['id']}/export",
        ):
            response = c.get(path)
            assert response.status_code == 403, (path, response.text)
            assert problem_code(response) == "forbidden"
        posted = shop.reconcile(csv_bytes(_drop(shop, shop.faithful_lines())), client=c)
        assert posted.status_code == 403, posted.text
    with auditor.client(recon_server.base_url) as c:
        assert c.get(f"/v1/reconciliations/{run['id']}").status_code == 200
        posted = shop.reconcile(csv_bytes(_drop(shop, shop.faithful_lines())), client=c)
        assert posted.status_code == 403, posted.text
        noted = c.post(f"/v1/reconciliations/{run['id']}/items/0/annotate", json={"note": "x"})
        assert noted.status_code == 403, noted.text
    assert recon_server.notification_position() == position


# --- camt.053 ------------------------------------------------------------------------------------


def test_a_camt053_statement_of_the_same_payments_reconciles_fully(shop: Shop) -> None:
    camt053 = pytest.importorskip("application.reconciliation.camt053")
    if not hasattr(camt053, "write_camt053"):
        pytest.skip("application.reconciliation.camt053 has no write_camt053 yet")
    out = io.BytesIO()
    camt053.write_camt053(
        shop.faithful_lines(),
        account_iban="DE89370400440532013000",
        currency=CURRENCY,
        statement_date=today(),
        opening_balance_minor=100_00,
        out=out,
    )
    response = shop.reconcile(out.getvalue(), filename="statement.xml")
    assert response.status_code == 201, response.text
    run = response.json()

    assert run["format"] == "camt053"
    # A bank statement carries no declined charge: the decline has no line and is not expected.
    assert run["summary"] == expect(matched=(4, "46.00"))
    assert run["discrepancy_count"] == 0
    balances = run["balances"]
    assert balances["difference"] == "0.00"
    assert balances["statement_opening_balance"] == "100.00"
    assert balances["statement_closing_balance"] == "146.00"
    ids = {pid for i in shop.items(run["id"]) for pid in i["payment_ids"]}
    assert ids == {shop.id(n) for n in ("s1", "s2", "s3", "s4")}


def test_the_period_limits_what_is_expected(shop: Shop) -> None:
    """Payments outside the period are not expected in the statement: an empty day before
    today has nothing missing."""
    yesterday = today() - timedelta(days=1)
    line = StatementLine(
        1, "card_of_yesterday_000001", (), 700, CURRENCY, "credit", "settled", yesterday, "E-y"
    )
    run = shop.run([line], period_start=yesterday.isoformat(), period_end=yesterday.isoformat())
    assert run["summary"] == expect(missing_in_ledger=(1, "7.00"))


def test_a_payment_settled_alone_and_in_a_batch_line_is_not_all_matched(shop: Shop) -> None:
    """s1 has its own line and is also one of the three a 1:N line settles: the channel paid it
    twice. That is a discrepancy about s1, not two matches."""
    lines = shop.faithful_lines()
    three = tuple(shop.id(n) for n in ("s1", "s2", "s3"))
    batch = StatementLine(
        1,
        "card_settlement_batch_2",
        three,
        3300,
        CURRENCY,
        "credit",
        "settled",
        today(),
        "E-batch",
    )
    rest = [x for x in lines if x.payment_ids[0] not in three[1:]]  # s1's own line stays
    run = shop.run(renumbered([batch, *rest]))

    assert run["balances"]["difference"] == "10.00"
    assert run["discrepancy_count"] >= 1, run["summary"]
    flagged = [
        i
        for i in shop.items(run["id"])
        if i["category"] in ("duplicate_in_statement", "amount_mismatch")
        and shop.id("s1") in i["payment_ids"]
    ]
    assert flagged, shop.items(run["id"])


def test_an_exception_the_channel_does_not_list_is_resolved_to_failed(shop: Shop) -> None:
    made = shop.pay("timeout", "15.00", TIMEOUT_CARD)
    assert made["status"] == "exception"
    lines = [x for x in shop.faithful_lines() if x.payment_ids != (made["id"],)]
    run = shop.run(lines)

    assert run["summary"] == expect(matched=(5, "60.00"), missing_in_statement=(1, "15.00"))
    (item,) = shop.items(run["id"], "missing_in_statement")
    assert (item["payment_ids"], item["ledger_status"]) == ([made["id"]], "exception")
    accept = shop.client.post(
        f"/v1/reconciliations/{run['id']}/items/{item['index']}/resolve-exception",
        json={"reason": "not on the card statement"},
    )
    assert accept.status_code == 200, accept.text
    assert accept.json()["decision"] == "exception_resolved_failed"
    payment = shop.client.get(f"/v1/payments/{made['id']}").json()
    assert payment["status"] == "failed"
    assert shop.balance(shop.merchant) == "46.00"


def test_timing_and_status_items_take_no_correcting_entry(shop: Shop) -> None:
    lines = _flip(shop, shop.faithful_lines())
    lines = renumbered([x for x in lines if x.payment_ids != (shop.id("s4"),)])
    run = shop.run(lines, timing_window_minutes=1440)
    assert run["summary"]["timing"]["count"] == 1
    assert run["summary"]["status_mismatch"]["count"] == 1
    position = shop.live.notification_position()
    for category in ("timing", "status_mismatch"):
        (item,) = shop.items(run["id"], category)
        refused = shop.client.post(
            f"/v1/reconciliations/{run['id']}/items/{item['index']}/accept", json={"reason": "x"}
        )
        assert refused.status_code == 409, (category, refused.text)
    assert shop.live.notification_position() == position


def test_concurrent_imports_of_one_statement_make_one_run(shop: Shop) -> None:
    content = csv_bytes(shop.faithful_lines())
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: shop.reconcile(content), range(4)))
    codes = sorted(a.status_code for a in answers)
    assert codes.count(201) == 1, [(a.status_code, a.text[:200]) for a in answers]
    assert set(codes) <= {200, 201, 409}, codes
    ids = {a.json()["id"] for a in answers if a.status_code in (200, 201)}
    assert len(ids) == 1
    for answer in answers:
        if answer.status_code == 409:
            assert problem_code(answer) == "reconciliation_in_progress"
    later = shop.reconcile(content)
    assert later.status_code == 200 and later.json()["id"] in ids
    assert later.json()["summary"] == FAITHFUL
    assert len(shop.client.get("/v1/reconciliations").json()["items"]) == 1


def test_a_statement_larger_than_one_result_chunk(shop: Shop) -> None:
    """More items than one ``ReconciliationChunk`` holds: every one is kept, in order."""
    lines = shop.faithful_lines()
    strangers = [
        StatementLine(
            0, f"card_unknown_{n:08d}", (), 100 + n, CURRENCY, "credit", "settled", today(), None
        )
        for n in range(RESULT_CHUNK + 10)
    ]
    run = shop.run(renumbered([*lines, *strangers]))
    total = sum(100 + n for n in range(RESULT_CHUNK + 10))

    assert run["item_count"] == run["line_count"] == RESULT_CHUNK + 15
    assert run["summary"]["matched"] == {"count": 5, "amount": "60.00"}
    assert run["summary"]["missing_in_ledger"]["count"] == RESULT_CHUNK + 10
    assert minor(run["summary"]["missing_in_ledger"]["amount"]) == total
    exported = shop.client.get(f"/v1/reconciliations/{run['id']}/export")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [int(r["item_index"]) for r in rows] == list(range(RESULT_CHUNK + 15))
    page = shop.client.get(
        f"/v1/reconciliations/{run['id']}/items",
        params={"category": "matched", "limit": 1000},
    ).json()
    assert len(page["items"]) == 5


def test_a_statement_with_no_lines_reports_amounts_in_the_payments_currency(shop: Shop) -> None:
    """A day the channel settled nothing: every succeeded payment is missing, and the
    summary's amounts are still decimal strings of their currency."""
    header_only = csv_bytes([])
    run = shop.reconcile(header_only)
    assert run.status_code == 201, run.text
    body = run.json()
    assert body["line_count"] == 0
    assert body["summary"]["missing_in_statement"] == {"count": 4, "amount": "46.00"}
    assert body["summary"]["matched"] == {"count": 0, "amount": "0.00"}


def test_payments_in_another_currency_are_not_expected_in_this_statement(shop: Shop) -> None:
    """A statement is in one currency (the matcher refuses mixed ones): a USD card payment
    cannot be on the EUR statement, and its amount must never be added to EUR totals."""
    usd_merchant = shop.client.post(
        "/v1/accounts", json={"owner": "shop us", "currency": "USD", "kind": "merchant"}
    ).json()["id"]
    paid = shop.client.post(
        "/v1/payments",
        json={
            "amount": "5.00",
            "currency": "USD",
            "channel": "card",
            "payment_method": card(OK_CARD),
            "payee_account_id": usd_merchant,
        },
        headers={"Idempotency-Key": new_key()},
    )
    assert paid.status_code == 201 and paid.json()["status"] == "succeeded", paid.text
    run = shop.run(shop.faithful_lines())
    assert run["summary"] == FAITHFUL
    assert run["balances"]["difference"] == "0.00"


def test_a_camt053_batched_entry_settling_several_payments_matches(shop: Shop) -> None:
    camt053 = pytest.importorskip("application.reconciliation.camt053")
    if not hasattr(camt053, "write_camt053"):
        pytest.skip("application.reconciliation.camt053 has no write_camt053 yet")
    lines = [x for x in _one_line_for_three(shop, 3300) if x.status == "settled"]
    out = io.BytesIO()
    camt053.write_camt053(
        lines,
        account_iban="DE89370400440532013000",
        currency=CURRENCY,
        statement_date=today(),
        opening_balance_minor=0,
        out=out,
    )
    response = shop.reconcile(out.getvalue(), filename="batched.xml")
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["summary"] == expect(matched=(2, "46.00"))
    batch = next(i for i in shop.items(run["id"]) if len(i["payment_ids"]) == 3)
    assert sorted(batch["payment_ids"]) == sorted(shop.id(n) for n in ("s1", "s2", "s3"))
