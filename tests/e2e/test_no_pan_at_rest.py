"""Card numbers never reach an event, a view, a log or an answer.

A real ``payledger serve`` (its log captured, every request logged) takes a workload full of
card numbers: valid cards paid with (and replayed), card numbers put where they do not belong
(description, metadata keys and values, account owners, beneficiary names, wallet payer ids,
idempotency keys, X-Request-ID), malformed requests carrying them (refused with 422, whose
problem must not echo them), card numbers in paths, query strings and the Authorization header;
the CLI pays with a card and is refused one as a key; the views are rebuilt and verified and the
hash chain is walked. Then every byte the run left is scanned for a Luhn-valid 13-19 digit
number (python-stdnum's ``luhn``):

* every file in the SQLite store's folder (database, WAL, lock files), raw;
* every table of the store (SQLite, or the PostgreSQL schema: every text, bytea and json
  column), each value as stored and, where the event store's cipher opens it, decrypted;
* the server's log, every HTTP answer, the CLI's output.

Run on SQLite without encryption (the raw bytes are the plaintext) and on PostgreSQL with
encryption at rest (the scan decrypts). Positive controls show the scanner finds what it looks for.

What is not a card number: a digit run inside one of our own random hex values of 20+ hex
characters with a letter among them (card tokens and fingerprints, request fingerprints, the
sandbox channels' references, digests), and the digits of a valid IBAN.
"""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from schwifty import IBAN
from schwifty.exceptions import SchwiftyException
from stdnum import luhn

from application.encryption import RotatingAESCipher, new_key
from application.store import parse_database_url
from tests.conftest import idempotency_key, make_postgres_url, require_postgres
from tests.e2e.conftest import Cli, Server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Test cards of every length and network the sandbox accepts (13 to 19 digits).
CARDS = (
    "4242424242424242", "4000056655665556", "4111111111111111", "4012888888881881",
    "5555555555554444", "2223003122003222", "5105105105105100", "378282246310005",
    "371449635398431", "6011111111111117", "6011000990139424", "3056930009020004",
    "36227206271667", "3566002020360505", "6200000000000005", "6205500000000000004",
    "4222222222222", "4000000000000002", "4000000000009995", "4000000000000119",
)  # fmt: skip
PAN = CARDS[0]
SPACED = "4242 4242 4242 4242"
DASHED = "5555-5555-5555-4444"
AMEX_GROUPED = "3782 822463 10005"
IBAN_OK = "DE89370400440532013000"
IBAN_LUHN = "BE15539792296030"  # a valid IBAN whose digits happen to pass the Luhn check

# The same shapes domain/cards.py redacts, written out again so that the test does not trust it.
_CANDIDATE = re.compile(
    r"(?<![0-9])(?:[0-9]{13,19}|[0-9]{4}(?:[ -][0-9]{4}){3}|[0-9]{4}[ -][0-9]{6}[ -][0-9]{5})"
    r"(?![0-9])"
)
_HEX = frozenset("0123456789abcdefABCDEF")
HEX_TOKEN_MIN = 20  # our shortest: the sandbox channel references, "card_" + 20 hex


def _inside_hex_token(text: str, start: int, end: int) -> bool:
    """Part of a random hex value of ours (card token, fingerprint, digest, request id)."""
    lo, hi = start, end
    while lo > 0 and text[lo - 1] in _HEX:
        lo -= 1
    while hi < len(text) and text[hi] in _HEX:
        hi += 1
    run = text[lo:hi]
    return hi - lo >= HEX_TOKEN_MIN and any(c.isalpha() for c in run)


def _inside_iban(text: str, start: int, end: int) -> bool:
    if start < 2 or not (text[start - 2 : start].isalpha() and text[start - 2 : start].isupper()):
        return False
    hi = end
    while hi < len(text) and text[hi].isalnum():
        hi += 1
    try:
        IBAN(text[start - 2 : hi])
    except SchwiftyException:
        return False
    return True


def find_pans(text: str) -> list[str]:
    """Every Luhn-valid 13-19 digit number in ``text`` (bare, or grouped 4-4-4-4 / 4-6-5)."""
    found = []
    for m in _CANDIDATE.finditer(text):
        digits = re.sub(r"[ -]", "", m.group())
        if not luhn.is_valid(digits):
            continue
        if _inside_hex_token(text, m.start(), m.end()) or _inside_iban(text, m.start(), m.end()):
            continue
        found.append(digits)
    return found


