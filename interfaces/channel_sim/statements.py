"""The simulator's daily settlement statement, from its own records.

Every charge made on the day (UTC creation date) is one ``settled`` line: the charge's
reference, our payment id, the amount, ``credit`` for pay-ins (card, wallets) and ``debit`` for
payouts (bank transfers), and the charge's statement entry id. The formats are written by the
reconciliation writers (application/reconciliation), streamed as they write.

camt.053 is one account's statement in one currency: the simulated settlement account of the
channel (or of all channels), its opening balance the net of every earlier day's charges.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

from application.reconciliation.statements import StatementLine, write_csv_statement
from interfaces.channel_sim.book import PAYOUT_CHANNELS, ChargeBook
from interfaces.channel_sim.stream import stream_written

STATEMENT_FORMATS = {
    "csv": ("text/csv; charset=utf-8", "csv"),
    "camt053": ("application/xml", "xml"),
}
# The simulated settlement accounts (ISO 13616 example IBANs, valid check digits).
SETTLEMENT_IBANS = {
    "card": "GB82WEST12345698765432",
    "alipay": "NL91ABNA0417164300",
    "wechat_pay": "FR1420041010050500013M02606",
    "bank_transfer": "GB33BUKB20201555555555",
    None: "GB29NWBK60161331926819",
}
DEFAULT_CURRENCY = "EUR"


class AmbiguousCurrency(ValueError):
    """A camt.053 statement is in one currency; the day has charges in several."""


def statement_lines(
    book: ChargeBook,
    day: datetime.date,
    channel: str | None = None,
    currency: str | None = None,
) -> Iterator[StatementLine]:
    for line_no, charge in enumerate(book.charges_on(day, channel, currency), 1):
        yield StatementLine(
            line_no=line_no,
            reference=charge.reference,
            payment_ids=(charge.payment_id,),
            amount_minor=charge.amount_minor,
            currency=charge.currency,
            direction="debit" if charge.channel in PAYOUT_CHANNELS else "credit",
            status="settled",
            booked_on=day,
            entry_ref=charge.entry_ref,
        )


def statement_body(
    book: ChargeBook,
    day: datetime.date,
    format: str,
    channel: str | None,
    currency: str | None = None,
) -> Iterator[bytes]:
    """The statement's bytes as they are written (raises ``AmbiguousCurrency`` up front)."""
    if format == "csv":
        lines = statement_lines(book, day, channel, currency)
        return stream_written(lambda out: write_csv_statement(lines, out))
    currency = currency or camt_currency(book, day, channel)
    opening = book.balance_before(day, channel, currency)
    camt_lines = statement_lines(book, day, channel, currency)

    def write(out: Any) -> None:
        from application.reconciliation.camt053 import write_camt053

        write_camt053(
            camt_lines, account_iban=SETTLEMENT_IBANS[channel], currency=currency,
            statement_date=day, opening_balance_minor=opening, out=out,
        )  # fmt: skip

    return stream_written(write)


def camt_currency(book: ChargeBook, day: datetime.date, channel: str | None) -> str:
    currencies = book.currencies_on(day, channel)
    if len(currencies) > 1:
        raise AmbiguousCurrency(
            f"the charges of {day} are in {', '.join(sorted(currencies))}: name one with currency="
        )
    return currencies.pop() if currencies else DEFAULT_CURRENCY
