"""Time travel over HTTP (``?as_of_version=``, ``?as_of=``) and in the CLI (``--as-of-version``,
``--as-of``): past states rebuilt from the event store, on both stores.

The server's service runs on a clock the tests move, so every event has a known timestamp."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from application.service import Payledger
from interfaces.cli.main import app as cli_app
from interfaces.http.app import create_app
from tests.conftest import make_settings
from tests.interfaces.conftest import Api, LiveServer, card, serving
from tests.interfaces.test_validation_http import assert_problem, field_codes

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
STATE_AFTER = {
    "Requested": "requested",
    "Rejected": "rejected",
    "Reserved": "reserved",
    "Submitted": "submitted",
    "Succeeded": "succeeded",
    "Failed": "failed",
    "OutcomeUnknown": "exception",
}
ACCOUNT_KEYS = {
    "id", "owner", "currency", "kind", "balance", "reserved", "available", "overdraft_limit",
    "closed", "iban", "created_at",
}  # fmt: skip


class ManualClock:
    def __init__(self) -> None:
        self.t = T0

    def now(self) -> datetime:
        return self.t

    def advance(self, **delta: float) -> datetime:
        self.t += timedelta(**delta)
        return self.t


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def live_server(database_url: str, clock: ManualClock) -> Iterator[LiveServer]:
    with (
        Payledger(make_settings(database_url), clock=clock) as svc,
        serving(create_app(service=svc)) as live,
    ):
        yield live


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def get_ok(client: httpx.Client, url: str, **params: Any) -> dict[str, Any]:
    response = client.get(url, params=params)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def history(client: httpx.Client, api: Api, clock: ManualClock) -> dict[str, Any]:
    """alice is funded with 100.00, then pays the shop 30.00 and 20.00, a minute apart."""
    times = {"opened": clock.t}
    alice = api.open_account()["id"]
    shop = api.merchant()
    times["funded"] = clock.advance(minutes=1)
    api.deposit(alice, "100.00")
    payments = []
    for name, amount in (("first", "30.00"), ("second", "20.00")):
        times[name] = clock.advance(minutes=1)
        paid = api.pay(
            {"amount": amount, "currency": "CNY", "channel": "internal",
             "payer_account_id": alice, "payee_account_id": shop}
        )  # fmt: skip
        assert paid.status_code == 201 and paid.json()["status"] == "succeeded", paid.text
        payments.append(paid.json()["id"])
    return {"alice": alice, "shop": shop, "times": times, "payments": payments}


# --- HTTP ------------------------------------------------------------------------------------


def test_payment_at_every_version_follows_its_audit_history(
    client: httpx.Client, api: Api, clock: ManualClock
) -> None:
    shop = api.merchant()
    clock.advance(seconds=5)
    paid = api.pay(
        {"amount": "12.00", "currency": "CNY", "channel": "card", "payee_account_id": shop,
         "payment_method": card("4000000000000119")}  # the sandbox times out: exception
    )  # fmt: skip
    assert paid.status_code == 201 and paid.json()["status"] == "exception", paid.text
    payment_id = paid.json()["id"]
    events = get_ok(client, f"/v1/payments/{payment_id}/events")["events"]
    assert len(events) >= 3

    for event in events:
        past = get_ok(client, f"/v1/payments/{payment_id}", as_of_version=event["version"])
        assert past["state"] == STATE_AFTER[event["type"]]
        assert past["as_of_version"] == event["version"]
        assert parse(past["as_of"]) == parse(event["timestamp"])
    first = get_ok(client, f"/v1/payments/{payment_id}", as_of_version=1)
    assert (first["status"], first["completed_at"]) == ("processing", None)

    now = get_ok(client, f"/v1/payments/{payment_id}")
    assert now == paid.json()  # no time travel asked: today's exact shape
    assert "as_of_version" not in now and "as_of" not in now
    latest = get_ok(client, f"/v1/payments/{payment_id}", as_of_version=len(events))
    assert latest == now | {"as_of_version": len(events), "as_of": latest["as_of"]}


def test_account_balance_as_of_a_time_between_two_payments(
    client: httpx.Client, api: Api, clock: ManualClock
) -> None:
    h = history(client, api, clock)
    alice, times = h["alice"], h["times"]
    url = f"/v1/accounts/{alice}"

    between = get_ok(client, url, as_of=iso(times["first"] + timedelta(seconds=30)))
    assert between["balance"] == "70.00"
    assert set(between) == ACCOUNT_KEYS | {"as_of", "as_of_version"}
    assert parse(between["as_of"]) == times["first"] + timedelta(seconds=30)
    assert isinstance(between["as_of_version"], int) and between["as_of_version"] > 1
    assert get_ok(client, url, as_of=iso(times["funded"]))["balance"] == "100.00"
    assert get_ok(client, url, as_of=iso(times["second"]))["balance"] == "50.00"
    assert get_ok(client, url, as_of=iso(times["opened"]))["balance"] == "0.00"
    # An offset is honoured (httpx sends "+" as %2B); without one the time is UTC.
    assert get_ok(client, url, as_of="2026-03-01T17:02:30+08:00")["balance"] == "70.00"
    assert get_ok(client, url, as_of="2026-03-01T09:02:30")["balance"] == "70.00"
    # A "+" left unencoded arrives as a space, and still means "+".
    raw = client.get(f"{url}?as_of=2026-03-01T17:00:30+08:00")
    assert raw.status_code == 200 and raw.json()["balance"] == "0.00", raw.text
    shop = get_ok(client, f"/v1/accounts/{h['shop']}", as_of=iso(times["second"]))
    assert shop["balance"] == "50.00"

    now = get_ok(client, url)
    assert set(now) == ACCOUNT_KEYS and now["balance"] == "50.00"
    same = ACCOUNT_KEYS - {"balance", "available"}
    assert {k: between[k] for k in same} == {k: now[k] for k in same}


def test_before_the_account_was_opened_is_404(
    client: httpx.Client, api: Api, clock: ManualClock
) -> None:
    alice = api.open_account()["id"]

    before = client.get(f"/v1/accounts/{alice}", params={"as_of": iso(T0 - timedelta(hours=1))})
    problem = assert_problem(before, 404, "account_not_found")
    assert "did not exist yet" in problem["detail"]
    unknown = client.get(f"/v1/accounts/{uuid.uuid4()}", params={"as_of": iso(T0)})
    assert "did not exist yet" not in assert_problem(unknown, 404, "account_not_found")["detail"]
    missing = client.get(f"/v1/payments/{uuid.uuid4()}", params={"as_of_version": 1})
    assert_problem(missing, 404, "payment_not_found")


@pytest.mark.parametrize(
    ("param", "value", "expected"),
    [
        ("as_of_version", "0", ("as_of_version", "invalid")),
        ("as_of_version", "-3", ("as_of_version", "invalid")),
        ("as_of_version", "99", ("as_of_version", "version_not_reached")),
        ("as_of_version", "two", ("as_of_version", "int_parsing")),
        ("as_of_version", "1.5", ("as_of_version", "int_parsing")),
        ("as_of", "yesterday", ("as_of", "invalid_datetime")),
        ("as_of", "", ("as_of", "invalid_datetime")),
        ("as_of", "2026-02-30T10:00:00Z", ("as_of", "invalid_datetime")),
        ("as_of", "1" * 65, ("as_of", "string_too_long")),
    ],
)
def test_bad_time_travel_is_422_naming_the_field(
    client: httpx.Client, api: Api, param: str, value: str, expected: tuple[str, str]
) -> None:
    alice = api.funded_account("10.00")
    payment = api.pay(
        {"amount": "1.00", "currency": "CNY", "channel": "internal",
         "payer_account_id": alice, "payee_account_id": api.merchant()}
    ).json()  # fmt: skip
    url = f"/v1/payments/{payment['id']}" if param == "as_of_version" else f"/v1/accounts/{alice}"

    problem = assert_problem(client.get(url, params={param: value}), 422, "validation_error")

    assert field_codes(problem) == {expected}
    if value and expected[1] != "version_not_reached":
        assert value not in problem["detail"]
    if expected[1] == "version_not_reached":
        versions = len(get_ok(client, f"/v1/payments/{payment['id']}/events")["events"])
        assert problem["errors"][0]["reason"] == f"payment has only {versions} versions"


def test_openapi_documents_the_time_travel_parameters(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]

    def query(path: str) -> dict[str, Any]:
        params = paths[path]["get"]["parameters"]
        return {p["name"]: p for p in params if p["in"] == "query"}

    assert "Time travel" in query("/v1/payments/{payment_id}")["as_of_version"]["description"]
    assert "ISO 8601" in query("/v1/accounts/{account_id}")["as_of"]["description"]


# --- CLI -------------------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, live_server: LiveServer):  # type: ignore[no-untyped-def]
    """``payledger ...`` in-process on the server's database (reads need no clock)."""
    monkeypatch.setenv("PAYLEDGER_DATABASE_URL", live_server.service.settings.database_url)
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(cli_app, list(args), catch_exceptions=False)

    return run


