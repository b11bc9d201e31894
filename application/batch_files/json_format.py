"""The API's JSON batch items, in.

Each item is a JSON object whose keys are the CSV columns (see ``csv_format``): ``end_to_end_id``,
``amount``, ``currency``, ``name``, ``iban`` or ``payee_account_id``, and optionally ``bic``,
``value_date``, ``priority``, ``depends_on``, ``remittance``, ``instruction_id``, ``channel``.

Values are strings, except ``priority`` (an integer). ``amount`` is a decimal *string*
(``"1500.00"``): a JSON number is refused, because it may already have been rounded through a
binary float on its way here. ``value_date`` is ``"YYYY-MM-DD"``. A missing key or ``null`` means
"no value"; an item's ``currency`` defaults to the batch's. As for CSV, whether a value is
acceptable is decided item by item by the batch rules; this only refuses what is not an item
(``BatchFileError`` with one ``FieldError`` per problem, e.g. ``items[3].amount``, code FF01).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from application.batch_files.csv_format import COLUMNS, parse_date
from application.batch_files.model import BatchFileError, FieldError, RawItem, location_error

MAX_ITEMS = 100_000
MAX_ERRORS = 20
_TEXT_KEYS = tuple(key for key in COLUMNS if key not in ("value_date", "priority"))


def parse_json_items(items: list[dict[str, Any]], currency: str | None) -> list[RawItem]:
    """The API body's ``items`` as ``RawItem``s; ``currency`` is the batch's default currency."""
    if not isinstance(items, list):
        raise location_error("items", "must be a list of objects")
    if len(items) > MAX_ITEMS:
        raise location_error("items", f"at most {MAX_ITEMS} items, got {len(items)}")
    errors: list[FieldError] = []
    parsed: list[RawItem] = []
    for i, item in enumerate(items):
        parsed.append(_item(f"items[{i}]", item, currency, errors))
        if len(errors) >= MAX_ERRORS:
            break
    if errors:
        raise BatchFileError(errors[:MAX_ERRORS])
    return parsed


def _item(where: str, item: object, currency: str | None, errors: list[FieldError]) -> RawItem:
    if not isinstance(item, dict):
        errors.append(FieldError(where, "must be an object", "FF01"))
        return RawItem(where, None, None, None)
    unknown = [key for key in item if key not in COLUMNS]
    for key in unknown:
        reason = f"unknown key; known: {', '.join(COLUMNS)}"
        errors.append(FieldError(f"{where}.{key}", reason, "FF01"))
    text = {key: _text(where, key, item.get(key), errors) for key in _TEXT_KEYS}
    return RawItem(
        location=where,
        end_to_end_id=text["end_to_end_id"],
        amount=text["amount"],
        currency=text["currency"] if text["currency"] is not None else currency,
        iban=text["iban"],
        bic=text["bic"],
        name=text["name"],
        payee_account_id=text["payee_account_id"],
        channel=text["channel"],
        instruction_id=text["instruction_id"],
        value_date=_value_date(where, item.get("value_date"), errors),
        priority=_priority(where, item.get("priority"), errors),
        depends_on=text["depends_on"],
        remittance=text["remittance"],
    )


def _text(where: str, key: str, value: object, errors: list[FieldError]) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if key == "amount" and isinstance(value, int | float) and not isinstance(value, bool):
        reason = 'must be a decimal string such as "1500.00", not a JSON number'
    else:
        reason = f"must be a string, not {_json_type(value)}"
    errors.append(FieldError(f"{where}.{key}", reason, "FF01"))
    return None


def _value_date(where: str, value: object, errors: list[FieldError]) -> date | None:
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise ValueError(f"must be a string, not {_json_type(value)}")
        return parse_date(value)
    except ValueError as e:
        errors.append(FieldError(f"{where}.value_date", str(e), "FF01"))
        return None


def _priority(where: str, value: object, errors: list[FieldError]) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    reason = f"must be an integer, not {_json_type(value)}"
    errors.append(FieldError(f"{where}.priority", reason, "FF01"))
    return None


def _json_type(value: object) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    names.update({list: "an array", dict: "an object"})
    return names.get(type(value), type(value).__name__)
