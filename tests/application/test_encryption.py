"""Encryption at rest (application/encryption.py): the cipher, its settings, key rotation, and
the whole application working on encrypted stores (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import orjson
import pydantic
import pytest
from eventsourcing.cryptography import AESCipher as LibraryAESCipher
from eventsourcing.utils import Environment

from application.app import SNAPSHOT_INTERVAL
from application.audit import derive_key, verify_chain
from application.encryption import (
    CIPHER_TOPIC,
    EncryptionKeyError,
    RotatingAESCipher,
    cipher_env,
    new_key,
    parse_key,
)
from application.service import Payledger
from application.settings import Settings
from domain.accounts import Account
from projections.read_side import ReadSide
from projections.replay import verify
from tests.application.helpers import (
    CARD_DECLINED,
    CARD_OK,
    CARD_TIMEOUT,
    IBAN_AC04,
    Driver,
    stored_notifications,
)
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[2]
K1, K2, K3 = new_key(), new_key(), new_key()


def cipher(current: str, *old: str) -> RotatingAESCipher:
    env = {"CIPHER_KEY": current, "CIPHER_OLD_KEYS": ",".join(old)}
    return RotatingAESCipher(Environment(env=env))


def encrypted(database_url: str, key: str = K1, *old: str, **overrides: object) -> Settings:
    return make_settings(
        database_url, encryption_key=key, encryption_old_keys=",".join(old), **overrides
    )


@pytest.fixture
def service(database_url: str) -> Iterator[Payledger]:
    with Payledger(encrypted(database_url)) as svc:
        yield svc


def workload(d: Driver) -> dict[str, UUID]:
    """One payment of every kind and outcome, a deposit and a closed account."""
    alice, shop = d.open("alice"), d.open("shop", kind="merchant")
    d.deposit(alice, "100.00")
    spare = d.open("spare")
    d.close(spare)
    return {
        "alice": alice,
        "shop": shop,
        "internal": d.pay("10.00", payer=alice, payee=shop, description="tea").id,
        "card": d.pay("5.00", channel="card", card_number=CARD_OK, payee=shop).id,
        "declined": d.pay("5.00", channel="card", card_number=CARD_DECLINED, payee=shop).id,
        "timeout": d.pay("5.00", channel="card", card_number=CARD_TIMEOUT, payee=shop).id,
        "payout": d.pay("7.00", channel="bank_transfer", payer=alice, iban=IBAN_AC04).id,
        "wallet": d.pay("3.00", channel="alipay", wallet_payer="buyer-1", payee=shop).id,
    }


def assert_not_plaintext(state: bytes) -> None:
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(state)
    # Words of at least 5 bytes: a shorter one turns up in random bytes now and then.
    for word in (b'"amount_minor"', b"amount_minor", b"tenant", b"alice", b"last4"):
        assert word not in state


# --- the cipher ----------------------------------------------------------------------------------


def test_round_trip_and_a_fresh_nonce_every_time() -> None:
    c = cipher(K1)
    a, b = c.encrypt(b'{"x": 1}'), c.encrypt(b'{"x": 1}')
    assert a != b and a[:12] != b[:12]
    assert c.decrypt(a) == c.decrypt(b) == b'{"x": 1}'
    assert len(a) == 12 + 16 + len(b'{"x": 1}')


def test_the_stored_format_is_the_librarys_in_both_directions() -> None:
    ours, theirs = cipher(K1), LibraryAESCipher(Environment(env={"CIPHER_KEY": K1}))
    assert theirs.decrypt(ours.encrypt(b"payload")) == b"payload"
    assert ours.decrypt(theirs.encrypt(b"payload")) == b"payload"


def test_rotation_encrypts_with_the_current_key_and_reads_every_listed_key() -> None:
    under_k1 = cipher(K1).encrypt(b"old")
    under_k2 = cipher(K2, K1).encrypt(b"mid")
    rotated_twice = cipher(K3, K2, K1)
    assert rotated_twice.decrypt(under_k1) == b"old"
    assert rotated_twice.decrypt(under_k2) == b"mid"
    assert rotated_twice.key_index(rotated_twice.encrypt(b"new")) == 0
    assert rotated_twice.key_index(under_k2) == 1 and rotated_twice.key_index(under_k1) == 2
    assert cipher(K2, K1).decrypt(under_k2) == b"mid"
    with pytest.raises(ValueError, match="no configured encryption key"):
        cipher(K2).decrypt(under_k1)  # the old key was dropped too soon


def test_an_altered_value_is_refused_not_returned() -> None:
    c = cipher(K1)
    sealed = bytearray(c.encrypt(b'{"amount_minor": 100}'))
    sealed[-1] ^= 1
    with pytest.raises(ValueError):
        c.decrypt(bytes(sealed))
    with pytest.raises(ValueError, match="Damaged"):
        c.decrypt(b"short")


def test_keys_must_be_base64_of_the_right_size_and_errors_never_echo_them() -> None:
    assert len(parse_key(new_key())) == 32
    short = base64.b64encode(os.urandom(16)).decode()
    with pytest.raises(ValueError, match="32 bytes"):
        parse_key(short)
    assert len(parse_key(short, (16, 24, 32))) == 16  # an old key from AESCipher.create_key(16)
    for bad in ("not base64!", short, K1[:-4]):
        with pytest.raises(pydantic.ValidationError) as e:
            Settings(encryption_key=bad)
        assert bad not in str(e.value)
        assert "encryption_key" in str(e.value)
    with pytest.raises(pydantic.ValidationError) as e:
        Settings(encryption_key=K1, encryption_old_keys=f"{K2}, nope")
    assert "encryption_old_keys" in str(e.value) and K2 not in str(e.value)
    assert Settings(
        encryption_key=K1, encryption_old_keys=f" {K2} ,, {K3}"
    ).encryption_old_keys == (f"{K2},{K3}")
    assert K1 not in repr(Settings(encryption_key=K1))


def test_production_refuses_to_start_without_a_key() -> None:
    with pytest.raises(pydantic.ValidationError) as e:
        Settings(env="production")
    (error,) = e.value.errors()
    assert error["loc"] == ("encryption_key",)
    assert "PAYLEDGER_ENV=production" in error["msg"] and "new-encryption-key" in error["msg"]
    assert Settings(env="production", encryption_key=K1).encryption_key == K1
    assert Settings(env="development").encryption_key is None  # off unless configured
    assert cipher_env(Settings()) == {}
    assert cipher_env(Settings(encryption_key=K1, encryption_old_keys=K2)) == {
        "CIPHER_TOPIC": CIPHER_TOPIC, "CIPHER_KEY": K1, "CIPHER_OLD_KEYS": K2,
    }  # fmt: skip


def test_the_cli_prints_a_fresh_key_each_time() -> None:
    run = [sys.executable, "-m", "interfaces.cli", "db", "new-encryption-key"]
    keys = {subprocess.run(run, capture_output=True, text=True, check=True, cwd=ROOT).stdout.strip()
            for _ in range(2)}  # fmt: skip
    assert len(keys) == 2 and all(len(parse_key(k)) == 32 for k in keys)


# --- the application on an encrypted store (both stores) -------------------------------------


def test_every_stored_event_is_encrypted_and_the_application_reads_it(service: Payledger) -> None:
    d = Driver(service)
    ids = workload(d)
    assert isinstance(service.app.mapper.cipher, RotatingAESCipher)
    notifications = list(stored_notifications(service))
    assert len(notifications) > 20
    for n in notifications:
        assert_not_plaintext(n.state)
        assert CARD_OK[-4:].encode() + b'"' not in n.state
    # ... and everything reads as before: aggregates, history, time travel, the books.
    assert d.balance(ids["alice"]) == 10000 - 1000 - 700 + 700  # the payout's hold released
    card = service.get_payment(ids["card"])
    assert (card.status, card.payer["last4"]) == ("succeeded", "4242")
    assert [e.type for e in service.payment_events(ids["payout"])] == [
        "Requested", "Reserved", "Submitted", "Failed",
    ]  # fmt: skip
    assert service.get_payment_as_of_version(ids["payout"], 2).state == "reserved"
    assert service.get_payment(ids["timeout"]).status == "exception"
    d.check_books()


def test_snapshots_are_encrypted_and_time_travel_starts_from_them(
    service: Payledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(SNAPSHOT_INTERVAL, Account, 3)
    d = Driver(service)
    alice = d.open("alice")
    for n in range(1, 8):
        d.deposit(alice, f"{n}.00")
    assert service.app.snapshots is not None
    stored = list(service.app.snapshots.recorder.select_events(alice))
    assert len(stored) >= 2
    for snapshot in stored:
        assert_not_plaintext(snapshot.state)
    service.app.repository.cache = None  # type: ignore[assignment]
    assert service.app.repository.get(alice).balance_minor == 2800
    assert service.get_account(alice).balance_minor == 2800


def test_the_views_replay_and_verify_decode_through_the_cipher(service: Payledger) -> None:
    d = Driver(service)
    ids = workload(d)
    read = ReadSide(service.app, service.settings.store, follow=False)
    try:
        read.catch_up()
        row = read.model.payment("default", ids["card"])
        assert row is not None and row.payer["last4"] == "4242"
        report = verify(service.app, service.settings.store)
        assert report.ok, report.differences
    finally:
        read.close()


def test_the_audit_chain_covers_the_encrypted_bytes(service: Payledger) -> None:
    workload(Driver(service))
    report = verify_chain(service.app, derive_key(service.settings.secret_key))
    assert report.ok and report.events > 20


def test_key_rotation_keeps_history_readable_and_writes_under_the_new_key(
    database_url: str,
) -> None:
    with Payledger(encrypted(database_url, K1)) as svc:
        ids = workload(Driver(svc))
        before = svc.app.recorder.max_notification_id()
    # Rotate: K2 is current, K1 only decrypts.
    with Payledger(encrypted(database_url, K2, K1)) as svc:
        d = Driver(svc)
        more = d.pay("1.00", payer=ids["alice"], payee=ids["shop"])
        c = svc.app.mapper.cipher
        assert isinstance(c, RotatingAESCipher)
        used = [c.key_index(n.state) for n in stored_notifications(svc)]
        assert set(used[:before]) == {1} and set(used[before:]) == {0}
        assert svc.get_payment(ids["card"]).payer["last4"] == "4242"
        assert svc.get_payment(more.id).status == "succeeded"
        assert verify_chain(svc.app, derive_key(svc.settings.secret_key)).ok
        d.check_books()
    # Dropping K1 while events need it: refused at start, naming the fix.
    with pytest.raises(EncryptionKeyError, match="PAYLEDGER_ENCRYPTION_OLD_KEYS"):
        Payledger(encrypted(database_url, K2))
    # Without any key: refused at start too.
    with pytest.raises(EncryptionKeyError, match="encrypted: set PAYLEDGER_ENCRYPTION_KEY"):
        Payledger(make_settings(database_url, encryption_key=None))


def test_encryption_cannot_be_switched_on_over_plaintext_events(database_url: str) -> None:
    with Payledger(make_settings(database_url, encryption_key=None)) as svc:
        Driver(svc).open("alice")
    with pytest.raises(EncryptionKeyError, match="unencrypted events"):
        Payledger(encrypted(database_url))


def test_the_committer_process_gets_the_keys(database_url: str) -> None:
    with Payledger(encrypted(database_url, committer="process")) as svc:
        d = Driver(svc)
        payer, shop = d.open("payer"), d.open("shop", kind="merchant")
        d.deposit(payer, "10.00")
        paid = d.pay("4.00", payer=payer, payee=shop)
        assert paid.status == "succeeded" and d.balance(shop) == 400
        for n in stored_notifications(svc):  # written by the child process
            assert_not_plaintext(n.state)


def test_raw_rows_hold_no_readable_json(service: Payledger) -> None:
    """Straight from the database, not through the library: the ``state`` column."""
    workload(Driver(service))
    store = service.settings.store
    if store.kind == "sqlite":
        import sqlite3

        with sqlite3.connect(store.sqlite_path) as conn:
            rows = [r[0] for r in conn.execute("SELECT state FROM stored_events")]
            rows += [r[0] for r in conn.execute("SELECT state FROM stored_snapshots")]
    else:
        with store._pg_connect(5) as conn:
            rows = [bytes(r[0]) for r in conn.execute(
                f'SELECT state FROM "{store.schema}".payledger_events'
            )]  # fmt: skip
    assert len(rows) > 20
    for state in rows:
        assert_not_plaintext(state)


# --- a representative subset of the suite, run with encryption on ---------------------------

SUBSET = [
    "tests/application/test_payments.py",
    "tests/application/test_history.py",
    "tests/application/test_committer_process.py",
    "tests/application/test_audit_chain.py::test_an_untouched_store_verifies",
    "tests/application/test_audit_chain.py::test_an_altered_payment_event_is_caught",
    "tests/application/test_audit_chain.py::test_snapshots_are_not_chained_and_do_not_disturb_verification",
    "tests/projections/test_views.py::test_views_equal_the_aggregates_after_a_mixed_workload",
    "tests/projections/test_views.py::test_rebuild_swaps_in_equal_views_and_verify_catches_a_tampered_view",
    "tests/interfaces/test_payments_http.py",
    "tests/interfaces/test_queries_http.py",
    "tests/interfaces/test_time_travel.py",
    "tests/interfaces/test_accounts_http.py",
    # Asserts that the run above really was encrypted (both stores).
    "tests/application/test_encryption.py::test_the_suite_runs_encrypted_when_a_key_is_set",
]


def test_the_suite_runs_encrypted_when_a_key_is_set(database_url: str) -> None:
    """Settings read PAYLEDGER_ENCRYPTION_KEY from the environment, so setting it encrypts every
    store the in-process tests create. This test checks which way the current run goes."""
    with Payledger(make_settings(database_url)) as svc:
        Driver(svc).open("alice")
        state = next(iter(stored_notifications(svc))).state
        if os.environ.get("PAYLEDGER_ENCRYPTION_KEY"):
            assert isinstance(svc.app.mapper.cipher, RotatingAESCipher)
            assert_not_plaintext(state)
        else:
            assert svc.app.mapper.cipher is None and isinstance(orjson.loads(state), dict)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_representative_subset_passes_with_encryption_on() -> None:
    """Payments, history, the committer process, the audit chain, the views and the HTTP API,
    each on SQLite and PostgreSQL, in a pytest of its own with a key in the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYLEDGER_")}
    env["PAYLEDGER_ENCRYPTION_KEY"] = new_key()
    for name in ("PAYLEDGER_TEST_POSTGRES_URL",):
        if name in os.environ:
            env[name] = os.environ[name]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not browser",
         "-x", *SUBSET],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=880,
    )  # fmt: skip
    tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
    assert done.returncode == 0, tail
    assert " passed" in tail and " failed" not in tail