def test_cli_shows_past_states(client: httpx.Client, api: Api, clock: ManualClock, cli) -> None:  # type: ignore[no-untyped-def]
    h = history(client, api, clock)
    alice, times = h["alice"], h["times"]
    payment_id = h["payments"][0]

    shown = cli("accounts", "show", alice, "--as-of", iso(times["first"] + timedelta(seconds=30)),
                "--json")  # fmt: skip
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.stdout)
    assert data["balance"] == "70.00" and data["as_of_version"] > 1
    assert parse(data["as_of"]) == times["first"] + timedelta(seconds=30)
    naive = cli("accounts", "show", alice, "--as-of", "2026-03-01 09:01:30", "--json")
    assert json.loads(naive.stdout)["balance"] == "100.00"
    table = cli("accounts", "show", alice, "--as-of", iso(times["funded"]))
    assert table.exit_code == 0 and "100.00" in table.stdout and "as of 2026-03-01" in table.stdout
    today = json.loads(cli("accounts", "show", alice, "--json").stdout)
    assert today["balance"] == "50.00" and "as_of" not in today and "as_of_version" not in today

    events = get_ok(client, f"/v1/payments/{payment_id}/events")["events"]
    for event in events:
        past = cli("payments", "show", payment_id, "--as-of-version", str(event["version"]),
                   "--json", "--events")  # fmt: skip
        assert past.exit_code == 0, past.output
        data = json.loads(past.stdout)
        assert data["state"] == STATE_AFTER[event["type"]]
        assert data["as_of_version"] == event["version"]
        assert [e["version"] for e in data["events"]] == list(range(1, event["version"] + 1))
    human = cli("payments", "show", payment_id, "--as-of-version", "1")
    assert human.exit_code == 0, human.output
    assert "processing" in human.stdout and "as of version 1" in human.stdout


def test_cli_bad_time_travel_exits_2_or_3(client: httpx.Client, api: Api, cli) -> None:  # type: ignore[no-untyped-def]
    alice = api.funded_account("10.00")
    payment = api.pay(
        {"amount": "1.00", "currency": "CNY", "channel": "internal",
         "payer_account_id": alice, "payee_account_id": api.merchant()}
    ).json()  # fmt: skip

    bad_time = cli("accounts", "show", alice, "--as-of", "yesterday")
    assert bad_time.exit_code == 2 and "as_of" in bad_time.stderr
    assert len(bad_time.stderr.splitlines()) == 1
    too_far = cli("payments", "show", payment["id"], "--as-of-version", "99")
    assert too_far.exit_code == 2 and "payment has only" in too_far.stderr
    zero = cli("payments", "show", payment["id"], "--as-of-version", "0")
    assert zero.exit_code == 2 and "as_of_version" in zero.stderr
    assert cli("payments", "show", payment["id"], "--as-of-version", "x").exit_code == 2
    before = cli("accounts", "show", alice, "--as-of", "2000-01-01T00:00:00Z")
    assert before.exit_code == 3 and "did not exist yet" in before.stderr
