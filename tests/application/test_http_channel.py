"""``HttpChannel`` against the channel simulator running as a real process on a loopback port.

Every outcome is what the simulator really did: a charge it made shows in its status endpoint,
whatever answer reached us. Fault rates are set at run time (``PUT /_sim/config``) and reset
before each test."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from application.channels.base import ChannelOutcome, ChargeRequest
from application.channels.http import (
    BATCH_CHUNK_MAX,
    HttpChannel,
    HttpChannelConfig,
    configured_channels,
)
from application.channels.sandbox import SandboxChannel
from application.service import Payledger
from interfaces.channel_sim.process import SimulatorProcess, free_port, simulator_process
from interfaces.channel_sim.provider import reference_of
from tests.application.helpers import (
    CARD_DECLINED,
    CARD_OK,
    CARD_TIMEOUT,
    IBAN_AC04,
    IBAN_OK,
    Driver,
)
from tests.conftest import make_settings

QUIET = {
    "latency_ms": 0, "decline_rate": 0.0, "timeout_rate": 0.0, "timeout_s": 5.0,
    "error_rate": 0.0, "drop_rate": 0.0,
}  # fmt: skip


@pytest.fixture(scope="module")
def sim_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorProcess]:
    with simulator_process("--seed", "7", log_dir=tmp_path_factory.mktemp("sim")) as sim:
        yield sim


@pytest.fixture
def sim(sim_process: SimulatorProcess) -> SimulatorProcess:
    sim_process.configure(**QUIET)
    return sim_process


def channel(
    base_url: str, name: str = "card", *, retries: int = 2, read_timeout_s: float = 2.0,
    budget_s: float = 10.0,
) -> HttpChannel:  # fmt: skip
    config = HttpChannelConfig(
        base_url, connect_timeout_s=1.0, read_timeout_s=read_timeout_s, retries=retries,
        budget_s=budget_s,
    )  # fmt: skip
    return HttpChannel(name, config)


def card_charge(number: str = CARD_OK, amount_minor: int = 1234) -> ChargeRequest:
    return ChargeRequest(
        payment_id=uuid.uuid4(), channel="card", amount_minor=amount_minor, currency="EUR",
        payer={"type": "card", "last4": number[-4:]}, payee={"type": "account"},
        secret={"card_number": number},
    )  # fmt: skip


def payout(iban: str, amount_minor: int = 50_000) -> ChargeRequest:
    return ChargeRequest(
        payment_id=uuid.uuid4(), channel="bank_transfer", amount_minor=amount_minor,
        currency="EUR", payer={"type": "account"}, payee={"type": "iban", "iban": iban},
    )  # fmt: skip


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def execute_then_status(ch: HttpChannel, request: ChargeRequest) -> tuple[Any, Any]:
    try:
        return await ch.execute(request), await ch.status(request.payment_id)
    finally:
        await ch.aclose()


# --- outcomes ----------------------------------------------------------------------------------


def test_a_charge_succeeds_with_the_providers_reference(sim: SimulatorProcess) -> None:
    request = card_charge()
    result, status = run(execute_then_status(channel(sim.base_url), request))
    assert result.outcome is ChannelOutcome.SUCCEEDED
    assert result.reference == reference_of("card", str(request.payment_id))
    assert status == result
    charged = sim.charge(request.payment_id)
    assert charged is not None
    assert (charged["amount"], charged["currency"]) == ("12.34", "EUR")
    assert charged["status"] == "succeeded"


def test_a_declined_card_fails_and_nothing_is_charged(sim: SimulatorProcess) -> None:
    request = card_charge(CARD_DECLINED)
    result, status = run(execute_then_status(channel(sim.base_url), request))
    assert (result.outcome, result.code) == (ChannelOutcome.FAILED, "card_declined")
    assert status.outcome is ChannelOutcome.FAILED


def test_a_read_timeout_is_unknown_but_the_charge_was_made(sim: SimulatorProcess) -> None:
    request = card_charge(CARD_TIMEOUT)
    ch = channel(sim.base_url, retries=0, read_timeout_s=0.3)
    started = time.monotonic()
    result, status = run(execute_then_status(ch, request))
    assert time.monotonic() - started < 3  # the client gave up; the simulator held for 5 s
    assert (result.outcome, result.code) == (ChannelOutcome.UNKNOWN, "channel_timeout")
    assert status is not None and status.outcome is ChannelOutcome.SUCCEEDED
    assert sim.health()["deliveries"].get("timeout", 0) >= 1


def test_a_charge_never_answered_in_time_is_unknown_and_its_status_tells(
    sim: SimulatorProcess,
) -> None:
    """The timeout trigger: charged, and no charge request about it is answered in time (the
    retry neither): unknown to the caller, ``exception``; the status query says it succeeded."""
    request = card_charge(CARD_TIMEOUT)
    before = sim.health()["charges"]
    ch = channel(sim.base_url, read_timeout_s=0.3, retries=1)
    result, status = run(execute_then_status(ch, request))
    assert result.outcome is ChannelOutcome.UNKNOWN
    assert status is not None and status.outcome is ChannelOutcome.SUCCEEDED
    assert status.reference == reference_of("card", str(request.payment_id))
    assert sim.health()["charges"] == before + 1


def _seed_for_fault_then_none(draw: int, rate: float) -> int:
    """A seed whose first call draws fault ``draw`` (0 error, 1 decline, 2 timeout, 3 drop:
    the simulator's order, four draws per call) and whose second call does not."""
    for seed in range(10_000):
        draws = random.Random(seed)
        first = [draws.random() for _ in range(4)]
        second = [draws.random() for _ in range(4)]
        if first[draw] < rate <= second[draw]:
            return seed
    raise AssertionError("no seed")


def test_a_retry_after_a_timeout_gets_the_first_answer_and_charges_once(
    sim: SimulatorProcess,
) -> None:
    sim.configure(timeout_rate=0.5, timeout_s=2, seed=_seed_for_fault_then_none(2, 0.5))
    request = card_charge()
    before = sim.health()["charges"]
    ch = channel(sim.base_url, read_timeout_s=0.3, retries=1)
    result, _status = run(execute_then_status(ch, request))
    assert result.outcome is ChannelOutcome.SUCCEEDED  # the retry was answered from the record
    assert result.reference == reference_of("card", str(request.payment_id))
    assert sim.health()["charges"] == before + 1


def test_a_503_is_retried_and_the_retry_succeeds(sim: SimulatorProcess) -> None:
    sim.configure(error_rate=0.5, seed=_seed_for_fault_then_none(0, 0.5))
    before = sim.health()["deliveries"].get("unavailable", 0)
    request = card_charge()
    result, status = run(execute_then_status(channel(sim.base_url, retries=1), request))
    assert result.outcome is ChannelOutcome.SUCCEEDED
    assert status.outcome is ChannelOutcome.SUCCEEDED
    assert sim.health()["deliveries"]["unavailable"] == before + 1


def test_5xx_until_the_retries_run_out_is_unknown(sim: SimulatorProcess) -> None:
    sim.configure(error_rate=1.0)
    request = card_charge()
    result, status = run(execute_then_status(channel(sim.base_url, retries=2), request))
    # A provider's 5xx does not say whether it acted: honest "unknown", never "failed".
    assert (result.outcome, result.code) == (ChannelOutcome.UNKNOWN, "channel_error")
    assert status is None  # this simulator's 503 charges nothing: the resolver will find out


def test_a_dropped_answer_is_unknown_but_the_charge_exists(sim: SimulatorProcess) -> None:
    sim.configure(drop_rate=1.0)
    request = card_charge()
    result, status = run(execute_then_status(channel(sim.base_url, retries=0), request))
    assert (result.outcome, result.code) == (ChannelOutcome.UNKNOWN, "channel_error")
    assert "RemoteProtocolError" in (result.message or "")
    assert status is not None and status.outcome is ChannelOutcome.SUCCEEDED
    assert status.reference == reference_of("card", str(request.payment_id))


def test_a_dropped_answer_is_retried_safely(sim: SimulatorProcess) -> None:
    sim.configure(drop_rate=0.5, seed=_seed_for_fault_then_none(3, 0.5))
    before = sim.health()
    request = card_charge()
    result, _status = run(execute_then_status(channel(sim.base_url, retries=1), request))
    assert result.outcome is ChannelOutcome.SUCCEEDED
    after = sim.health()
    assert after["charges"] == before["charges"] + 1
    assert after["deliveries"]["drop"] == before["deliveries"].get("drop", 0) + 1


def test_answers_that_always_drop_leave_the_outcome_unknown(sim: SimulatorProcess) -> None:
    sim.configure(drop_rate=1.0, seed=1)
    request = card_charge()
    result, status = run(execute_then_status(channel(sim.base_url, retries=2), request))
    assert result.outcome is ChannelOutcome.UNKNOWN
    assert status is not None and status.outcome is ChannelOutcome.SUCCEEDED


def test_nothing_listening_is_failed_unreachable() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    request = card_charge()
    ch = channel(dead, retries=2)
    result = run(ch.execute(request))
    assert (result.outcome, result.code) == (ChannelOutcome.FAILED, "channel_unreachable")
    with pytest.raises(httpx.ConnectError):  # the resolver treats a raise as "still unknown"
        run(ch.status(request.payment_id))


def test_a_validation_refusal_is_failed(sim: SimulatorProcess) -> None:
    # The simulator knows no "internal" channel: it refuses (422), nothing charged.
    request = ChargeRequest(
        payment_id=uuid.uuid4(), channel="internal", amount_minor=100, currency="EUR",
        payer={}, payee={},
    )  # fmt: skip
    result, status = run(execute_then_status(channel(sim.base_url), request))
    assert (result.outcome, result.code) == (ChannelOutcome.FAILED, "invalid_request")
    assert status is None


def test_status_of_an_unknown_payment_is_none(sim: SimulatorProcess) -> None:
    assert run(channel(sim.base_url).status(uuid.uuid4())) is None


def test_the_budget_bounds_every_attempt(sim: SimulatorProcess) -> None:
    """Retries never outlast the caller's limit: the answer comes before it."""
    request = card_charge(CARD_TIMEOUT)
    ch = channel(sim.base_url, retries=5, read_timeout_s=2.0, budget_s=0.5)
    started = time.monotonic()
    result, _status = run(execute_then_status(ch, request))
    assert time.monotonic() - started < 1.5
    assert result.outcome is ChannelOutcome.UNKNOWN


# --- batches and wallets -----------------------------------------------------------------------


def test_execute_batch_answers_each_payment_in_order(sim: SimulatorProcess) -> None:
    requests = [payout(IBAN_OK), payout(IBAN_AC04), card_charge(CARD_DECLINED), payout(IBAN_OK)]
    ch = channel(sim.base_url, "bank_transfer")

    async def go() -> list[Any]:
        try:
            return await ch.execute_batch(requests)
        finally:
            await ch.aclose()

    results = run(go())
    assert [r.outcome for r in results] == [
        ChannelOutcome.SUCCEEDED, ChannelOutcome.FAILED, ChannelOutcome.FAILED,
        ChannelOutcome.SUCCEEDED,
    ]  # fmt: skip
    assert (results[1].code, results[2].code) == ("AC04", "card_declined")
    assert sim.charge(requests[0].payment_id)["status"] == "succeeded"  # type: ignore[index]
    again = run(go())  # the same payment ids: the same answers, nothing charged twice
    assert again == results


def test_execute_batch_splits_large_batches(sim: SimulatorProcess) -> None:
    requests = [payout(IBAN_OK, 100 + i) for i in range(BATCH_CHUNK_MAX + 5)]
    before = sim.health()["charges"]
    results = run(channel(sim.base_url, "bank_transfer").execute_batch(requests))
    assert len(results) == len(requests)
    assert all(r.outcome is ChannelOutcome.SUCCEEDED for r in results)
    assert sim.health()["charges"] == before + len(requests)


def test_a_batch_whose_answer_is_dropped_is_unknown_for_each(sim: SimulatorProcess) -> None:
    sim.configure(drop_rate=1.0)
    requests = [payout(IBAN_OK), payout(IBAN_OK)]
    results = run(channel(sim.base_url, "bank_transfer", retries=0).execute_batch(requests))
    assert [r.outcome for r in results] == [ChannelOutcome.UNKNOWN] * 2
    assert all(sim.charge(r.payment_id) is not None for r in requests)


def test_wallet_triggers_apply(sim: SimulatorProcess) -> None:
    declined = ChargeRequest(
        payment_id=uuid.uuid4(), channel="alipay", amount_minor=800, currency="CNY",
        payer={"type": "wallet", "payer_id": "sandbox_declined"}, payee={},
    )  # fmt: skip
    result = run(channel(sim.base_url, "alipay").execute(declined))
    assert (result.outcome, result.code) == (ChannelOutcome.FAILED, "wallet_declined")


def test_verify_refuses_a_closed_account_without_charging(sim: SimulatorProcess) -> None:
    ch = channel(sim.base_url, "bank_transfer")
    closed, fine = payout(IBAN_AC04), payout(IBAN_OK)
    assert run(ch.verify(closed)).code == "AC04"
    assert run(ch.verify(fine)).outcome is ChannelOutcome.SUCCEEDED
    assert sim.charge(closed.payment_id) is None and sim.charge(fine.payment_id) is None


def test_one_channel_works_across_event_loops_and_closes(sim: SimulatorProcess) -> None:
    ch = channel(sim.base_url)
    first = run(ch.execute(card_charge()))
    second = run(ch.execute(card_charge()))  # a new loop: a new client, not the dead one
    assert first.outcome is second.outcome is ChannelOutcome.SUCCEEDED
    ch.close()  # its loop is closed: nothing to await, no error
    ch.close()


# --- configuration and the service -------------------------------------------------------------


def test_a_channel_url_switches_that_channel_to_http(sqlite_url: str) -> None:
    settings = make_settings(
        sqlite_url, channel_card_url="http://127.0.0.1:8100/", channel_retries=4,
        channel_read_timeout_ms=700, channel_timeout_ms=3000,
    )  # fmt: skip
    channels = configured_channels(settings)
    card = channels["card"]
    assert isinstance(card, HttpChannel)
    assert card.base_url == "http://127.0.0.1:8100"
    assert (card.config.retries, card.config.read_timeout_s) == (4, 0.7)
    assert card.config.budget_s < 3.0  # inside the caller's limit
    assert all(isinstance(channels[n], SandboxChannel) for n in ("alipay", "bank_transfer"))


@pytest.mark.parametrize("url", ["ftp://example.org", "127.0.0.1:8100", "http://", "http://h:x"])
def test_a_bad_channel_url_is_refused_clearly(sqlite_url: str, url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        make_settings(sqlite_url, channel_card_url=url)
    assert "channel_card_url" in str(caught.value)


def test_channel_urls_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYLEDGER_CHANNEL_WECHAT_PAY_URL", "https://sim.test:9000")
    monkeypatch.setenv("PAYLEDGER_CHANNEL_BANK_TRANSFER_URL", "http://127.0.0.1:9001")
    monkeypatch.setenv("PAYLEDGER_CHANNEL_CONNECT_TIMEOUT_MS", "250")
    from application.settings import Settings

    settings = Settings()
    assert settings.channel_url("wechat_pay") == "https://sim.test:9000"
    assert settings.channel_url("bank_transfer") == "http://127.0.0.1:9001"
    assert settings.channel_url("card") is None
    assert settings.channel_connect_timeout_ms == 250


def test_a_card_payment_through_the_simulator(sim: SimulatorProcess, sqlite_url: str) -> None:
    settings = make_settings(
        sqlite_url, channel_card_url=sim.base_url, channel_retries=0,
        channel_read_timeout_ms=300,
    )  # fmt: skip
    with Payledger(settings) as svc:
        driver = Driver(svc)
        shop = driver.open("shop", "EUR", kind="merchant")
        paid = driver.pay("12.50", channel="card", currency="EUR", card_number=CARD_OK, payee=shop)
        lost = driver.pay("7.00", channel="card", currency="EUR", card_number=CARD_TIMEOUT,
                          payee=shop)  # fmt: skip
        assert paid.status == "succeeded"
        assert paid.channel_reference == reference_of("card", str(paid.id))
        assert lost.status == "exception"
        assert driver.balance(shop) == 1250
        driver.check_books()
    assert sim.charge(lost.id)["status"] == "succeeded"  # type: ignore[index]