def masked(pan: str) -> str:
    return f"{pan[:6]}...{pan[-4:]} ({len(pan)} digits)"


@dataclass
class Findings:
    places: list[str] = field(default_factory=list)
    scanned: int = 0  # values or files looked at

    def scan(self, where: str, data: bytes | str | None) -> None:
        if data is None:
            return
        self.scanned += 1
        text = data.decode("latin-1") if isinstance(data, bytes | bytearray | memoryview) else data
        for pan in find_pans(text):
            self.places.append(f"{where}: {masked(pan)}")


Decrypt = Callable[[bytes], bytes | None]


def decrypter(key: str | None) -> Decrypt:
    if key is None:
        return lambda value: None
    cipher = RotatingAESCipher({"CIPHER_KEY": key})

    def decrypt(value: bytes) -> bytes | None:
        try:
            return cipher.decrypt(value)
        except ValueError:
            return None

    return decrypt


def scan_value(findings: Findings, where: str, value: Any, decrypt: Decrypt) -> int:
    """Scan one stored value as it is and, when the cipher opens it, decrypted; return 1 when it
    was decrypted."""
    if isinstance(value, memoryview):
        value = bytes(value)
    if isinstance(value, bytes):
        findings.scan(where, value)
        plain = decrypt(value)
        if plain is not None:
            findings.scan(f"{where} (decrypted)", plain)
            return 1
        return 0
    if isinstance(value, str):
        findings.scan(where, value)
    elif isinstance(value, dict | list):
        findings.scan(where, json.dumps(value))
    return 0


def scan_files(findings: Findings, folder: Path) -> None:
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        findings.scan(f"file {path.name}", path.read_bytes())


def scan_sqlite(findings: Findings, path: str, decrypt: Decrypt) -> int:
    decrypted = 0
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            cursor = conn.execute(f'SELECT * FROM "{table}"')
            names = [d[0] for d in cursor.description]
            for i, row in enumerate(cursor):
                for name, value in zip(names, row, strict=True):
                    decrypted += scan_value(findings, f"{table}.{name} row {i}", value, decrypt)
    return decrypted


PG_TYPES = ("text", "bytea", "character varying", "character", "json", "jsonb")


def scan_postgres(findings: Findings, url: str, decrypt: Decrypt) -> int:
    store = parse_database_url(url)
    decrypted = 0
    with store._pg_connect(5) as conn:
        columns: dict[str, list[str]] = {}
        for table, column in conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = %s AND data_type = ANY(%s) ORDER BY table_name, ordinal_position",
            (store.schema, list(PG_TYPES)),
        ):
            columns.setdefault(table, []).append(column)
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (store.schema,),
        )]  # fmt: skip
        assert {"payledger_events", "view_payments"} <= set(tables), tables
        for table, names in columns.items():
            quoted = ", ".join(f'"{n}"' for n in names)
            for i, row in enumerate(
                conn.execute(f'SELECT {quoted} FROM "{store.schema}"."{table}"')
            ):
                for name, value in zip(names, row, strict=True):
                    decrypted += scan_value(findings, f"{table}.{name} row {i}", value, decrypt)
    return decrypted


# --- the workload --------------------------------------------------------------------------------


@dataclass
class Workload:
    client: httpx.Client
    answers: list[httpx.Response] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.client.request(method, path, **kwargs)
        self.answers.append(response)
        self.sent.append(f"{path} {kwargs!r}")
        return response

    def pay(self, body: dict[str, Any], key: str | None = None, **headers: str) -> httpx.Response:
        headers = {"Idempotency-Key": key or idempotency_key(), **headers}
        return self.call("POST", "/v1/payments", json=body, headers=headers)


def card(number: str) -> dict[str, Any]:
    cvc = "1234" if number[:2] in ("34", "37") else "123"  # Amex has 4 digits
    return {"type": "card", "number": number, "exp_month": 12, "exp_year": 2035, "cvc": cvc}


def refused(response: httpx.Response, code: str = "pan_in_free_text") -> None:
    assert response.status_code == 422, response.text
    assert code in {e["code"] for e in response.json()["errors"]}, response.text


