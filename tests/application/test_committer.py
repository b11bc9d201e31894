"""The group committer in isolation, over a real store (SQLite and PostgreSQL).

Decide functions here open and credit plain ``Account`` aggregates, so every effect is easy to
check in the store afterwards.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import CancelledError
from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest

from application.app import PayledgerApp
from application.committer import Committed, Committer, CommitterStopped, Overloaded
from application.unit_of_work import UnitOfWork
from domain.accounts import Account, AccountKind
from tests.conftest import make_settings

T0 = datetime(2025, 1, 2, tzinfo=UTC)
WAIT_S = 20


class Boom(Exception):
    pass


def counts(committer: Committer) -> dict[str, float]:
    """The committer's counters (its timings are measured too, but vary)."""
    keys = ("groups", "commands", "group_retries", "single_saves")
    return {key: committer.stats[key] for key in keys}


def make_app(database_url: str, *, create_table: bool = True) -> PayledgerApp:
    store = make_settings(database_url).store
    if create_table:
        store.prepare()
    return PayledgerApp(env=store.eventsourcing_env(create_table=create_table))


@pytest.fixture
def app(database_url: str) -> Iterator[PayledgerApp]:
    application = make_app(database_url)
    yield application
    application.close()


@pytest.fixture
def make_committer(app: PayledgerApp) -> Iterator:
    made: list[Committer] = []

    def make(**kwargs) -> Committer:
        committer = Committer(app, **kwargs)
        made.append(committer)
        return committer

    yield make
    for committer in made:
        committer.stop()


def open_account(account_id: UUID | None = None) -> Account:
    return Account.open(
        account_id=account_id or uuid4(), tenant="default", owner="o", currency="CNY",
        kind=AccountKind.CUSTOMER, overdraft_limit_minor=0, at=T0, actor="test",
    )  # fmt: skip


def opener(account_id: UUID | None = None):
    """A decide that opens an account (or replays it when it already exists)."""
    account_id = account_id or uuid4()

    def decide(uow: UnitOfWork) -> tuple[str, UUID]:
        existing = uow.get_if_known(account_id, Account)
        if existing is not None:
            return ("existing", account_id)
        account = open_account(account_id)
        uow.add(account)
        return ("opened", account_id)

    return decide


def crediter(account_id: UUID, amount: int, *, raise_after: bool = False):
    def decide(uow: UnitOfWork) -> int:
        account = uow.get(account_id, Account)
        assert account is not None
        account.credit(uuid4(), uuid4(), amount, at=uow.now, actor="test")
        if raise_after:
            raise Boom("changed something, then failed")
        return account.balance_minor

    return decide


def raiser_before_change(account_id: UUID):
    def decide(uow: UnitOfWork) -> None:
        uow.get(account_id, Account)  # reads, changes nothing
        raise Boom("refused before changing anything")

    return decide


def stored_balance(app: PayledgerApp, account_id: UUID) -> int:
    return app.repository.get(account_id).balance_minor


def stored_events(app: PayledgerApp, account_id: UUID) -> list:
    return list(app.repository.event_store.get(account_id))


