import dataclasses
import datetime
import hmac

import pytest
from stdnum import luhn

from domain.cards import CardDetails, card_brand, redact_pan, validate_card
from domain.errors import InvalidCard, ValidationError

TODAY = datetime.date(2025, 6, 15)
KEY = b"test-fingerprint-key-0123456789ab"
VISA = "4242424242424242"
AMEX = "378282246310005"


def validate(number=VISA, exp_month=12, exp_year=2030, cvc="123", **kwargs):
    kwargs.setdefault("today", TODAY)
    kwargs.setdefault("fingerprint_key", KEY)
    return validate_card(number, exp_month, exp_year, cvc, **kwargs)


def codes(exc: InvalidCard) -> dict[str, str]:
    return {e.field: e.code for e in exc.errors}


def refused(**kwargs) -> InvalidCard:
    with pytest.raises(InvalidCard) as info:
        validate(**kwargs)
    return info.value


# --- brands -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "brand"),
    [
        (VISA, "visa"),
        ("4000000000000002", "visa"),
        ("5555555555554444", "mastercard"),
        ("5105105105105100", "mastercard"),
        ("2221000000000009", "mastercard"),
        ("2720999999999996", "mastercard"),
        ("2220990000000000", "unknown"),
        ("2721000000000000", "unknown"),
        (AMEX, "amex"),
        ("341111111111111", "amex"),
        ("6200000000000005", "unionpay"),
        ("3528000000000007", "jcb"),
        ("3589000000000000", "jcb"),
        ("3527000000000000", "unknown"),
        ("3590000000000000", "unknown"),
        ("6011111111111117", "discover"),
        ("6500000000000002", "discover"),
        ("6440000000000000", "discover"),
        ("6490000000000000", "discover"),
        ("6430000000000000", "unknown"),
        ("36227206271667", "unknown"),  # Diners Club: not a brand we route
        ("", "unknown"),
        ("abcd", "unknown"),
    ],
)
def test_card_brand(number, brand):
    assert card_brand(number) == brand


# --- valid cards --------------------------------------------------------------------------------


def test_visa_test_card_is_valid():
    card = validate()
    assert card == CardDetails(
        brand="visa",
        last4="4242",
        exp_month=12,
        exp_year=2030,
        fingerprint=hmac.new(KEY, VISA.encode(), "sha256").hexdigest()[:24],
    )


@pytest.mark.parametrize("number", ["4000000000000002", "4000000000000119"])
def test_other_test_numbers_are_luhn_valid(number):
    assert luhn.is_valid(number)
    assert validate(number=number).last4 == number[-4:]


def test_card_details_never_hold_the_number_or_cvc():
    card = validate(cvc="987")
    values = [str(getattr(card, f.name)) for f in dataclasses.fields(card)]
    assert all(VISA not in value and "987" not in value for value in values)
    assert VISA not in repr(card)
    assert [f.name for f in dataclasses.fields(card)] == [
        "brand",
        "last4",
        "exp_month",
        "exp_year",
        "fingerprint",
    ]


def test_fingerprint_is_keyed_and_stable():
    first = validate().fingerprint
    assert validate().fingerprint == first
    assert len(first) == 24
    assert validate(fingerprint_key=b"another-key").fingerprint != first
    assert validate(number="4000000000000002").fingerprint != first


@pytest.mark.parametrize("key", [b"", "text-key", None])
def test_fingerprint_key_is_required_bytes(key):
    with pytest.raises(ValueError):
        validate(fingerprint_key=key)


def test_fingerprint_key_is_keyword_only_and_required():
    with pytest.raises(TypeError):
        validate_card(VISA, 12, 2030, "123", today=TODAY)  # type: ignore[call-arg]


# --- number -------------------------------------------------------------------------------------


def test_luhn_invalid_number_refused():
    error = refused(number="4242424242424241")
    assert codes(error) == {"payment_method.number": "card_number_luhn"}


@pytest.mark.parametrize(
    "number",
    [
        "4242 4242 4242 4242",
        "4242-4242-4242-4242",
        "424242424242",  # 12 digits
        "42424242424242424242",  # 20 digits
        "",
        "\uff14\uff12" * 8,  # full-width digits
        4242424242424242,
        None,
    ],
)
def test_malformed_number_refused(number):
    assert codes(refused(number=number)) == {"payment_method.number": "card_number_invalid"}