def run_workload(w: Workload) -> dict[str, str]:
    account = w.call("POST", "/v1/accounts", json={"owner": "alice", "currency": "CNY"})
    assert account.status_code == 201, account.text
    payer = account.json()["id"]
    merchant = {"owner": "tea shop", "currency": "CNY", "kind": "merchant"}
    shop = w.call("POST", "/v1/accounts", json=merchant).json()["id"]
    deposit = w.call("POST", f"/v1/accounts/{payer}/deposits", json={"amount": "500.00"},
                     headers={"Idempotency-Key": idempotency_key()})  # fmt: skip
    assert deposit.status_code == 201, deposit.text
    base = {"amount": "1.00", "currency": "CNY"}
    to_shop = base | {"channel": "card", "payee_account_id": shop}

    # Valid cards, as card numbers: paid, then replayed with the same key.
    for number in CARDS:
        key = idempotency_key()
        first = w.pay(to_shop | {"payment_method": card(number)}, key)
        assert first.status_code == 201, first.text
        assert first.json()["payer"]["last4"] == number[-4:]
        assert w.pay(to_shop | {"payment_method": card(number)}, key).status_code == 200
        w.call("GET", f"/v1/payments/{first.json()['id']}/events")
        w.call("GET", f"/v1/payments/{first.json()['id']}?as_of_version=1")

    # Card numbers where free text goes: refused, nothing recorded, nothing echoed.
    internal = base | {"channel": "internal", "payer_account_id": payer, "payee_account_id": shop}
    for text in (PAN, f"order for card {SPACED}", f"card:{DASHED}", AMEX_GROUPED, f"x{CARDS[5]}y"):
        refused(w.pay(internal | {"description": text}))
        refused(w.pay(internal | {"metadata": {"note": text}}))
    refused(w.pay(internal | {"metadata": {PAN: "card"}}))
    refused(w.pay(internal, key=PAN))
    refused(w.pay(internal, key=f"order-{CARDS[3]}"))
    wallet = base | {"channel": "alipay", "payee_account_id": shop}
    refused(w.pay(wallet | {"payment_method": {"type": "alipay", "payer_id": PAN}}))
    payout = base | {"channel": "bank_transfer", "payer_account_id": payer}
    beneficiary = {"type": "bank_account", "iban": IBAN_OK, "name": f"Bob {CARDS[1]}"}
    refused(w.pay(payout | {"beneficiary": beneficiary}))
    paid_out = w.pay(payout | {"beneficiary": beneficiary | {"name": "Bob", "iban": IBAN_LUHN}})
    assert paid_out.status_code == 201, paid_out.text  # stored: the scan must tell it apart
    refused(w.call("POST", "/v1/accounts", json={"owner": f"Card {PAN}", "currency": "CNY"}))
    refused(w.call("POST", "/v1/accounts", json={"owner": "bob", "currency": "CNY"},
                   headers={"Idempotency-Key": PAN}))  # fmt: skip
    refused(w.call("POST", f"/v1/accounts/{payer}/deposits", json={"amount": "1.00"},
                   headers={"Idempotency-Key": CARDS[2]}))  # fmt: skip

    # Malformed requests carrying card numbers: 422 (or 4xx), never echoing them.
    bad_bodies: list[Any] = [
        to_shop | {"payment_method": card(SPACED)},
        to_shop | {"payment_method": card(PAN[:-1] + "3")},  # checksum fails: not a PAN
        to_shop | {"payment_method": card(PAN) | {"cvc": PAN}},
        to_shop | {"payment_method": card(PAN) | {"exp_month": int(PAN)}},
        to_shop | {"payment_method": card(PAN) | {"number": int(PAN)}},
        to_shop | {"payment_method": card(PAN) | {"pan": PAN}},
        internal | {"payment_method": card(PAN)},  # a card on an internal transfer
        base | {"channel": "card", "payment_method": card(PAN)},  # no payee
        to_shop | {"payment_method": card(PAN), "amount": PAN},
        to_shop | {"payment_method": card(PAN), "currency": PAN},
        internal | {"payer_account_id": PAN},
        internal | {"card_number": PAN},
        internal | {PAN: PAN},
        payout | {"beneficiary": beneficiary | {"name": "Bob", "iban": PAN}},
        payout | {"beneficiary": beneficiary | {"name": "Bob", "bic": PAN}},
        payout | {"beneficiary": beneficiary | {"name": "Bob", "iban": f"DE00{PAN}"}},
        [PAN],
    ]
    for body in bad_bodies:
        answer = w.pay(body)
        assert 400 <= answer.status_code < 500, (answer.status_code, answer.text)
    for raw in (f'{{"amount": {PAN}', f'{{"number": "{PAN}"', PAN):
        answer = w.call("POST", "/v1/payments", content=raw.encode(),
                        headers={"Idempotency-Key": idempotency_key(),
                                 "content-type": "application/json"})  # fmt: skip
        assert answer.status_code in (400, 422), answer.text

    # Card numbers in paths, query strings and headers.
    for method, path in (
        ("GET", f"/v1/payments/{PAN}"),
        ("GET", f"/v1/payments/{PAN}/events"),
        ("GET", f"/v1/accounts/{PAN}"),
        ("GET", f"/v1/accounts/{PAN}/entries"),
        ("GET", f"/v1/payments?payer={PAN}&cursor={PAN}&status={PAN}"),
        ("GET", f"/v1/metrics?channel={PAN}&from={PAN}"),
        ("GET", f"/dashboard?channel={PAN}&period={PAN}"),
        ("GET", f"/{PAN}"),
        ("POST", f"/v1/accounts/{PAN}/close"),
    ):
        answer = w.call(method, path)
        assert answer.status_code >= 400, (path, answer.status_code)
    w.call("GET", "/healthz", headers={"X-Request-ID": PAN})
    w.call("GET", "/v1/payments", headers={"Authorization": f"Bearer {PAN}"})
    w.call("GET", "/v1/payments", headers={"Authorization": f"Basic {PAN}"})

    # Reads that make the views and the dashboard show everything.
    reads = ("/v1/payments?limit=100", f"/v1/accounts/{shop}/entries?limit=100",
             f"/v1/accounts/{shop}", "/v1/metrics", "/metrics", "/dashboard?refresh=0")  # fmt: skip
    for path in reads:
        answer = w.call("GET", path)
        assert answer.status_code == 200, (path, answer.text)
    return {"payer": payer, "shop": shop}


