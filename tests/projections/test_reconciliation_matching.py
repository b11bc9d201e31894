"""The reconciliation Matcher's categories, on hand-made ``view_payments`` rows (SQLite and
PostgreSQL): what each kind of statement line, and each payment without one, is reported as.

Categories and their definitions are in ``projections/reconciliation_matching.py``'s docstring.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest

from application.reconciliation.statements import StatementLine
from application.store import parse_database_url
from domain.errors import ValidationError
from domain.reconciliations import ITEM_FIELDS
from projections.db import ViewDB, to_us
from projections.reconciliation_matching import Matcher, MatchParams

TENANT, OTHER_TENANT = "shop", "someone-else"
DAY = date(2026, 3, 10)
NOON = datetime.combine(DAY, time(12), UTC)

PAYMENTS_TABLE = (
    "CREATE TABLE view_payments (payment_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, "
    "channel TEXT NOT NULL, status TEXT NOT NULL, amount_minor BIGINT NOT NULL, "
    "currency TEXT NOT NULL, channel_reference TEXT, created_us BIGINT NOT NULL, "
    "completed_us BIGINT)"
)
ENTRIES_TABLE = (
    "CREATE TABLE view_entries (account_id TEXT NOT NULL, amount_minor BIGINT NOT NULL, "
    "balance_after_minor BIGINT NOT NULL, at_us BIGINT NOT NULL, version BIGINT NOT NULL)"
)


@pytest.fixture
def db(database_url: str) -> Iterator[ViewDB]:
    store = parse_database_url(database_url)
    store.prepare()
    views = ViewDB(store)
    views.execute(PAYMENTS_TABLE)
    views.execute(ENTRIES_TABLE)
    yield views
    views.close()


class Ledger:
    """Rows of ``view_payments``, written by hand."""

    def __init__(self, db: ViewDB) -> None:
        self.db = db

    def payment(
        self,
        amount_minor: int = 1000,
        status: str = "succeeded",
        *,
        reference: str | None = "auto",
        tenant: str = TENANT,
        channel: str = "card",
        currency: str = "EUR",
        created: datetime = NOON,
        completed: datetime | str | None = "auto",
    ) -> str:
        payment_id = str(uuid.uuid4())
        if reference == "auto":
            reference = f"ref-{payment_id[:8]}"
        if completed == "auto":
            completed = (
                None if status in ("exception", "processing") else created + timedelta(seconds=1)
            )
        assert not isinstance(completed, str)
        self.db.execute(
            "INSERT INTO view_payments (payment_id, tenant, channel, status, amount_minor, "
            "currency, channel_reference, created_us, completed_us) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                payment_id,
                tenant,
                channel,
                status,
                amount_minor,
                currency,
                reference,
                to_us(created),
                None if completed is None else to_us(completed),
            ),
        )
        return payment_id

    def reference(self, payment_id: str) -> str | None:
        rows = self.db.query(
            "SELECT channel_reference FROM view_payments WHERE payment_id = ?", (payment_id,)
        )
        return rows[0][0]  # type: ignore[no-any-return]


@pytest.fixture
def ledger(db: ViewDB) -> Ledger:
    return Ledger(db)


def line(
    ledger: Ledger | None,
    payment_id: str | None,
    amount_minor: int = 1000,
    status: str = "settled",
    *,
    reference: str | None = "auto",
    ids: tuple[str, ...] | None = None,
    currency: str = "EUR",
    direction: str = "credit",
    booked_on: date = DAY,
    entry_ref: str | None = None,
) -> StatementLine:
    """A statement line about ``payment_id`` (with its reference and its id, unless told)."""
    if reference == "auto":
        reference = ledger.reference(payment_id) if ledger and payment_id else None
    if ids is None:
        ids = (payment_id,) if payment_id else ()
    return StatementLine(
        0, reference, ids, amount_minor, currency, direction, status, booked_on, entry_ref
    )


class Result:
    def __init__(self, items: list[dict[str, Any]], matcher: Matcher) -> None:
        self.items = items
        self.totals = matcher.totals

    def categories(self) -> list[str]:
        return sorted(i["category"] for i in self.items)

    def about(self, payment_id: str) -> list[dict[str, Any]]:
        return [i for i in self.items if payment_id in (i["payment_ids"] or "").split(";")]

    def of_line(self, line_no: int) -> dict[str, Any]:
        (found,) = [i for i in self.items if i["line_no"] == line_no]
        return found

    def counts(self) -> dict[str, int]:
        return {c: v["count"] for c, v in self.totals.summary.items() if v["count"]}


def match(db: ViewDB, lines: list[StatementLine], **params: Any) -> Result:
    numbered = [
        StatementLine(n, *(getattr(x, f) for f in StatementLine.__slots__[1:]))
        for n, x in enumerate(lines, 1)
    ]
    settings = {
        "tenant": TENANT,
        "channel": "card",
        "period_start": DAY,
        "period_end": DAY,
        "timing_window_minutes": 0,
    } | params
    matcher = Matcher(db, MatchParams(**settings))
    try:
        matcher.stage(numbered)
        matcher.resolve()
        items = [dict(zip(ITEM_FIELDS[1:], item, strict=True)) for item in matcher.items()]
    finally:
        matcher.close()
    return Result(items, matcher)


# --- 1:1 -----------------------------------------------------------------------------------------


def test_a_line_matches_its_payment_by_reference(db: ViewDB, ledger: Ledger) -> None:
    paid = ledger.payment(1234)
    result = match(db, [line(ledger, paid, 1234, ids=())])  # the channel does not know our id
    (item,) = result.items
    assert item["category"] == "matched"
    assert (item["payment_ids"], item["statement_amount_minor"], item["ledger_amount_minor"]) == (
        paid,
        1234,
        1234,
    )
    assert (item["statement_status"], item["ledger_status"]) == ("settled", "succeeded")
    assert result.totals.line_count == 1
    assert result.totals.settled_net_minor == 1234


def test_a_line_matches_by_our_id_when_it_has_no_reference(db: ViewDB, ledger: Ledger) -> None:
    paid = ledger.payment(500)
    result = match(db, [line(ledger, paid, 500, reference=None)])
    assert result.categories() == ["matched"]


def test_a_failed_line_for_a_failed_payment_matches(db: ViewDB, ledger: Ledger) -> None:
    declined = ledger.payment(700, "failed")
    result = match(db, [line(ledger, declined, 700, "failed")])
    assert result.categories() == ["matched"]
    assert result.totals.settled_net_minor == 0


# --- missing_in_ledger, and what must not match --------------------------------------------------


def test_a_line_with_neither_reference_nor_id_is_missing_in_ledger(
    db: ViewDB, ledger: Ledger
) -> None:
    no_reference = ledger.payment(1000, reference=None)  # a NULL must never join a NULL
    result = match(db, [line(None, None, 1000, reference=None)], timing_window_minutes=0)
    assert result.counts() == {"missing_in_ledger": 1, "missing_in_statement": 1}
    (stray,) = [i for i in result.items if i["category"] == "missing_in_ledger"]
    assert stray["payment_ids"] is None and stray["ledger_amount_minor"] is None
    (absent,) = result.about(no_reference)
    assert absent["category"] == "missing_in_statement"


def test_an_unknown_reference_without_ids_is_missing_in_ledger(db: ViewDB, ledger: Ledger) -> None:
    result = match(db, [line(None, None, 900, reference="ref-nobody")])
    (item,) = result.items
    assert (item["category"], item["reference"], item["statement_amount_minor"]) == (
        "missing_in_ledger",
        "ref-nobody",
        900,
    )
    assert result.totals.summary["missing_in_ledger"] == {"count": 1, "amount_minor": 900}


def test_another_tenants_payment_with_the_same_reference_does_not_match(
    db: ViewDB, ledger: Ledger
) -> None:
    theirs = ledger.payment(1000, reference="ref-shared", tenant=OTHER_TENANT)
    result = match(db, [line(None, None, 1000, reference="ref-shared")])
    assert result.categories() == ["missing_in_ledger"]
    assert result.about(theirs) == []
    # Nor by their id.
    by_id = match(db, [line(None, theirs, 1000, reference=None, entry_ref="x")])
    assert by_id.categories() == ["missing_in_ledger"]


def test_another_channels_payment_with_the_same_reference_does_not_match(
    db: ViewDB, ledger: Ledger
) -> None:
    wallet = ledger.payment(1000, reference="ref-shared", channel="alipay")
    result = match(db, [line(None, None, 1000, reference="ref-shared")])
    assert result.categories() == ["missing_in_ledger"]
    by_id = match(db, [line(None, wallet, 1000, reference=None, entry_ref="x")])
    assert by_id.categories() == ["missing_in_ledger"]


def test_the_same_reference_in_two_tenants_matches_only_ours(db: ViewDB, ledger: Ledger) -> None:
    ours = ledger.payment(1000, reference="ref-shared")
    ledger.payment(1000, reference="ref-shared", tenant=OTHER_TENANT)
    ledger.payment(1000, reference="ref-shared", channel="wechat_pay")
    result = match(db, [line(None, None, 1000, reference="ref-shared")])
    (item,) = result.items
    assert (item["category"], item["payment_ids"]) == ("matched", ours)


def test_other_tenants_and_channels_payments_are_never_missing_in_statement(
    db: ViewDB, ledger: Ledger
) -> None:
    ledger.payment(1000, tenant=OTHER_TENANT)
    ledger.payment(1000, channel="alipay")
    assert match(db, [line(None, None, 5, reference="ref-x")]).categories() == ["missing_in_ledger"]


# --- missing_in_statement, timing ----------------------------------------------------------------


def test_what_is_expected_in_the_statement(db: ViewDB, ledger: Ledger) -> None:
    succeeded = ledger.payment(1000)
    exception = ledger.payment(2000, "exception")
    ledger.payment(3000, "failed")
    ledger.payment(4000, "processing")
    ledger.payment(5000, created=NOON - timedelta(days=1))  # before the period
    ledger.payment(6000, created=NOON + timedelta(days=1))  # after it
    result = match(db, [line(None, None, 1, reference="ref-unrelated")])

    assert result.counts() == {"missing_in_ledger": 1, "missing_in_statement": 2}
    assert [i["category"] for i in result.about(succeeded)] == ["missing_in_statement"]
    assert [i["category"] for i in result.about(exception)] == ["missing_in_statement"]
    assert result.totals.summary["missing_in_statement"]["amount_minor"] == 3000
    assert result.about(exception)[0]["ledger_status"] == "exception"


def test_a_payment_completed_at_the_end_of_the_period_is_timing(db: ViewDB, ledger: Ledger) -> None:
    end = datetime.combine(DAY + timedelta(days=1), time.min, UTC)
    late = ledger.payment(
        1000, created=end - timedelta(minutes=5), completed=end - timedelta(minutes=4)
    )
    after = ledger.payment(
        2000, created=end - timedelta(minutes=30), completed=end + timedelta(minutes=1)
    )
    early = ledger.payment(
        3000, created=end - timedelta(minutes=30), completed=end - timedelta(minutes=29)
    )
    result = match(db, [line(None, None, 1, reference="ref-unrelated")], timing_window_minutes=10)

    assert result.about(late)[0]["category"] == "timing"
    assert result.about(after)[0]["category"] == "timing"
    assert result.about(early)[0]["category"] == "missing_in_statement"
    assert result.totals.summary["timing"] == {"count": 2, "amount_minor": 3000}


def test_an_open_exception_at_the_end_of_the_period_is_still_missing(
    db: ViewDB, ledger: Ledger
) -> None:
    """Only a succeeded payment is expected later: an exception must be found out."""
    end = datetime.combine(DAY + timedelta(days=1), time.min, UTC)
    open_one = ledger.payment(1000, "exception", created=end - timedelta(minutes=1))
    result = match(db, [line(None, None, 1, reference="ref-unrelated")], timing_window_minutes=60)
    assert result.about(open_one)[0]["category"] == "missing_in_statement"


def test_a_line_matched_by_id_booked_outside_the_tolerance_is_timing(
    db: ViewDB, ledger: Ledger
) -> None:
    paid = ledger.payment(1000)
    later = DAY + timedelta(days=3)
    period = {"period_end": later, "tolerance_days": 1}
    far = match(db, [line(ledger, paid, reference=None, booked_on=later)], **period)
    assert far.categories() == ["timing"]
    near = match(
        db, [line(ledger, paid, reference=None, booked_on=DAY + timedelta(days=1))], **period
    )
    assert near.categories() == ["matched"]
    # The channel's own reference identifies the charge whatever the booking date.
    by_reference = match(db, [line(ledger, paid, booked_on=later)], **period)
    assert by_reference.categories() == ["matched"]


# --- amount_mismatch, status_mismatch ------------------------------------------------------------


def test_a_different_amount_or_currency_is_an_amount_mismatch(db: ViewDB, ledger: Ledger) -> None:
    paid = ledger.payment(1000)
    other = ledger.payment(2000)
    result = match(db, [line(ledger, paid, 1001), line(ledger, other, 2000, currency="EUR")])
    assert [i["category"] for i in result.about(paid)] == ["amount_mismatch"]
    assert result.about(paid)[0]["statement_amount_minor"] == 1001
    assert result.about(paid)[0]["ledger_amount_minor"] == 1000
    assert [i["category"] for i in result.about(other)] == ["matched"]

    usd = ledger.payment(3000, currency="USD")
    in_euro = match(db, [line(ledger, usd, 3000, currency="EUR")])
    assert [i["category"] for i in in_euro.about(usd)] == ["amount_mismatch"]


def test_a_line_booked_the_other_way_round_is_an_amount_mismatch(
    db: ViewDB, ledger: Ledger
) -> None:
    paid, split = ledger.payment(1000), ledger.payment(3000)
    lines = [line(ledger, paid, 1000, direction="debit"),  # a card pay-in is a credit
             line(ledger, split, 1000), line(ledger, split, 2000, direction="debit")]  # fmt: skip
    result = match(db, lines)
    [wrong] = result.about(paid)
    assert wrong["category"] == "amount_mismatch" and "debit" in wrong["detail"]
    assert "matched" not in {i["category"] for i in result.about(split)}


@pytest.mark.parametrize(
    ("ledger_status", "line_status"),
    [
        ("failed", "settled"),
        ("exception", "settled"),
        ("processing", "settled"),
        ("succeeded", "failed"),
        ("succeeded", "reversed"),
        ("exception", "failed"),
    ],
)
def test_outcomes_that_disagree_are_a_status_mismatch(
    db: ViewDB, ledger: Ledger, ledger_status: str, line_status: str
) -> None:
    paid = ledger.payment(1000, ledger_status)
    result = match(db, [line(ledger, paid, 1000, line_status)])
    (item,) = result.items
    assert item["category"] == "status_mismatch"
    assert (item["statement_status"], item["ledger_status"]) == (line_status, ledger_status)
    assert result.totals.summary["status_mismatch"] == {"count": 1, "amount_minor": 1000}


# --- duplicates, N:1 and reversals ---------------------------------------------------------------


def test_a_repeated_line_is_a_duplicate(db: ViewDB, ledger: Ledger) -> None:
    paid = ledger.payment(1000)
    result = match(db, [line(ledger, paid, entry_ref="E1"), line(ledger, paid, entry_ref="E1")])
    assert result.categories() == ["duplicate_in_statement", "matched"]
    assert result.of_line(1)["category"] == "matched"
    assert result.of_line(2)["category"] == "duplicate_in_statement"
    assert result.totals.summary["duplicate_in_statement"] == {"count": 1, "amount_minor": 1000}


def test_two_lines_adding_up_to_the_payment_match(db: ViewDB, ledger: Ledger) -> None:
    paid = ledger.payment(1000)
    result = match(
        db, [line(ledger, paid, 400, entry_ref="a"), line(ledger, paid, 600, entry_ref="b")]
    )
    assert result.categories() == ["matched", "matched"]
    assert sorted(i["statement_amount_minor"] for i in result.items) == [400, 600]


def test_two_lines_not_adding_up_are_not_matched(db: ViewDB, ledger: Ledger) -> None:
    paid = ledger.payment(1000)
    result = match(
        db, [line(ledger, paid, 400, entry_ref="a"), line(ledger, paid, 500, entry_ref="b")]
    )
    assert "matched" not in result.categories()
    assert "amount_mismatch" in result.categories()


def test_a_charge_settled_then_reversed_for_a_failed_payment_matches(
    db: ViewDB, ledger: Ledger
) -> None:
    """The channel took the money and gave it back: nothing moved, as the ledger says."""
    failed = ledger.payment(1000, "failed")
    result = match(
        db,
        [
            line(ledger, failed, 1000, "settled", entry_ref="E1"),
            line(ledger, failed, 1000, "reversed", entry_ref="E2"),
        ],
    )
    assert result.categories() == ["matched", "matched"], result.items
    assert result.totals.settled_net_minor == 0


def test_a_reversal_of_a_succeeded_payment_is_a_status_mismatch(db: ViewDB, ledger: Ledger) -> None:
    paid = ledger.payment(1000)
    result = match(
        db,
        [
            line(ledger, paid, 1000, "settled", entry_ref="E1"),
            line(ledger, paid, 1000, "reversed", entry_ref="E2"),
        ],
    )
    assert "status_mismatch" in result.categories()
    assert result.of_line(2)["category"] == "status_mismatch"


def test_settled_reversed_and_settled_again_matches(db: ViewDB, ledger: Ledger) -> None:
    paid = ledger.payment(1000)
    result = match(
        db,
        [
            line(ledger, paid, 1000, "settled", entry_ref="E1"),
            line(ledger, paid, 1000, "reversed", entry_ref="E2"),
            line(ledger, paid, 1000, "settled", entry_ref="E3"),
        ],
    )
    assert result.categories() == ["matched"] * 3
    assert result.totals.settled_net_minor == 1000


# --- 1:N -----------------------------------------------------------------------------------------


def test_one_line_for_several_payments(db: ViewDB, ledger: Ledger) -> None:
    a, b, c = ledger.payment(100), ledger.payment(200), ledger.payment(300)
    whole = line(None, None, 600, reference="batch-1", ids=(a, b, c))
    (item,) = match(db, [whole]).items
    assert item["category"] == "matched"
    assert sorted(item["payment_ids"].split(";")) == sorted([a, b, c])
    assert item["ledger_amount_minor"] == 600

    off = match(db, [line(None, None, 601, reference="batch-2", ids=(a, b, c))])
    assert off.categories() == ["amount_mismatch"]


def test_a_line_for_several_payments_one_of_them_unknown(db: ViewDB, ledger: Ledger) -> None:
    a, b = ledger.payment(100), ledger.payment(200)
    theirs = ledger.payment(300, tenant=OTHER_TENANT)
    result = match(db, [line(None, None, 600, reference="batch-1", ids=(a, b, theirs))])
    (item,) = result.items
    assert item["category"] == "amount_mismatch"
    assert theirs in item["detail"]
    nobody = match(
        db, [line(None, None, 600, reference="batch-2", ids=(str(uuid.uuid4()), str(uuid.uuid4())))]
    )
    assert [i["category"] for i in nobody.items if i["line_no"] == 1] == ["missing_in_ledger"]


def test_a_line_for_several_payments_one_of_them_failed(db: ViewDB, ledger: Ledger) -> None:
    a, b = ledger.payment(100), ledger.payment(200, "failed")
    result = match(db, [line(None, None, 300, reference="batch-1", ids=(a, b))])
    assert result.categories() == ["status_mismatch"]


def test_a_payment_both_in_a_batch_line_and_on_its_own_line_is_not_all_matched(
    db: ViewDB, ledger: Ledger
) -> None:
    """Settled twice (alone, and inside a 1:N line): a discrepancy, not two matches."""
    a, b = ledger.payment(100), ledger.payment(200)
    result = match(
        db, [line(None, None, 300, reference="batch-1", ids=(a, b)), line(ledger, a, 100)]
    )
    assert result.totals.settled_net_minor == 400
    assert set(result.categories()) != {"matched"}, result.items


# --- totals --------------------------------------------------------------------------------------


def test_totals_and_balances(db: ViewDB, ledger: Ledger) -> None:
    paid = ledger.payment(1000)
    refunded = ledger.payment(300)
    clearing = "clearing-card-eur"
    db.execute(
        "INSERT INTO view_entries (account_id, amount_minor, balance_after_minor, at_us, "
        "version) VALUES (?,?,?,?,?), (?,?,?,?,?), (?,?,?,?,?)",
        (
            clearing,
            -500,
            -500,
            to_us(NOON - timedelta(days=2)),
            1,
            clearing,
            -1000,
            -1500,
            to_us(NOON),
            2,
            clearing,
            -300,
            -1800,
            to_us(NOON),
            3,
        ),
    )
    matcher = Matcher(db, MatchParams(TENANT, "card", DAY, DAY))
    try:
        matcher.stage(
            [
                StatementLine(
                    1, ledger.reference(paid), (paid,), 1000, "EUR", "credit", "settled", DAY
                ),
                StatementLine(
                    2,
                    ledger.reference(refunded),
                    (refunded,),
                    300,
                    "EUR",
                    "credit",
                    "settled",
                    DAY,
                    "a",
                ),
                StatementLine(3, None, (), 50, "EUR", "debit", "settled", DAY),
                StatementLine(4, None, (), 20, "EUR", "credit", "reversed", DAY),
            ]
        )
        matcher.resolve()
        list(matcher.items())
        balances = matcher.ledger_balances(lambda currency: clearing)
    finally:
        matcher.close()
    assert matcher.totals.line_count == 4
    assert matcher.totals.settled_net_minor == 1000 + 300 - 50 - 20
    assert matcher.totals.currency == "EUR"
    assert balances == {
        "EUR": {
            "clearing_account_id": clearing,
            "movement_minor": -1300,
            "balance_at_end_minor": -1800,
        },
    }


def test_a_statement_in_two_currencies_is_refused(db: ViewDB, ledger: Ledger) -> None:
    with pytest.raises(ValidationError) as refused:
        match(
            db,
            [
                line(None, None, 100, reference="a"),
                line(None, None, 100, reference="b", currency="USD"),
            ],
        )
    assert refused.value.errors[0].field == "line 2.currency"


def test_the_temporary_tables_are_gone_after_a_run(db: ViewDB, ledger: Ledger) -> None:
    paid = ledger.payment(1000)
    match(db, [line(ledger, paid)])
    match(db, [line(ledger, paid)])  # the same connection again: no name clash, no leftovers
    if db.is_postgres:
        left = db.query("SELECT count(*) FROM pg_tables WHERE tablename LIKE ?", ("recon_%",))
    else:
        left = db.query("SELECT count(*) FROM sqlite_temp_master WHERE name LIKE ?", ("recon_%",))
    assert left[0][0] == 0
