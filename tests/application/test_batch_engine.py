"""The batch engine's crash-safety at the edges a process kill cannot reach from outside: a
clock that moves on between a crash and the resume."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from application.batches.engine import BatchEngine
from application.batches.files import parse_batch_file
from application.batches.handlers import SubmitBatch
from application.commands import MakeDeposit, OpenAccount, Principal
from application.service import Payledger
from tests.conftest import make_settings
from tests.interfaces.batch_helpers import iban


class Clock:
    def __init__(self) -> None:
        self.at = datetime.now(UTC).replace(hour=9)

    def now(self) -> datetime:
        return self.at


class Killed(Exception):
    """The process died after the group was sent, before its save."""


def test_a_group_resumed_the_next_day_is_the_group_whose_funds_were_held(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    maker, checker = Principal("t1", "cli:maker"), Principal("t1", "key:checker")
    with Payledger(make_settings(database_url), clock=clock) as svc:
        funding = asyncio.run(svc.accounts.open(OpenAccount("p", "EUR", "funding"), maker))
        asyncio.run(svc.accounts.deposit(MakeDeposit(funding.id, "1000.00", "dep"), maker))
        tomorrow = (clock.now() + timedelta(days=1)).date().isoformat()
        rows = ["end_to_end_id,amount,currency,name,iban,value_date"]
        rows += [f"E{i},10.00,EUR,Emp {i},{iban(i)},{tomorrow if i == 3 else ''}" for i in range(6)]
        parsed = parse_batch_file("\n".join(rows).encode())
        command = SubmitBatch(parsed, "key-1", funding.id, None, {"funds_check": False})
        batch = asyncio.run(svc.batches.submit(command, maker))
        sent: list[list[int]] = []
        send, commit = BatchEngine._send, BatchEngine._commit

        async def counting_send(self, b, items):  # type: ignore[no-untyped-def]
            sent.append([i.index for i, _a in items])
            return await send(self, b, items)

        async def dying_commit(self, method, *args):  # type: ignore[no-untyped-def]
            if method == "decide_record_group":
                raise Killed
            return await commit(self, method, *args)

        monkeypatch.setattr(BatchEngine, "_send", counting_send)
        monkeypatch.setattr(BatchEngine, "_commit", dying_commit)
        svc.committer.run(svc.decision("batches", "decide_approve", batch.id, checker, False))
        with pytest.raises(Killed):
            asyncio.run(svc.batch_runner.run(batch.id))
        assert sent == [[0, 1, 2, 4, 5]]  # item 3 is due tomorrow

        monkeypatch.setattr(BatchEngine, "_commit", commit)
        clock.at += timedelta(days=1)
        done = asyncio.run(svc.batch_runner.run(batch.id))
        assert done is not None and done.status == "completed"
        # The held group again, exactly (the channel answers a repeat by its first answer),
        # then the item that became due: each paid once, every hold settled.
        assert sent[1:] == [[0, 1, 2, 4, 5], [3]]
        account = svc.get_account(funding.id, maker)
        assert (account.balance_minor, account.reserved_minor) == (94000, 0)
        assert svc.trial_balance()["totals"] == {"EUR": 0}


def test_a_file_above_the_item_cap_is_refused_whole_and_stores_nothing(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from application.batches import intake
    from domain.errors import ValidationError

    monkeypatch.setattr(intake, "MAX_ITEMS", 5)  # the real cap is 100,000 items
    maker = Principal("t1", "cli:maker")
    with Payledger(make_settings(database_url)) as svc:
        funding = asyncio.run(svc.accounts.open(OpenAccount("p", "EUR", "funding"), maker))
        rows = ["end_to_end_id,amount,currency,name,iban"]
        rows += [f"E{i},10.00,EUR,Emp {i},{iban(i)}" for i in range(6)]
        command = SubmitBatch(
            parse_batch_file("\n".join(rows).encode()), "key-cap", funding.id, None, {}
        )
        before = svc.app.recorder.max_notification_id()
        with pytest.raises(ValidationError) as caught:
            asyncio.run(svc.batches.submit(command, maker))
        assert [(e.field, e.code) for e in caught.value.errors] == [("items", "FF01")]
        assert "at most 5 transactions" in caught.value.errors[0].reason
        assert svc.app.recorder.max_notification_id() == before
        five = SubmitBatch(
            parse_batch_file("\n".join(rows[:6]).encode()), "key-cap-5", funding.id, None, {}
        )
        assert asyncio.run(svc.batches.submit(five, maker)).item_count == 5
