import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import FieldError, InvalidAmount, UnknownCurrency, ValidationError
from domain.money import (
    MAX_AMOUNT_MINOR,
    Money,
    currency_exponent,
    format_amount,
    parse_amount,
    parse_non_negative_amount,
)

EXPONENTS = {"JPY": 0, "KRW": 0, "CNY": 2, "USD": 2, "EUR": 2, "KWD": 3, "BHD": 3}


def only_error(exc: ValidationError) -> FieldError:
    assert len(exc.errors) == 1
    return exc.errors[0]


# --- currencies -------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "exponent"), EXPONENTS.items())
def test_currency_exponent(code, exponent):
    assert currency_exponent(code) == exponent


@pytest.mark.parametrize(
    "code", ["usd", "Usd", "ZZZ", "XAU", "XXX", "", "USDD", " USD", "840", None, ["USD"]]
)
def test_unknown_currency(code):
    with pytest.raises(UnknownCurrency) as info:
        currency_exponent(code)
    assert only_error(info.value).field == "currency"
    assert only_error(info.value).code == "unknown_currency"


def test_unknown_currency_field_name_is_configurable():
    with pytest.raises(UnknownCurrency) as info:
        currency_exponent("ABC", field="limit.currency")
    assert only_error(info.value).field == "limit.currency"


def test_unknown_currency_is_a_validation_error():
    assert issubclass(UnknownCurrency, ValidationError)
    with pytest.raises(UnknownCurrency):
        parse_amount("1.00", "usd")


# --- parse_amount: accepted ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("1234.50", "CNY", 123450),
        ("1.10", "CNY", 110),
        ("1.1", "CNY", 110),
        ("0.01", "USD", 1),
        ("12", "EUR", 1200),
        ("500", "JPY", 500),
        ("1", "KRW", 1),
        ("0.001", "KWD", 1),
        ("1.5", "BHD", 1500),
        ("10000000000000", "JPY", 10**13),
        ("10000000000000.00", "USD", MAX_AMOUNT_MINOR),
        ("1000000000000000", "JPY", MAX_AMOUNT_MINOR),
        ("1000000000000.000", "KWD", MAX_AMOUNT_MINOR),
    ],
)
def test_parse_amount_accepts(text, currency, minor):
    assert parse_amount(text, currency) == minor
    assert isinstance(parse_amount(text, currency), int)


# --- parse_amount: refused ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "currency", "code"),
    [
        # not a string: JSON numbers, bools, null
        (12.5, "USD", "amount_must_be_string"),
        (100, "USD", "amount_must_be_string"),
        (True, "USD", "amount_must_be_string"),
        (None, "USD", "amount_must_be_string"),
        (b"1.00", "USD", "amount_must_be_string"),
        # malformed decimals
        ("", "USD", "invalid_decimal"),
        ("   ", "USD", "invalid_decimal"),
        ("+1.00", "USD", "invalid_decimal"),
        (" 1.00", "USD", "invalid_decimal"),
        ("1.00 ", "USD", "invalid_decimal"),
        ("1.00\n", "USD", "invalid_decimal"),
        ("1e3", "USD", "invalid_decimal"),
        ("1E3", "USD", "invalid_decimal"),
        ("NaN", "USD", "invalid_decimal"),
        ("nan", "USD", "invalid_decimal"),
        ("Infinity", "USD", "invalid_decimal"),
        ("-Infinity", "USD", "invalid_decimal"),
        ("1,000.00", "USD", "invalid_decimal"),
        ("1_000", "USD", "invalid_decimal"),
        ("1 000", "USD", "invalid_decimal"),
        ("١٢٣", "USD", "invalid_decimal"),
        ("\uff11\uff12", "USD", "invalid_decimal"),  # full-width digits
        ("1.2.3", "USD", "invalid_decimal"),
        (".5", "USD", "invalid_decimal"),
        ("5.", "USD", "invalid_decimal"),
        ("-.5", "USD", "invalid_decimal"),
        ("007", "USD", "invalid_decimal"),
        ("00.50", "USD", "invalid_decimal"),
        ("0x10", "USD", "invalid_decimal"),
        ("abc", "USD", "invalid_decimal"),
        ("-", "USD", "invalid_decimal"),
        # not positive
        ("-1.00", "USD", "amount_not_positive"),
        ("-0", "USD", "amount_not_positive"),
        ("0", "USD", "amount_not_positive"),
        ("0.00", "USD", "amount_not_positive"),
        ("0", "JPY", "amount_not_positive"),
        # too many decimals
        ("1.001", "CNY", "too_many_decimals"),
        ("1.000", "CNY", "too_many_decimals"),
        ("1.5", "JPY", "too_many_decimals"),
        ("1.0", "JPY", "too_many_decimals"),
        ("1.0", "KRW", "too_many_decimals"),
        ("0.0001", "KWD", "too_many_decimals"),
        # too large
        ("10000000000000.01", "USD", "amount_too_large"),
        ("1000000000000001", "JPY", "amount_too_large"),
        ("9" * 32, "USD", "amount_too_large"),
        ("1" + "0" * 32, "USD", "amount_too_large"),
        ("x" * 33, "USD", "amount_too_large"),
    ],
)
def test_parse_amount_refuses(text, currency, code):
    with pytest.raises(InvalidAmount) as info:
        parse_amount(text, currency)
    error = only_error(info.value)
    assert error.code == code
    assert error.field == "amount"
    assert error.reason  # always a human explanation


def test_error_uses_given_field_name():
    with pytest.raises(InvalidAmount) as info:
        parse_amount("1.001", "USD", field="legs[0].amount")
    assert only_error(info.value).field == "legs[0].amount"