def test_serve_in_production_without_a_key_refuses_to_start_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYLEDGER_")}
    env |= {"PAYLEDGER_ENV": "production",
            "PAYLEDGER_DATABASE_URL": f"sqlite:///{tmp_path / 'p.sqlite3'}"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "interfaces.cli", "serve", "--port", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "PAYLEDGER_ENCRYPTION_KEY" in lines[0] and "new-encryption-key" in lines[0]
    assert not (tmp_path / "p.sqlite3").exists()  # nothing was created


@pytest.mark.parametrize(
    "assignment",
    ["state = CAST(state AS TEXT)", "state = CAST(state AS TEXT) || 'x'",
     "topic = CAST(x'ff00' AS TEXT)"],
)  # fmt: skip
def test_audit_verify_reports_encrypted_values_altered_to_text(
    sqlite_url: str, assignment: str
) -> None:
    """Ciphertext is not UTF-8: cast to TEXT it cannot be read as text, and the walk must
    report the row rather than fail."""
    with Payledger(encrypted(sqlite_url)) as svc:
        d = Driver(svc)
        alice = d.open("alice")
        d.deposit(alice, "5.00")
        conn = sqlite3.connect(svc.settings.store.sqlite_path)
        with conn:
            changed = conn.execute(
                f"UPDATE stored_events SET {assignment} "
                "WHERE originator_id = ? AND originator_version = 2",
                (alice.hex,),
            ).rowcount
        conn.close()
        assert changed == 1
        report = verify_chain(svc.app, derive_key(svc.settings.secret_key))
        assert [(b.aggregate_id, b.version) for b in report.broken] == [(alice, 2)]
