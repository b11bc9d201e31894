"""CSV in: the documented columns, any script in names, and refusals naming line and column."""

from __future__ import annotations

from datetime import date

import pytest

from application.batch_files.csv_format import MAX_ERRORS, parse_csv
from application.batch_files.model import BatchFileError

HEADER = "end_to_end_id,amount,currency,name,iban"


def refused(text: str | bytes) -> BatchFileError:
    with pytest.raises(BatchFileError) as caught:
        parse_csv(text.encode() if isinstance(text, str) else text)
    assert {e.code for e in caught.value.errors} == {"FF01"}
    return caught.value


def test_every_column_with_chinese_names_and_a_bom():
    text = (
        "\ufeffend_to_end_id,amount,currency,name,iban,bic,value_date,priority,depends_on,"
        "remittance,instruction_id,channel\n"
        "PAY-1,8800.00,CNY,张伟,CN1234,ICBKCNBJ,2026-09-30,2,,9月工资,INS-1,bank_transfer\n"
        'PAY-2,12.5,CNY,"王芳, ""Fang""",CN5678,,,,PAY-1,"two\nlines",,\n'
    )
    parsed = parse_csv(text.encode("utf-8"))
    assert (parsed.format, parsed.currency) == ("csv", "CNY")
    first, second = parsed.items
    assert first.location == "line 2"
    assert (first.end_to_end_id, first.amount, first.currency) == ("PAY-1", "8800.00", "CNY")
    assert (first.name, first.iban, first.bic) == ("张伟", "CN1234", "ICBKCNBJ")
    assert (first.value_date, first.priority, first.depends_on) == (date(2026, 9, 30), 2, None)
    assert (first.remittance, first.instruction_id, first.channel) == (
        "9月工资",
        "INS-1",
        "bank_transfer",
    )
    assert second.location == "line 3"
    assert second.name == '王芳, "Fang"'
    assert (second.amount, second.depends_on, second.remittance) == ("12.5", "PAY-1", "two\nlines")
    assert (second.bic, second.value_date, second.priority, second.channel) == (None,) * 4
    assert second.payee_account_id is None


def test_internal_transfers_by_ledger_account_and_header_in_any_order_and_case():
    text = " Name ,PAYEE_ACCOUNT_ID,amount,currency,end_to_end_id\r\n李娜,acc-42,5.00,CNY,P-1\r\n"
    [item] = parse_csv(text.encode()).items
    assert (item.name, item.payee_account_id, item.iban) == ("李娜", "acc-42", None)
    assert (item.amount, item.end_to_end_id) == ("5.00", "P-1")


def test_semicolon_separated_files_are_read():
    text = "end_to_end_id;amount;currency;name;iban\nP-1;1500.00;EUR;Zoë Ångström;DE8937\n"
    [item] = parse_csv(text.encode()).items
    assert (item.amount, item.name) == ("1500.00", "Zoë Ångström")


def test_blank_lines_are_skipped_and_lines_still_counted():
    text = f"{HEADER}\n\nP-1,1.00,EUR,A,X\n\nP-2,2.00,USD,B,Y\n"
    parsed = parse_csv(text.encode())
    assert [i.location for i in parsed.items] == ["line 3", "line 5"]
    assert parsed.currency is None  # EUR and USD


def test_empty_fields_are_no_value_and_left_to_the_rules():
    [item] = parse_csv(f"{HEADER}\nP-1, ,EUR,,X\n".encode()).items
    assert (item.amount, item.name) == (None, None)


def test_a_header_only_file_has_no_items():
    assert parse_csv(f"{HEADER}\n".encode()).items == []


def test_missing_required_columns_are_named():
    [problem] = refused("end_to_end_id,currency,name,bic\n").errors
    assert problem.field == "line 1"
    assert problem.reason == "missing columns: amount, iban or payee_account_id"


def test_unknown_and_repeated_columns_are_named():
    unknown, repeated = refused(f"{HEADER},amout,note,name\n").errors
    assert unknown.reason.startswith("unknown columns: amout, note; known: end_to_end_id,")
    assert repeated.reason == "repeated columns: name"


def test_a_bad_date_names_line_and_column():
    text = f"{HEADER},value_date\nP-1,1.00,EUR,A,X,2026-09-30\nP-2,1.00,EUR,B,Y,30.09.2026\n"
    [problem] = refused(text).errors
    assert problem.field == "line 3, column value_date"
    assert "30.09.2026" in problem.reason


def test_an_impossible_date_and_a_non_integer_priority():
    text = f"{HEADER},value_date,priority\nP-1,1.00,EUR,A,X,2026-02-30,high\n"
    date_problem, priority_problem = refused(text).errors
    assert date_problem.field == "line 2, column value_date"
    assert priority_problem.field == "line 2, column priority"
    assert "'high' is not an integer" in priority_problem.reason


def test_a_row_with_the_wrong_number_of_fields_names_its_first_line():
    text = f'{HEADER}\nP-1,1.00,EUR,"multi\nline",X\nP-2,1.00,EUR,B\n'
    [problem] = refused(text).errors
    assert (problem.field, problem.reason) == ("line 4", "4 fields, but the header has 5")


def test_errors_stop_at_the_limit():
    text = HEADER + "\n" + "P,1\n" * 50
    assert len(refused(text).errors) == MAX_ERRORS


def test_text_that_is_not_utf8_is_refused_with_its_line():
    data = f"{HEADER}\nP-1,1.00,EUR,A,X\n".encode() + "P-2,1.00,EUR,Müller,X\n".encode("latin-1")
    [problem] = refused(data).errors
    assert (problem.field, problem.reason) == ("line 3", "the file is not UTF-8 text")


def test_an_unterminated_quote_is_refused():
    [problem] = refused(f'{HEADER}\nP-1,1.00,EUR,"A,X\n').errors
    assert problem.field == "line 2"
    assert "not readable as CSV" in problem.reason


@pytest.mark.parametrize("text", ["", "\ufeff", "\n\n"])
def test_a_file_without_header_is_refused(text):
    [problem] = refused(text.encode()).errors
    assert problem.reason == "the header row (column names) is missing"