# --- expiry -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("month", "year"),
    [(6, 2025), (7, 2025), (1, 2026), (12, 9999)],
)
def test_not_expired(month, year):
    card = validate(exp_month=month, exp_year=year)
    assert (card.exp_month, card.exp_year) == (month, year)


def test_current_month_is_valid_until_its_last_day():
    validate(exp_month=6, exp_year=2025, today=datetime.date(2025, 6, 30))
    error = refused(exp_month=6, exp_year=2025, today=datetime.date(2025, 7, 1))
    assert codes(error) == {"payment_method.exp_year": "card_expired"}


@pytest.mark.parametrize(("month", "year"), [(5, 2025), (12, 2024), (7, 2024)])
def test_expired(month, year):
    assert codes(refused(exp_month=month, exp_year=year)) == {
        "payment_method.exp_year": "card_expired"
    }


@pytest.mark.parametrize("month", [0, 13, -1, True, "12", 6.0, None])
def test_bad_month(month):
    assert codes(refused(exp_month=month)) == {"payment_method.exp_month": "exp_month_invalid"}


@pytest.mark.parametrize("year", [30, 999, 10000, True, "2030", 2030.0, None])
def test_bad_year(year):
    assert codes(refused(exp_year=year)) == {"payment_method.exp_year": "exp_year_invalid"}


# --- cvc ----------------------------------------------------------------------------------------


def test_amex_needs_four_digit_cvc():
    assert validate(number=AMEX, cvc="1234").brand == "amex"
    assert codes(refused(number=AMEX, cvc="123")) == {"payment_method.cvc": "cvc_invalid"}


@pytest.mark.parametrize("cvc", ["1234", "12", "12a", "", " 123", 123, None, "١٢٣"])
def test_bad_cvc_for_visa(cvc):
    assert codes(refused(cvc=cvc)) == {"payment_method.cvc": "cvc_invalid"}


def test_cvc_length_is_not_guessed_when_number_is_bad():
    # The brand is unknown, so only the cvc's own shape is checked.
    assert codes(refused(number="1234", cvc="1234")) == {
        "payment_method.number": "card_number_invalid"
    }


# --- errors -------------------------------------------------------------------------------------


def test_all_errors_are_collected_together():
    error = refused(number="4242424242424241", exp_month=13, exp_year=25, cvc="1")
    assert codes(error) == {
        "payment_method.number": "card_number_luhn",
        "payment_method.exp_month": "exp_month_invalid",
        "payment_method.exp_year": "exp_year_invalid",
        "payment_method.cvc": "cvc_invalid",
    }
    assert isinstance(error, ValidationError)
    assert error.code == "invalid_card"


def test_field_prefix():
    error = refused(cvc="1", field_prefix="source.card")
    assert codes(error) == {"source.card.cvc": "cvc_invalid"}


@pytest.mark.parametrize(
    "number", ["4242424242424241", "4242 4242 4242 4242", "42424242424242424242", VISA]
)
def test_errors_never_echo_the_number(number):
    error = refused(number=number, exp_month=0, cvc="9")
    texts = [str(error), error.message, *(e.reason for e in error.errors)]
    digits = number.replace(" ", "")
    for text in texts:
        assert number not in text
        assert digits not in text
        assert digits[-8:] not in text


# --- redact_pan ---------------------------------------------------------------------------------


def test_redact_pan_on_log_line():
    line = f"charge failed card={VISA} amount=12.50 order=12345 amex {AMEX}."
    assert redact_pan(line) == (
        "charge failed card=[REDACTED-PAN] amount=12.50 order=12345 amex [REDACTED-PAN]."
    )


def test_redact_pan_grouped_numbers():
    assert redact_pan("pan 4242 4242 4242 4242 exp 12/30") == "pan [REDACTED-PAN] exp 12/30"
    assert redact_pan("pan 4242-4242-4242-4242") == "pan [REDACTED-PAN]"
    assert redact_pan("amex 3782 822463 10005") == "amex [REDACTED-PAN]"


def test_redact_pan_keeps_what_is_not_a_pan():
    line = "id=4242424242424241 short=424242424242 long=42424242424242424242 t=2025-06-15"
    assert redact_pan(line) == line


def test_redact_pan_several_and_adjacent():
    assert redact_pan(f"{VISA},{VISA}") == "[REDACTED-PAN],[REDACTED-PAN]"
    assert redact_pan("") == ""