def cli_steps(cli: Cli, shop: str) -> list[str]:
    """The CLI on the same store: a card payment, a card number as key and as owner (refused),
    then rebuild and verify the views and walk the hash chain."""
    outputs = []
    paid = cli("pay", "--amount", "2.00", "--currency", "CNY", "--channel", "card", "--card",
               CARDS[4], "--exp", "12/2035", "--cvc", "123", "--to", shop, "--json")  # fmt: skip
    outputs += [paid.stdout, paid.stderr]
    as_key = cli("pay", "--amount", "2.00", "--currency", "CNY", "--channel", "card",
                 "--card", CARDS[6], "--exp", "12/2035", "--cvc", "123", "--to", shop,
                 "--key", CARDS[7])  # fmt: skip
    assert as_key.code == 2, as_key.stderr
    owner = cli("accounts", "open", "--owner", f"Mr {CARDS[8]}", "--currency", "CNY")
    assert owner.code == 2, owner.stderr
    outputs += [as_key.stdout, as_key.stderr, owner.stdout, owner.stderr]
    for args in (("replay",), ("replay", "--verify"), ("audit", "verify"), ("payments", "list")):
        done = cli(*args)
        assert done.code == 0, (args, done.stdout, done.stderr)
        outputs += [done.stdout, done.stderr]
    return outputs


# --- the test ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    store: str
    encrypted: bool
    log_format: str


SETUPS = [
    pytest.param(Setup("sqlite", False, "text"), id="sqlite-plaintext-text-log"),
    pytest.param(
        Setup("postgres", True, "json"),
        id="postgres-encrypted-json-log",
        marks=pytest.mark.postgres,
    ),
]


@pytest.fixture
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Setup, str, Path]]:
    setup: Setup = request.param
    data = tmp_path / "data"
    data.mkdir()
    if setup.store == "sqlite":
        yield setup, f"sqlite:///{data / 'payledger.sqlite3'}", data
    else:
        require_postgres()
        url = make_postgres_url()
        try:
            yield setup, url, data
        finally:
            parse_database_url(url).drop()