@pytest.mark.parametrize(
    ("text", "currency", "expected_reason"),
    [
        ("1.000", "CNY", "CNY has 2 decimal places"),
        ("1.0", "JPY", "JPY has no decimal places"),
        ("1.0001", "KWD", "KWD has 3 decimal places"),
        ("+1", "USD", "'+'"),
        ("1,000", "USD", "thousands separators"),
        (" 1", "USD", "spaces"),
        ("١٢٣", "USD", "ASCII"),
        ("", "USD", "empty"),
        ("1.2.3", "USD", "one decimal point"),
        (".5", "USD", "both sides"),
        ("1e3", "USD", "exponent"),
        (1.5, "USD", "JSON numbers"),
    ],
)
def test_reasons_are_specific(text, currency, expected_reason):
    with pytest.raises(InvalidAmount) as info:
        parse_amount(text, currency)
    assert expected_reason in only_error(info.value).reason


def test_error_class_code():
    with pytest.raises(InvalidAmount) as info:
        parse_amount("abc", "USD")
    assert info.value.code == "invalid_amount"
    assert isinstance(info.value, ValidationError)


def test_allow_zero():
    assert parse_amount("0", "USD", allow_zero=True) == 0
    assert parse_amount("0.00", "USD", allow_zero=True) == 0
    with pytest.raises(InvalidAmount) as info:
        parse_amount("-1", "USD", allow_zero=True)
    assert only_error(info.value).code == "amount_not_positive"


def test_parse_non_negative_amount():
    assert parse_non_negative_amount("0", "JPY") == 0
    assert parse_non_negative_amount("12.30", "EUR") == 1230
    for text in ("-0.01", "-0"):
        with pytest.raises(InvalidAmount) as info:
            parse_non_negative_amount(text, "EUR", field="overdraft_limit")
        assert only_error(info.value).code == "amount_not_positive"
        assert only_error(info.value).field == "overdraft_limit"


# --- format_amount ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (123450, "CNY", "1234.50"),
        (500, "JPY", "500"),
        (1, "KWD", "0.001"),
        (-100, "USD", "-1.00"),
        (-1, "USD", "-0.01"),
        (0, "USD", "0.00"),
        (0, "JPY", "0"),
        (0, "BHD", "0.000"),
        (110, "CNY", "1.10"),
        (-5, "KRW", "-5"),
        (MAX_AMOUNT_MINOR, "USD", "10000000000000.00"),
    ],
)
def test_format_amount(minor, currency, text):
    assert format_amount(minor, currency) == text
    assert Money(minor, currency).to_decimal_string() == text


@pytest.mark.parametrize("bad", [1.0, True, "1", None])
def test_format_amount_requires_int(bad):
    with pytest.raises(TypeError):
        format_amount(bad, "USD")


@given(
    minor=st.integers(min_value=1, max_value=MAX_AMOUNT_MINOR),
    currency=st.sampled_from(sorted(EXPONENTS)),
)
def test_round_trip(minor, currency):
    text = format_amount(minor, currency)
    assert parse_amount(text, currency) == minor
    assert format_amount(parse_amount(text, currency), currency) == text
    assert len(text.partition(".")[2]) == EXPONENTS[currency]


@given(
    minor=st.integers(min_value=1, max_value=MAX_AMOUNT_MINOR),
    currency=st.sampled_from(["CNY", "USD", "EUR"]),
)
def test_short_fraction_parses_to_canonical(minor, currency):
    # "1.5" and "1.50" are the same amount; the canonical form has all the decimals.
    canonical = format_amount(minor, currency)
    short = canonical.rstrip("0").rstrip(".") if "." in canonical else canonical
    assert format_amount(parse_amount(short, currency), currency) == canonical


# --- Money ------------------------------------------------------------------------------------


def test_money_arithmetic():
    a, b = Money(150, "USD"), Money(50, "USD")
    assert a + b == Money(200, "USD")
    assert a - b == Money(100, "USD")
    assert b - a == Money(-100, "USD")
    assert -a == Money(-150, "USD")
    assert (a - a).is_zero()
    assert not a.is_zero()


def test_money_refuses_cross_currency():
    with pytest.raises(ValueError, match=r"USD.*EUR"):
        Money(1, "USD") + Money(1, "EUR")
    with pytest.raises(ValueError):
        Money(1, "USD") - Money(1, "EUR")


def test_money_refuses_non_money_operands():
    with pytest.raises(TypeError):
        Money(1, "USD") + 1
    with pytest.raises(TypeError):
        Money(1, "USD") - 1


@pytest.mark.parametrize("amount", [1.0, True, "100", None])
def test_money_requires_int_amount(amount):
    with pytest.raises(TypeError):
        Money(amount, "USD")


def test_money_requires_known_currency():
    with pytest.raises(UnknownCurrency):
        Money(1, "usd")
    with pytest.raises(UnknownCurrency):
        Money(1, "XAU")


def test_money_is_immutable_and_hashable():
    money = Money(1, "USD")
    with pytest.raises(AttributeError):
        money.amount_minor = 2  # type: ignore[misc]
    assert {money, Money(1, "USD")} == {money}


def test_money_parse():
    assert Money.parse("1234.50", "CNY") == Money(123450, "CNY")
    assert Money.parse("0", "JPY", allow_zero=True) == Money(0, "JPY")
    with pytest.raises(InvalidAmount) as info:
        Money.parse(12.5, "USD", field="price")
    assert only_error(info.value) == FieldError(
        "price", only_error(info.value).reason, "amount_must_be_string"
    )
