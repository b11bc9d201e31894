"""The pipelined committer: the next group is decided while one is saved, never answered first.

Each test holds the saver thread inside a save (``SaveGate``), so what the committer thread does
meanwhile can be watched: which decisions run, on what state, and who is answered when. The
store is real (SQLite and PostgreSQL).
"""

from __future__ import annotations

import threading
from typing import Any
from uuid import uuid4

import pytest

from application.committer import Committer
from application.unit_of_work import UnitOfWork
from domain.accounts import Account
from tests.application.test_committer import (
    WAIT_S,
    crediter,
    make_app,
    open_account,
    opener,
    stored_balance,
)

NOT_YET_S = 0.5  # how long to watch for something that must not happen


@pytest.fixture
def app(database_url: str):
    application = make_app(database_url)
    yield application
    application.close()


@pytest.fixture
def committer(app):
    made = Committer(app, pipeline=True)
    yield made
    made.stop()


class SaveGate:
    """Holds the next save inside the event store until released (then it fails, if told to)."""

    def __init__(self, app: Any, monkeypatch: pytest.MonkeyPatch, fail: Exception | None = None):
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        real_put = app.events.put

        def put(events: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == 1:
                self.entered.set()
                assert self.release.wait(WAIT_S), "save gate never opened"
                if fail is not None:
                    raise fail
            return real_put(events, **kwargs)

        monkeypatch.setattr(app.events, "put", put)


def tracked(decide: Any) -> tuple[Any, threading.Event, list[Any]]:
    """A decide that signals each time it runs and records what it returned."""
    ran = threading.Event()
    returned: list[Any] = []

    def run(uow: UnitOfWork) -> Any:
        value = decide(uow)
        returned.append(value)
        ran.set()
        return value

    return run, ran, returned


def test_the_next_group_is_decided_during_a_save_and_answered_after_it(app, committer, monkeypatch):
    account_id = committer.run(opener()).value[1]
    gate = SaveGate(app, monkeypatch)
    first = committer.submit(crediter(account_id, 5))
    assert gate.entered.wait(WAIT_S)
    decide, decided, returned = tracked(crediter(account_id, 7))
    second = committer.submit(decide)
    # Decided while the first group is still inside its save, from the state it leaves...
    assert decided.wait(WAIT_S), "the next group was not decided during the save"
    assert returned == [12]
    # ... but nobody is answered before their group is in the store.
    assert not first.done() and not second.done()
    assert stored_balance(app, account_id) == 0
    gate.release.set()
    assert first.result(WAIT_S).value == 5
    assert second.result(WAIT_S).value == 12
    assert first.result().position < second.result().position  # saved in order
    assert stored_balance(app, account_id) == 12
    assert committer.stats["pipelined"] >= 1 and committer.stats["voided"] == 0


def test_a_conflict_in_the_save_voids_the_group_decided_after_it(
    app, database_url, committer, monkeypatch
):
    account_id = committer.run(opener()).value[1]
    committer.run(crediter(account_id, 1))  # cached at version 2
    other = make_app(database_url, create_table=False)
    try:  # another process writes version 3: this committer's copy is stale
        stale_elsewhere = other.repository.get(account_id)
        stale_elsewhere.credit(uuid4(), uuid4(), 100, at=stale_elsewhere.modified_on,
                               actor="other-process")  # fmt: skip
        other.save(stale_elsewhere)
    finally:
        other.close()
    gate = SaveGate(app, monkeypatch)
    first = committer.submit(crediter(account_id, 10))  # decided on the stale copy: 11
    assert gate.entered.wait(WAIT_S)
    decide, decided, returned = tracked(crediter(account_id, 1000))
    second = committer.submit(decide)
    assert decided.wait(WAIT_S)
    assert returned == [1011]  # on a state that will never be stored
    gate.release.set()
    assert first.result(WAIT_S).value == 111  # redone from the store: 1 + 100 + 10
    assert second.result(WAIT_S).value == 1111  # decided again after it, not 1011
    assert returned == [1011, 1111]
    assert stored_balance(app, account_id) == 1111
    assert committer.stats["voided"] == 1


def test_a_failed_save_is_told_to_its_callers_and_the_next_group_is_redone(
    app, committer, monkeypatch
):
    account_id = committer.run(opener()).value[1]
    gate = SaveGate(app, monkeypatch, fail=OSError("disk on fire"))
    first = committer.submit(crediter(account_id, 10))
    assert gate.entered.wait(WAIT_S)
    decide, decided, returned = tracked(crediter(account_id, 1))
    second = committer.submit(decide)
    assert decided.wait(WAIT_S)
    assert returned == [11]
    gate.release.set()
    with pytest.raises(OSError, match="disk on fire"):
        first.result(WAIT_S)
    assert second.result(WAIT_S).value == 1  # the 10 never happened
    assert stored_balance(app, account_id) == 1
    assert committer.run(crediter(account_id, 2)).value == 3  # no leaked in-memory credits


def test_a_reload_during_a_save_sees_the_group_being_saved(app, committer, monkeypatch):
    """A refusal re-reads the balance from the store; while the group ahead is being saved the
    store is behind, so the copy it is saving is the fresh one."""
    account_id = committer.run(opener()).value[1]
    gate = SaveGate(app, monkeypatch)
    committer.submit(crediter(account_id, 10))
    assert gate.entered.wait(WAIT_S)

    def reload_balance(uow: UnitOfWork) -> int:
        account = uow.reload(account_id, Account)
        assert account is not None
        return account.balance_minor

    reader = committer.submit(reload_balance)
    gate.release.set()
    assert reader.result(WAIT_S).value == 10


def test_a_group_that_wrote_uncached_aggregates_is_saved_before_the_next_is_decided(
    app, committer, monkeypatch
):
    """A batch's items are kept out of the cache, so the next group could not see them until
    they are stored: it waits."""
    hidden = open_account()

    def add_uncached(uow: UnitOfWork) -> str:
        uow.add(hidden, cache=False)
        return "added"

    gate = SaveGate(app, monkeypatch)
    first = committer.submit(add_uncached)
    assert gate.entered.wait(WAIT_S)
    decide, decided, returned = tracked(lambda uow: uow.get(hidden.id, Account) is not None)
    second = committer.submit(decide)
    assert not decided.wait(NOT_YET_S), "decided before the group it depends on was stored"
    gate.release.set()
    assert first.result(WAIT_S).value == "added"
    assert second.result(WAIT_S).value is True
    assert returned == [True]


def test_many_payments_through_the_pipeline_add_up(app, committer):
    """Groups saved back to back while others are decided: every credit counted once."""
    account_id = committer.run(opener()).value[1]
    results: list[int] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        for _ in range(n):
            value = committer.run(crediter(account_id, 3), timeout_s=WAIT_S).value
            with lock:
                results.append(value)

    threads = [threading.Thread(target=client, args=(25,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S * 3)
    assert len(results) == 200
    assert sorted(results) == list(range(3, 601, 3))  # each saw every credit before it
    assert stored_balance(app, account_id) == 600
    assert committer.stats["pipelined"] > 0