@pytest.mark.parametrize("database", SETUPS, indirect=True)
@pytest.mark.timeout(600)
def test_no_card_number_at_rest_in_logs_or_answers(
    database: tuple[Setup, str, Path], start_server: Callable[..., Server], tmp_path: Path
) -> None:
    setup, url, data = database
    key = new_key() if setup.encrypted else None
    env = {"PAYLEDGER_LOG_FORMAT": setup.log_format}
    if key:
        env["PAYLEDGER_ENCRYPTION_KEY"] = key
    server = start_server(url, "--access-log", cwd=tmp_path, env=env)
    with server.client() as client:
        w = Workload(client)
        ids = run_workload(w)
    cli = Cli(url, tmp_path, extra_env=env)
    cli_outputs = cli_steps(cli, ids["shop"])
    # Stop the server so that its log and the store are complete.
    server.process.terminate()
    server.process.wait(timeout=20)

    # Positive control: the scanner finds every card number that was sent.
    sent = Findings()
    sent.scan("requests", "\n".join(w.sent))
    assert {p.split(": ")[1] for p in sent.places} >= {masked(c) for c in CARDS}

    findings = Findings()
    for i, answer in enumerate(w.answers):
        findings.scan(f"answer {i} {answer.request.method} {answer.status_code}", answer.text)
        findings.scan(f"answer {i} headers", repr(answer.headers.multi_items()))
    for i, text in enumerate(cli_outputs):
        findings.scan(f"cli output {i}", text)
    log = server.log()
    assert "payledger.access" in log and "/v1/payments" in log  # the request log was on
    if setup.log_format == "json":
        lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        assert any(line.get("status") == 422 for line in lines)
    findings.scan("server log", log)
    decrypt = decrypter(key)
    if setup.store == "sqlite":
        scan_files(findings, data)
        decrypted = scan_sqlite(findings, url[len("sqlite:///") :], decrypt)
    else:
        decrypted = scan_postgres(findings, url, decrypt)
    assert findings.scanned > 500
    if setup.encrypted:
        assert decrypted > 100  # the events and snapshots were read decrypted too
    assert findings.places == [], "card numbers found:\n" + "\n".join(findings.places[:50])

    # Positive control: the same scan finds a card number stored anywhere, encrypted or not.
    planted = Findings()
    if setup.store == "sqlite":
        with sqlite3.connect(url[len("sqlite:///") :]) as conn:
            conn.execute("CREATE TABLE planted (t TEXT, b BLOB)")
            conn.execute("INSERT INTO planted VALUES (?, ?)", (f"x {CARDS[9]} y", b"0000"))
        scan_sqlite(planted, url[len("sqlite:///") :], decrypt)
        scan_files(planted, data)
        assert len(planted.places) >= 2, planted.places
    else:
        assert key is not None
        sealed = RotatingAESCipher({"CIPHER_KEY": key}).encrypt(f'{{"n": "{CARDS[9]}"}}'.encode())
        store = parse_database_url(url)
        with store._pg_connect(5) as conn:
            conn.execute(f'CREATE TABLE "{store.schema}".planted (t text, b bytea)')
            conn.execute(f'INSERT INTO "{store.schema}".planted VALUES (%s, %s)',
                         (f"x {CARDS[9]} y", sealed))  # fmt: skip
            conn.commit()
        scan_postgres(planted, url, decrypt)
        assert sorted(p.split(" row")[0] for p in planted.places) == ["planted.b", "planted.t"]


def test_the_scanner_knows_a_card_number_from_our_own_values() -> None:
    assert find_pans(f"pay {PAN} now") == [PAN]
    assert find_pans(f"x{SPACED}y, {DASHED}; {AMEX_GROUPED}") == [
        SPACED.replace(" ", ""), DASHED.replace("-", ""), AMEX_GROUPED.replace(" ", ""),
    ]  # fmt: skip
    assert find_pans(f"tok_{PAN}") == [PAN]  # a short hex-ish run: still a card number
    assert find_pans("4242424242424241 1234567890123 12345678901234567890") == []
    token = "tok_" + "ab" + "4242424242424242" + "cdef01"  # 24 hex chars: one of our tokens
    assert find_pans(token) == []
    assert find_pans("card_871121000000001766ab") == []  # a sandbox reference (20 hex)
    assert find_pans("x 871121000000001766 y") == ["871121000000001766"]
    assert find_pans("ab4242424242424242") == [PAN]  # 18 hex characters: too short for ours
    # A valid IBAN whose 14 digits pass the Luhn check is an IBAN, not a card number.
    assert luhn.is_valid(IBAN_LUHN[2:]) and find_pans(f"iban {IBAN_LUHN}") == []
    assert find_pans(f"XX{IBAN_LUHN[2:]}") == [IBAN_LUHN[2:]]
    assert find_pans(str(uuid.UUID(int=4242424242424242424242424242))) == []
