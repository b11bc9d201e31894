"""A projector process that dies is replaced, and a dead one never hangs the API process.

Before the bell was a pipe, a projector killed while it held its ``multiprocessing.Event``'s
lock left the API process blocked for good on the next nudge after a commit, and on shutdown."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from application.service import Payledger
from projections.projector_process import HURRY, NUDGE, STOP, ProjectorProcess, _answer_the_door
from projections.queries import PaymentFilter
from projections.read_side import ReadSide
from tests.application.helpers import Driver
from tests.conftest import make_settings
from tests.waiting import wait_until


@pytest.fixture
def served(database_url: str) -> Iterator[tuple[Payledger, ReadSide]]:
    with Payledger(make_settings(database_url)) as svc:
        side = ReadSide(
            svc.app, svc.settings.store, projector=lambda: ProjectorProcess(svc.settings)
        )
        svc.on_commit = side.nudge
        yield svc, side
        side.close()


def test_a_killed_projector_is_restarted_and_the_views_resume_without_double_counting(
    served: tuple[Payledger, ReadSide],
) -> None:
    svc, side = served
    projector = side.follower
    assert isinstance(projector, ProjectorProcess)
    d = Driver(svc)
    payer, shop = d.open("payer", "CNY"), d.open("shop", "CNY", kind="merchant")
    d.deposit(payer, "100.00")
    d.pay("10.00", payer=payer, payee=shop)
    assert side.model.wait_for("payments", d.position(), 10)
    first = projector.pid

    os.kill(first, signal.SIGKILL)
    # Commits go on while no projector runs: nudging a dead child must not block.
    done = threading.Event()

    def pay_twice() -> None:
        d.pay("1.00", payer=payer, payee=shop)
        d.pay("2.00", payer=payer, payee=shop)
        done.set()

    threading.Thread(target=pay_twice, daemon=True).start()
    assert done.wait(20), "a commit hung on the dead projector"

    assert wait_until(lambda: projector.restarts == 1 and projector.is_alive(), 30)
    assert projector.pid != first
    assert side.model.wait_for("payments", d.position(), 20)
    assert side.model.wait_for("accounts", d.position(), 20)
    paid = side.model.payments("default", PaymentFilter(payer=str(payer))).items
    assert sorted(p.amount_minor for p in paid) == [100, 200, 1000]  # each once
    view = side.model.account("default", payer)
    assert view is not None and view.balance_minor == 10000 - 1300 == d.balance(payer)
    assert side.model.account("default", shop).balance_minor == 1300  # type: ignore[union-attr]


def test_stopping_after_the_projector_was_killed_returns_promptly(database_url: str) -> None:
    with Payledger(make_settings(database_url)) as svc:
        projector = ProjectorProcess(svc.settings)
        os.kill(projector.pid, signal.SIGKILL)
        projector.nudge()
        stopper = threading.Thread(target=projector.stop, daemon=True)
        stopper.start()
        stopper.join(30)
        assert not stopper.is_alive(), "stop() hung on a killed projector"
        assert not projector.is_alive()


def test_a_projector_that_cannot_start_is_retried_less_and_less_often(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import projections.projector_process as module

    with Payledger(make_settings(database_url)) as svc:
        projector = ProjectorProcess(svc.settings)
        monkeypatch.setattr(module, "RESTART_AFTER_S", 0.01)
        monkeypatch.setattr(module, "RESTART_BACKOFF_MAX_S", 0.16)
        attempts: list[float] = []
        start = projector._start

        def failing_start():  # type: ignore[no-untyped-def]
            attempts.append(time.monotonic())
            if len(attempts) < 6:
                raise module.ProjectorStartError("the database is down")
            return start()

        monkeypatch.setattr(projector, "_start", failing_start)
        os.kill(projector.pid, signal.SIGKILL)  # type: ignore[arg-type]
        try:
            assert wait_until(lambda: projector.restarts == 1 and projector.is_alive(), 30)
        finally:
            projector.stop()
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        assert len(attempts) == 6
        # Doubling from 0.01 s after each failure, up to the cap (without it: 0.01 s each).
        waits = [0.02, 0.04, 0.08, 0.16, 0.16]
        assert all(gap >= 0.95 * wait for gap, wait in zip(gaps, waits, strict=True)), gaps


def test_the_doorman_turns_a_hurry_into_a_hurry_and_a_nudge_and_stops_on_stop() -> None:
    """The API process rings NUDGE after commits and HURRY while a reader waits for the views;
    only HURRY may cut the projector's gathering short (projections/runner.py, Follower)."""
    door, bell = multiprocessing.Pipe(duplex=False)
    nudge, stop, hurry = threading.Event(), threading.Event(), threading.Event()
    doorman = threading.Thread(
        target=_answer_the_door, args=(door, os.getppid(), nudge, stop, hurry), daemon=True
    )
    doorman.start()
    try:
        os.write(bell.fileno(), NUDGE)
        wait_until(nudge.is_set, timeout_s=5)
        assert not hurry.is_set()
        nudge.clear()
        os.write(bell.fileno(), HURRY)
        wait_until(hurry.is_set, timeout_s=5)
        wait_until(nudge.is_set, timeout_s=5)
        assert not stop.is_set()
        os.write(bell.fileno(), STOP)
        doorman.join(5)
        assert not doorman.is_alive() and stop.is_set()
    finally:
        door.close(), bell.close()


def test_the_commits_answered_in_one_turn_of_an_event_loop_ring_the_bell_once(
    served: tuple[Payledger, ReadSide],
) -> None:
    """A group's payments are answered in one turn of the API process's loop: one byte down
    the pipe (and one wake-up of the projector's doorman) for all of them, not one each."""
    _, side = served
    projector = side.follower
    assert isinstance(projector, ProjectorProcess)
    rung: list[bytes] = []
    ring = projector._ring
    projector._ring = lambda byte: (rung.append(byte), ring(byte))  # type: ignore[method-assign]

    async def one_turn_then_another() -> None:
        for _ in range(30):
            projector.nudge()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        projector.nudge()
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(one_turn_then_another())
    assert rung == [NUDGE, NUDGE]
    projector.nudge()  # no running loop (a CLI command): at once
    assert rung == [NUDGE, NUDGE, NUDGE]

    # A loop that stops before its ring is due (and is closed) silences no other loop.
    stopped = asyncio.new_event_loop()

    def nudge_and_stop() -> None:
        projector.nudge()
        stopped.stop()

    stopped.call_soon(nudge_and_stop)
    stopped.run_forever()
    stopped.close()
    assert rung == [NUDGE, NUDGE, NUDGE]
    asyncio.run(one_turn_then_another())
    assert rung == [NUDGE] * 5