class Gate:
    """A decide that blocks the committer thread until opened, so jobs pile up in the queue."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def decide(self, uow: UnitOfWork) -> str:
        self.entered.set()
        assert self.release.wait(WAIT_S), "gate never opened"
        return "gate"

    def hold(self, committer: Committer):
        future = committer.submit(self.decide)
        assert self.entered.wait(WAIT_S)
        return future


def test_waiting_commands_are_saved_in_one_group(app, make_committer):
    committer = make_committer(group_max=50)
    gate = Gate()
    gate_future = gate.hold(committer)
    futures = [committer.submit(opener()) for _ in range(20)]
    gate.release.set()
    results = [f.result(WAIT_S) for f in futures]
    assert gate_future.result(WAIT_S).value == "gate"
    assert all(isinstance(r, Committed) and r.value[0] == "opened" for r in results)
    assert len({r.position for r in results}) == 1  # one save, one position for all
    assert counts(committer) == {"groups": 2, "commands": 21, "group_retries": 0, "single_saves": 0}
    for r in results:
        assert stored_events(app, r.value[1])


def test_groups_are_capped_at_group_max(app, make_committer):
    committer = make_committer(group_max=5)
    gate = Gate()
    gate.hold(committer)
    futures = [committer.submit(opener()) for _ in range(20)]
    gate.release.set()
    positions = [f.result(WAIT_S).position for f in futures]
    assert committer.stats["groups"] == 1 + 4
    assert len(set(positions)) == 4
    assert positions == sorted(positions)  # arrival order is commit order


def test_commands_in_a_group_see_each_others_effects(app, make_committer):
    committer = make_committer()
    account_id = committer.run(opener()).value[1]
    gate = Gate()
    gate.hold(committer)
    futures = [committer.submit(crediter(account_id, 10)) for _ in range(10)]
    gate.release.set()
    assert [f.result(WAIT_S).value for f in futures] == list(range(10, 101, 10))
    assert stored_balance(app, account_id) == 100


def test_a_command_failing_before_changing_anything_fails_alone(app, make_committer):
    committer = make_committer()
    account_id = committer.run(opener()).value[1]
    gate = Gate()
    gate.hold(committer)
    ok1 = committer.submit(crediter(account_id, 5))
    bad = committer.submit(raiser_before_change(account_id))
    ok2 = committer.submit(crediter(account_id, 7))
    gate.release.set()
    assert ok1.result(WAIT_S).value == 5
    assert ok2.result(WAIT_S).value == 12
    with pytest.raises(Boom, match="before"):
        bad.result(WAIT_S)
    assert ok1.result().position == ok2.result().position  # still one group, one save
    assert committer.stats["group_retries"] == 0 and committer.stats["single_saves"] == 0
    assert stored_balance(app, account_id) == 12


def test_a_command_failing_after_a_change_does_not_leak_it(app, make_committer):
    committer = make_committer()
    account_id = committer.run(opener()).value[1]
    other_id = committer.run(opener()).value[1]
    gate = Gate()
    gate.hold(committer)
    ok1 = committer.submit(crediter(account_id, 5))
    bad = committer.submit(crediter(account_id, 1_000, raise_after=True))
    new = committer.submit(opener())
    ok2 = committer.submit(crediter(other_id, 7))
    ok3 = committer.submit(crediter(account_id, 3))
    gate.release.set()
    with pytest.raises(Boom, match="then failed"):
        bad.result(WAIT_S)
    assert ok1.result(WAIT_S).value == 5
    assert ok3.result(WAIT_S).value == 8  # never saw the raiser's credit
    assert ok2.result(WAIT_S).value == 7
    assert new.result(WAIT_S).value[0] == "opened"
    assert stored_balance(app, account_id) == 8
    assert stored_balance(app, other_id) == 7
    credits = [e.amount_minor for e in stored_events(app, account_id)[1:]]
    assert credits == [5, 3]
    # a command that broke after changing something sends the group straight to one by one
    assert committer.stats["group_retries"] == 1
    # The cache holds no half-applied state: the next command sees exactly what is stored.
    assert committer.run(crediter(account_id, 1)).value == 9


def test_duplicate_id_created_outside_the_cache_is_resolved_by_the_fallback(app, make_committer):
    committer = make_committer()
    shared = committer.run(opener()).value[1]
    outside = open_account()
    app.save(outside)  # another process created it: this committer's cache never saw it
    gate = Gate()
    gate.hold(committer)
    before = committer.stats["group_retries"]
    credit = committer.submit(crediter(shared, 11))
    duplicate = committer.submit(opener(outside.id))
    fresh_id = uuid4()
    fresh = committer.submit(opener(fresh_id))
    gate.release.set()
    assert duplicate.result(WAIT_S).value == ("existing", outside.id)
    assert fresh.result(WAIT_S).value == ("opened", fresh_id)
    assert credit.result(WAIT_S).value == 11
    assert committer.stats["group_retries"] == before + 1  # optimistic failed, fresh succeeded
    assert len(stored_events(app, outside.id)) == 1
    assert len(stored_events(app, fresh_id)) == 1
    assert stored_balance(app, shared) == 11  # the redone group credited once, not twice


def test_conflict_with_another_writer_is_retried_from_fresh_state(
    app, database_url, make_committer
):
    committer = make_committer()
    account_id = committer.run(opener()).value[1]
    committer.run(crediter(account_id, 1))  # now cached at version 2
    other = make_app(database_url, create_table=False)
    try:
        stale_elsewhere = other.repository.get(account_id)
        stale_elsewhere.credit(uuid4(), uuid4(), 100, at=T0, actor="other-process")
        other.save(stale_elsewhere)
    finally:
        other.close()
    assert committer.run(crediter(account_id, 10)).value == 111
    assert stored_balance(app, account_id) == 111
    assert committer.stats["group_retries"] == 1


def test_a_failing_save_fails_its_group_and_the_committer_recovers(
    app, make_committer, monkeypatch
):
    committer = make_committer()
    account_id = committer.run(opener()).value[1]
    real_put = app.events.put  # where the committer's saves go
    calls = {"n": 0}

    def flaky_put(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("disk on fire")
        return real_put(*args, **kwargs)

    monkeypatch.setattr(app.events, "put", flaky_put)
    gate = Gate()
    gate.hold(committer)
    futures = [committer.submit(crediter(account_id, 5)) for _ in range(3)]
    gate.release.set()
    for future in futures:
        with pytest.raises(OSError, match="disk on fire"):
            future.result(WAIT_S)
    assert stored_balance(app, account_id) == 0
    assert committer.run(crediter(account_id, 2)).value == 2  # no leaked in-memory credits
    assert stored_balance(app, account_id) == 2


def test_overloaded_when_the_queue_is_full(app, make_committer):
    committer = make_committer(queue_max=3)
    gate = Gate()
    gate.hold(committer)  # taken off the queue: the queue is empty again
    queued = [committer.submit(opener()) for _ in range(3)]
    with pytest.raises(Overloaded):
        committer.submit(opener())
    gate.release.set()
    assert [f.result(WAIT_S).value[0] for f in queued] == ["opened"] * 3
    assert committer.run(opener()).value[0] == "opened"  # room again


def test_cancelled_callers_are_skipped(app, make_committer):
    committer = make_committer()
    ran: list[str] = []

    def tracked(name: str):
        decide = opener()

        def run(uow: UnitOfWork):
            ran.append(name)
            return decide(uow)

        return run

    gate = Gate()
    gate.hold(committer)
    first = committer.submit(tracked("first"))  # cancelled while at the head of the queue
    second = committer.submit(tracked("second"))
    third = committer.submit(tracked("third"))  # cancelled in the middle of a group
    fourth = committer.submit(tracked("fourth"))
    assert first.cancel() and third.cancel()
    gate.release.set()
    assert second.result(WAIT_S).value[0] == "opened"
    assert fourth.result(WAIT_S).value[0] == "opened"
    assert ran == ["second", "fourth"]
    for future in (first, third):
        with pytest.raises(CancelledError):
            future.result(0)
    assert committer.stats["commands"] == 1 + 2


def test_stopped_committer_refuses_new_commands(app, make_committer):
    committer = make_committer()
    assert committer.run(opener()).value[0] == "opened"
    committer.stop()
    with pytest.raises(CommitterStopped):
        committer.submit(opener())


def test_commands_queued_before_stop_still_complete(app, make_committer):
    committer = make_committer()
    gate = Gate()
    gate.hold(committer)
    futures = [committer.submit(opener()) for _ in range(5)]
    stopper = threading.Thread(target=committer.stop)
    stopper.start()
    gate.release.set()
    stopper.join(WAIT_S)
    assert [f.result(WAIT_S).value[0] for f in futures] == ["opened"] * 5


def test_read_only_commands_save_nothing(app, make_committer):
    committer = make_committer()
    account_id = committer.run(opener()).value[1]
    before = app.recorder.max_notification_id()
    result = committer.run(lambda uow: uow.get(account_id, Account).balance_minor)
    assert result.value == 0 and result.position is None
    assert app.recorder.max_notification_id() == before


def test_commit_here_decides_and_saves_on_the_calling_thread_in_groups(app, make_committer):
    """What the committer process's main thread does: no hand-off to the committer thread."""
    committer = make_committer(group_max=3)
    account_id = committer.run(opener()).value[1]
    threads: list[str] = []

    def credit(amount: int):
        inner = crediter(account_id, amount)

        def decide(uow: UnitOfWork) -> int:
            threads.append(threading.current_thread().name)
            return inner(uow)

        return decide

    before = counts(committer)
    futures = committer.commit_here(
        [credit(n) for n in (1, 2, 3, 4, 5)] + [raiser_before_change(account_id)]
    )
    assert all(future.done() for future in futures)  # settled before it returns
    assert [f.result().value for f in futures[:5]] == [1, 3, 6, 10, 15]
    with pytest.raises(Boom):
        futures[5].result()
    assert set(threads) == {threading.current_thread().name}
    assert counts(committer)["groups"] == before["groups"] + 2  # 6 decisions, groups of 3
    assert futures[2].result().position < futures[3].result().position  # two saves, in order
    assert stored_balance(app, account_id) == 15
