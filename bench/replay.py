"""Rebuilding the views from the event log: events/s against the raw read rate of the log.

    .venv/bin/python bench/replay.py [--events 1000000] [--stores sqlite,postgres] [--quick]
                                     [--page-size 10000] [--rounds 1] [--no-verify]

For each store, in a fresh PostgreSQL schema ``bench_replay_<random>`` (dropped at the end) or a
temporary SQLite file:

1. **Generate** ``--events`` events (``--quick``: 100,000) with the application's own decisions:
   ``AccountHandlers.decide_open`` and ``PaymentHandlers.decide_intent`` / ``decide_outcome``
   (application/payments.py) run over units of work of 200 commands, as the committer runs
   them, with a simulated clock (1,000 commands/s) and the sandbox channels' own outcomes.
   Accounts are opened (one per 50 events) and funded by deposits, then payments: internal
   transfers (6 events: Payment Requested/Reserved/Submitted/Succeeded + Account
   Debited/Credited), card and wallet payments (succeeded, declined, timed out into
   ``exception``), bank payouts (with a hold, released on failure) and rejections. Each group's
   events are saved as the committer saves them (``app.events.put``: mapper, transcoder,
   recorder with its audit chain rows; snapshots as ``take_snapshots_of``), about 10,000
   events per call. The rate printed includes deciding.
2. **Raw read** of the notification log: ``app.recorder.select_notifications`` from 0 to the end
   in pages of the rebuild's page size, nothing decoded.
3. **Read + mapper**: the same, each notification decoded by the library's mapper
   (``app.mapper.to_domain_event``), for reference.
4. **Views' reader**: the projections' own reader (``LogReader`` in projections/runner.py), which
   reads and decodes the JSON to ``RawEvent`` as a rebuild does, on one thread.
5. **Rebuild** every projection: ``projections.replay.rebuild(app, store)``; events/s is the
   report's (from position 0 to the end, secondary indexes included), the wall time also counts
   creating and swapping the tables. ``--rounds N`` repeats 2-5 and reports the round with the
   fastest rebuild (every round is in the JSON, each with its own ratio).
6. **Verify**: ``projections.replay.verify`` (a second rebuild into scratch space, compared row
   by row with the live views).
7. **Check**: the views hold one row per payment, per account and per posting generated; every
   account's balance equals the generated aggregate's; the metrics count every payment;
   balances sum to zero per currency.

Results go to ``bench/results/replay.json``: machine, commit, versions, every figure, and for
each measurement the CPU seconds of this process, of PostgreSQL's processes and of the rest of
the machine (other work disturbing the run). The machine is shared, so the figure to compare
across runs is the ratio rebuild / raw read of the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import heapq
import json
import os
import platform
import random
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from uuid import UUID, uuid5

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from application.accounts import AccountHandlers  # noqa: E402
from application.channels.base import ChannelResult, ChargeRequest  # noqa: E402
from application.channels.sandbox import SandboxChannel  # noqa: E402
from application.commands import (  # noqa: E402
    BankBeneficiary,
    CardMethod,
    MakeDeposit,
    OpenAccount,
    Principal,
    SubmitPayment,
    WalletMethod,
)
from application.drafts import validate_deposit, validate_payment  # noqa: E402
from application.payments import Next, PaymentHandlers  # noqa: E402
from application.service import Payledger  # noqa: E402
from application.settings import Settings  # noqa: E402
from application.unit_of_work import AggregateCache, UnitOfWork  # noqa: E402
from domain.accounts import ACCOUNT_NAMESPACE, Account  # noqa: E402
from domain.payments import Payment  # noqa: E402
from projections import replay as replay_mod  # noqa: E402
from projections.db import ViewDB  # noqa: E402
from projections.runner import PROJECTIONS, REBUILD_PAGE, LogReader  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PG_BASE = "postgresql://postgres@127.0.0.1:5432/test"
GOAL_EVENTS_PER_S = 50_000.0  # issue 3: rebuilt on PostgreSQL
GOAL_RATIO = 1 / 3  # "about a third of the raw read rate"

TENANTS = ("default", "acme", "globex")
CURRENCIES = ("CNY", "USD", "EUR")
GROUP = 200  # commands per unit of work, the committer's default group_max
EVENTS_PER_PUT = 10_000  # groups are saved together, this many events per call at least
COMMANDS_PER_S = 1_000  # the simulated clock: one command per millisecond
# Payments after the accounts are open and funded: (weight, kind).
MIX = (
    (70, "internal"),
    (10, "card_ok"),
    (2, "card_declined"),
    (1, "card_timeout"),
    (5, "wallet_ok"),
    (1, "wallet_declined"),
    (6, "payout_ok"),
    (2, "payout_declined"),
    (1, "payout_timeout"),
    (2, "rejected"),
)
CARD_OK, CARD_DECLINED, CARD_TIMEOUT = "4242424242424242", "4000000000000002", "4000000000000119"
IBAN_OK, IBAN_AC04, IBAN_TIMEOUT = (
    "DE89370400440532013000",
    "DE83370400440532010004",
    "DE82370400440532010119",
)
CHANNEL_LATENCY_MS = {"card": (80, 400), "alipay": (100, 600), "wechat_pay": (100, 600),
                      "bank_transfer": (200, 2500)}  # fmt: skip


# --- generation --------------------------------------------------------------------------------


class SimClock:
    def __init__(self, start: dt.datetime) -> None:
        self.at = start

    def now(self) -> dt.datetime:
        return self.at

    def advance(self, ms: float) -> None:
        self.at += dt.timedelta(milliseconds=ms)


class BenchCache(AggregateCache):
    """Every account and every payment still in flight, never evicted: the generator's events
    are saved many groups at a time, so the store may not have them yet when they are needed."""

    def __init__(self) -> None:
        super().__init__(maxsize=sys.maxsize)


@dataclass
class Generated:
    events: int = 0
    by_name: Counter[str] = field(default_factory=Counter)
    commands: Counter[str] = field(default_factory=Counter)
    payments: int = 0
    accounts: int = 0
    postings: int = 0
    groups: int = 0
    puts: int = 0
    seconds: float = 0.0
    decide_s: float = 0.0
    save_s: float = 0.0
    balances: dict[str, int] = field(default_factory=dict)  # account id -> balance
    currency_of: dict[str, str] = field(default_factory=dict)
    payment_states: Counter[str] = field(default_factory=Counter)


def run_sync(coro: Any) -> Any:
    """Run a coroutine that never suspends (the sandbox channels with zero latency)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise RuntimeError("the coroutine suspended")


class Generator:
    """Decides commands with the application's own handlers and saves them as the committer
    does, many groups per call."""

    def __init__(self, svc: Payledger, target: int, seed: int = 3) -> None:
        self.svc, self.app, self.target = svc, svc.app, target
        self.rng = random.Random(seed)
        self.clock = SimClock(dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC))
        self.cache = BenchCache()
        self.accounts = AccountHandlers(svc)
        self.payments = PaymentHandlers(svc)
        self.channels = {n: SandboxChannel(n, 0) for n in CHANNEL_LATENCY_MS}
        self.secret_key = svc.secret_key
        self.out = Generated()
        self.pending_events: list[Any] = []
        self.outcomes: list[tuple[dt.datetime, int, Any]] = []  # due, seq, (draft, result)
        self.seq = 0
        self.keys = 0
        # tenant -> currency -> [account ids]: customers who pay, merchants who are paid.
        self.customers: dict[str, dict[str, list[UUID]]] = defaultdict(lambda: defaultdict(list))
        self.merchants: dict[str, dict[str, list[UUID]]] = defaultdict(lambda: defaultdict(list))
        self.snapshot_candidates: list[tuple[Any, int]] = []
        mix_total = sum(w for w, _ in MIX)
        self.mix = [kind for w, kind in MIX for _ in range(w)]
        assert len(self.mix) == mix_total

    # --- commands --------------------------------------------------------------------------

    def key(self, prefix: str) -> str:
        self.keys += 1
        return f"{prefix}-{self.keys:09d}"

    def principal(self, tenant: str) -> Principal:
        return Principal(tenant=tenant, client=f"{tenant}-app")

    def open_command(self, tenant: str, currency: str, kind: str) -> Any:
        n = self.out.commands["open"]
        cmd = OpenAccount(
            owner=f"{kind} {n:06d}", currency=currency, kind=kind,
            overdraft_limit="0" if kind == "customer" else "100.00",
            idempotency_key=self.key("acct"),
        )  # fmt: skip
        principal = self.principal(tenant)
        account_id = uuid5(
            ACCOUNT_NAMESPACE,
            f"/tenants/{tenant}/clients/{principal.client}/accounts/{cmd.idempotency_key}",
        )
        limit = 0 if kind == "customer" else 10_000
        (self.customers if kind == "customer" else self.merchants)[tenant][currency].append(
            account_id
        )
        self.out.commands["open"] += 1

        def decide(uow: UnitOfWork) -> Any:
            return self.accounts.decide_open(cmd, principal, account_id, limit, uow)

        return decide

    def deposit_command(self, tenant: str, currency: str, account_id: UUID, amount: str) -> Any:
        principal = self.principal(tenant)
        cmd = MakeDeposit(account_id, amount, self.key("dep"))
        draft = validate_deposit(cmd, principal, currency, now=self.clock.now())
        self.out.commands["deposit"] += 1
        return self.intent(draft)

    def payment_command(self) -> Any:
        kind = self.rng.choice(self.mix)
        tenant = self.rng.choice(TENANTS)
        currency = self.rng.choice(CURRENCIES)
        customers = self.customers[tenant][currency]
        merchants = self.merchants[tenant][currency]
        amount = f"{self.rng.randint(1, 20_000) / 100:.2f}"
        payer: UUID | None = self.rng.choice(customers)
        payee: UUID | None = self.rng.choice(merchants + customers)
        while payee == payer:
            payee = self.rng.choice(merchants + customers)
        method: Any = None
        beneficiary = None
        channel = "internal"
        description = self.rng.choice((None, "invoice", "order", "refund of order"))
        metadata = {"order": f"o-{self.keys}"} if self.rng.random() < 0.5 else {}
        if kind.startswith("card"):
            channel, payer = "card", None
            number = {"card_ok": CARD_OK, "card_declined": CARD_DECLINED}.get(kind, CARD_TIMEOUT)
            method = CardMethod(number=number, exp_month=12, exp_year=2099, cvc="123")
        elif kind.startswith("wallet"):
            channel, payer = self.rng.choice(("alipay", "wechat_pay")), None
            wallet_payer = "sandbox_declined" if kind == "wallet_declined" else f"w{self.keys}"
            method = WalletMethod(type=channel, payer_id=wallet_payer)
        elif kind.startswith("payout"):
            channel, payee = "bank_transfer", None
            iban = {"payout_ok": IBAN_OK, "payout_declined": IBAN_AC04}.get(kind, IBAN_TIMEOUT)
            beneficiary = BankBeneficiary(iban=iban, name="Beneficiary GmbH")
        elif kind == "rejected":  # a payee in another currency: refused, nothing moves
            other = self.rng.choice([c for c in CURRENCIES if c != currency])
            payee = self.rng.choice(self.customers[tenant][other])
        cmd = SubmitPayment(
            amount=amount, currency=currency, channel=channel,
            idempotency_key=self.key("pay"), payer_account_id=payer, payment_method=method,
            payee_account_id=payee, beneficiary=beneficiary, description=description,
            metadata=metadata,
        )  # fmt: skip
        draft = validate_payment(
            cmd, self.principal(tenant), now=self.clock.now(), secret_key=self.secret_key
        )
        self.out.commands[kind] += 1
        return self.intent(draft)

    def intent(self, draft: Any) -> Any:
        stripped = replace(draft, secret={})  # as PaymentHandlers.execute hands it over

        def decide(uow: UnitOfWork) -> Any:
            begun = self.payments.decide_intent(stripped, uow)
            if begun.next is Next.SEND:
                channel = self.channels[draft.channel]
                request = ChargeRequest(
                    payment_id=draft.payment_id, channel=draft.channel,
                    amount_minor=draft.amount_minor, currency=draft.currency, payer=draft.payer,
                    payee=draft.payee, secret=draft.secret,
                )  # fmt: skip
                result: ChannelResult = run_sync(channel.execute(request))
                low, high = CHANNEL_LATENCY_MS[draft.channel]
                due = self.clock.now() + dt.timedelta(milliseconds=self.rng.randint(low, high))
                self.seq += 1
                heapq.heappush(self.outcomes, (due, self.seq, (draft.payment_id, result)))
            return begun

        return decide

    def outcome_command(self, payment_id: UUID, result: ChannelResult) -> Any:
        def decide(uow: UnitOfWork) -> Any:
            return self.payments.decide_outcome(payment_id, result, uow)

        self.out.commands["outcome"] += 1
        return decide

    # --- the committer's loop, simulated -----------------------------------------------------

    def run_group(self, commands: list[Any]) -> None:
        started = time.perf_counter()
        uow = UnitOfWork(self.app, self.cache, optimistic=True, clock=self.clock)
        for decide in commands:
            self.clock.advance(1000 / COMMANDS_PER_S)
            uow.begin_unit()
            decide(uow)
        dirty = uow.dirty()
        versions_before = [agg.version - len(agg.pending_events) for agg in dirty]
        for aggregate in dirty:
            events = aggregate.collect_events()
            self.pending_events.extend(events)
            for event in events:
                self.out.by_name[type(event).__qualname__] += 1
        for aggregate in uow.aggregates.values():
            if isinstance(aggregate, Payment) and not aggregate.is_in_flight:
                self.cache.evict([aggregate.id])
            else:
                self.cache.put(aggregate)
        self.snapshot_candidates.extend(zip(dirty, versions_before, strict=True))
        self.out.groups += 1
        self.out.decide_s += time.perf_counter() - started
        if len(self.pending_events) >= EVENTS_PER_PUT:
            self.flush()

    def flush(self) -> None:
        if not self.pending_events:
            return
        started = time.perf_counter()
        self.app.events.put(self.pending_events)  # as Committer._save, many groups at once
        # As the committer after each save, once per aggregate for the groups saved together.
        first_version: dict[UUID, tuple[Any, int]] = {}
        for aggregate, version_before in self.snapshot_candidates:
            first_version.setdefault(aggregate.id, (aggregate, version_before))
        self.app.take_snapshots_of(first_version.values())
        self.out.events += len(self.pending_events)
        self.out.puts += 1
        self.pending_events, self.snapshot_candidates = [], []
        self.out.save_s += time.perf_counter() - started

    def generated(self) -> int:
        return self.out.events + len(self.pending_events)

    def run(self, progress: bool = True) -> Generated:
        started = time.perf_counter()
        # Accounts: about one per 50 events, a fifth of them merchants (at least a few each).
        per_pair = max(4, self.target // 50 // (len(TENANTS) * len(CURRENCIES)))
        opens = [
            self.open_command(t, c, "merchant" if i % 5 == 0 else "customer")
            for i in range(per_pair)
            for t in TENANTS
            for c in CURRENCIES
        ]
        for start in range(0, len(opens), GROUP):
            self.run_group(opens[start : start + GROUP])
        # Fund every customer generously: payments never run out of money.
        deposits = [
            self.deposit_command(t, c, a, f"{self.rng.randint(50_000, 200_000)}.00")
            for t in TENANTS
            for c in CURRENCIES
            for a in self.customers[t][c]
        ]
        for start in range(0, len(deposits), GROUP):
            self.run_group(deposits[start : start + GROUP])
        last_report = time.perf_counter()
        while self.generated() < self.target:
            commands: list[Any] = []
            horizon = self.clock.now() + dt.timedelta(milliseconds=GROUP * 1000 / COMMANDS_PER_S)
            while self.outcomes and self.outcomes[0][0] <= horizon and len(commands) < GROUP // 4:
                _due, _seq, (payment_id, result) = heapq.heappop(self.outcomes)
                commands.append(self.outcome_command(payment_id, result))
            while len(commands) < GROUP:
                commands.append(self.payment_command())
            self.run_group(commands)
            if progress and time.perf_counter() - last_report > 10:
                last_report = time.perf_counter()
                rate = self.generated() / (last_report - started)
                print(f"    ... {self.generated():,} events ({rate:,.0f}/s)", flush=True)
        # Whatever is still at the channel gets its answer: nothing is left in flight.
        while self.outcomes:
            batch: list[Any] = []
            while self.outcomes and len(batch) < GROUP:
                _due, _seq, (payment_id, result) = heapq.heappop(self.outcomes)
                batch.append(self.outcome_command(payment_id, result))
            self.run_group(batch)
        self.flush()
        self.out.seconds = time.perf_counter() - started
        self._tally()
        return self.out

    def _tally(self) -> None:
        o = self.out
        o.payments = o.by_name["Payment.Requested"]
        o.accounts = o.by_name["Account.Opened"]
        o.postings = o.by_name["Account.Debited"] + o.by_name["Account.Credited"]
        for aggregate in self.cache._items.values():
            if isinstance(aggregate, Account):
                o.balances[str(aggregate.id)] = aggregate.balance_minor
                o.currency_of[str(aggregate.id)] = aggregate.currency


# --- measurements ------------------------------------------------------------------------------


def raw_read(app: Any, page: int, decode: bool = False) -> tuple[int, float]:
    mapper = app.mapper
    started = time.perf_counter()
    start, n = 0, 0
    while True:
        notifications = app.recorder.select_notifications(
            start=start, limit=page, inclusive_of_start=False
        )
        if not notifications:
            break
        if decode:
            for notification in notifications:
                mapper.to_domain_event(notification)
        n += len(notifications)
        start = notifications[-1].id
    return n, time.perf_counter() - started


def rate(events: int, seconds: float, meter: CpuMeter) -> dict[str, Any]:
    return {
        "events": events,
        "seconds": round(seconds, 3),
        "events_per_s": round(events / seconds),
        "cpu": meter.stop(),
    }


def lean_read(app: Any, page: int) -> tuple[int, float]:
    """The projections' own reader (projections/runner.py ``LogReader``): lean query, events
    decoded from JSON to ``RawEvent``, as a rebuild reads them (but on one thread)."""
    reader = LogReader(app)
    started = time.perf_counter()
    start, n = 0, 0
    while True:
        events = reader.read(start, page)
        if not events:
            break
        n += len(events)
        start = events[-1].id
    return n, time.perf_counter() - started


def check_views(store: Any, gen: Generated) -> dict[str, Any]:
    db = ViewDB(store)
    try:
        counts = {
            t: db.query(f"SELECT count(*) FROM view_{t}")[0][0]
            for t in ("payments", "accounts", "entries")
        }
        expected = {"payments": gen.payments, "accounts": gen.accounts, "entries": gen.postings}
        totals = dict(
            db.query("SELECT currency, sum(balance_minor) FROM view_accounts GROUP BY currency")
        )
        balances = dict(db.query("SELECT account_id, balance_minor FROM view_accounts"))
        wrong = [a for a, b in gen.balances.items() if balances.get(a) != b]
        states = dict(db.query("SELECT state, count(*) FROM view_payments GROUP BY state"))
        metrics = db.query(
            "SELECT sum(processing), sum(succeeded), sum(failed), sum(exception) FROM view_metrics"
        )[0]
        payments_counted = db.query("SELECT count(*) FROM view_payments WHERE kind = 'payment'")[0][
            0
        ]
    finally:
        db.close()
    totals = {c: int(v) for c, v in totals.items()}
    ok = (
        counts == expected
        and all(v == 0 for v in totals.values())
        and not wrong
        and int(sum(int(m or 0) for m in metrics)) == payments_counted
    )
    return {
        "ok": ok,
        "rows": counts,
        "expected_rows": expected,
        "balance_totals_by_currency": totals,
        "accounts_with_wrong_balance": len(wrong),
        "payment_states": states,
        "metrics_payments_counted": int(sum(int(m or 0) for m in metrics)),
        "payments_of_kind_payment": payments_counted,
    }


def bench_store(
    kind: str,
    events: int,
    page: int,
    do_verify: bool,
    rounds_n: int = 1,
    names: list[str] | None = None,
) -> dict[str, Any]:
    names = names or list(PROJECTIONS)
    tmpdir = None
    if kind == "postgres":
        schema = f"bench_replay_{secrets.token_hex(4)}"
        url = f"{PG_BASE}?schema={schema}"
    else:
        tmpdir = tempfile.mkdtemp(prefix="payledger-bench-replay-")
        url = f"sqlite:///{tmpdir}/payledger.sqlite3"
    settings = Settings(database_url=url, env="test", committer="thread")
    store = settings.store
    result: dict[str, Any] = {"store": kind, "url": store.describe(), "page_size": page}
    svc = Payledger(settings)
    try:
        print(f"[{kind}] generating {events:,} events into {store.describe()}", flush=True)
        gen = Generator(svc, events).run()
        head = svc.app.recorder.max_notification_id() or 0
        assert head == gen.events, (head, gen.events)
        result["generate"] = {
            "events": gen.events, "seconds": round(gen.seconds, 2),
            "events_per_s": round(gen.events / gen.seconds),
            "decide_s": round(gen.decide_s, 2), "save_s": round(gen.save_s, 2),
            "save_events_per_s": round(gen.events / gen.save_s) if gen.save_s else None,
            "puts": gen.puts, "groups": gen.groups, "payments": gen.payments,
            "accounts": gen.accounts, "postings": gen.postings,
            "events_by_type": dict(sorted(gen.by_name.items())),
            "commands": dict(sorted(gen.commands.items())),
        }  # fmt: skip
        print(
            f"[{kind}] generated {gen.events:,} events in {gen.seconds:.1f} s "
            f"({gen.events / gen.seconds:,.0f}/s; saving alone {gen.events / gen.save_s:,.0f}/s): "
            f"{gen.accounts:,} accounts, {gen.payments:,} payments, {gen.postings:,} postings",
            flush=True,
        )
        gc.collect()
        app = svc.app
        rounds: list[dict[str, Any]] = []
        for r in range(1, rounds_n + 1):
            tag = f"[{kind}]" if rounds_n == 1 else f"[{kind} {r}/{rounds_n}]"
            one: dict[str, Any] = {}
            meter = CpuMeter()
            n, s = raw_read(app, page)
            one["raw_read"] = rate(n, s, meter)
            print(f"{tag} raw read          {n / s:>10,.0f} events/s  ({s:.2f} s)", flush=True)
            meter = CpuMeter()
            n, s = raw_read(app, page, decode=True)
            one["read_decode"] = rate(n, s, meter)
            print(f"{tag} read + mapper     {n / s:>10,.0f} events/s  ({s:.2f} s)", flush=True)
            meter = CpuMeter()
            n, s = lean_read(app, page)
            one["lean_read_decode"] = rate(n, s, meter)
            print(f"{tag} views' reader     {n / s:>10,.0f} events/s  ({s:.2f} s)", flush=True)
            meter = CpuMeter()
            started = time.perf_counter()
            report = replay_mod.rebuild(app, store, names, page_size=page)
            wall = time.perf_counter() - started
            one["rebuild"] = {
                "events": report.events, "seconds": round(report.seconds, 3),
                "events_per_s": round(report.events_per_s), "wall_seconds": round(wall, 3),
                "wall_events_per_s": round(report.events / wall), "position": report.position,
                "cpu": meter.stop(),
            }  # fmt: skip
            one["rebuild_over_raw_read"] = round(
                one["rebuild"]["events_per_s"] / one["raw_read"]["events_per_s"], 3
            )
            print(
                f"{tag} rebuild           {report.events_per_s:>10,.0f} events/s  "
                f"({report.seconds:.2f} s; {wall:.2f} s with creating and swapping the tables; "
                f"{one['rebuild_over_raw_read']:.2f} x the raw read)",
                flush=True,
            )
            rounds.append(one)
        result["rounds"] = rounds
        # The round whose rebuild was fastest (least disturbed); every round is in "rounds".
        best = max(rounds, key=lambda one: one["rebuild"]["events_per_s"])
        for measure in ("raw_read", "read_decode", "lean_read_decode", "rebuild"):
            result[measure] = best[measure]
        if do_verify:
            meter = CpuMeter()
            started = time.perf_counter()
            verified = replay_mod.verify(app, store, names, page_size=page)
            s = time.perf_counter() - started
            result["verify"] = {
                "seconds": round(s, 3), "ok": verified.ok, "rows_compared": verified.rows_compared,
                "differences": verified.differences[:5], "events_per_s": round(head / s),
                "cpu": meter.stop(),
            }  # fmt: skip
            print(
                f"[{kind}] verify            {head / s:>10,.0f} events/s  ({s:.2f} s; "
                f"{verified.rows_compared:,} rows compared, "
                f"{'no differences' if verified.ok else verified.differences[:3]})",
                flush=True,
            )
        result["check"] = check_views(store, gen)
        print(
            f"[{kind}] check: {'ok' if result['check']['ok'] else 'FAILED'} "
            f"{result['check']['rows']} balances per currency "
            f"{result['check']['balance_totals_by_currency']}",
            flush=True,
        )
        raw = result["raw_read"]["events_per_s"]
        result["ratios"] = {
            "rebuild_over_raw_read": round(result["rebuild"]["events_per_s"] / raw, 3),
            "rebuild_over_read_decode": round(
                result["rebuild"]["events_per_s"] / result["read_decode"]["events_per_s"], 3
            ),
            "read_decode_over_raw_read": round(result["read_decode"]["events_per_s"] / raw, 3),
            "rebuild_over_views_reader": round(
                result["rebuild"]["events_per_s"] / result["lean_read_decode"]["events_per_s"], 3
            ),
        }
    finally:
        svc.close()
        if kind == "postgres":
            store.drop()
        elif tmpdir is not None:
            for f in Path(tmpdir).iterdir():
                f.unlink()
            os.rmdir(tmpdir)
    return result


# --- CPU accounting: the machine is shared, so say who used it during each measurement --------

TICK = os.sysconf("SC_CLK_TCK")


def _machine_busy_s() -> float:
    with contextlib.suppress(OSError):
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return (sum(values[:8]) - values[3] - values[4]) / TICK
    return 0.0


def _postgres_cpu_s() -> dict[int, float]:
    """CPU seconds of each PostgreSQL process (by pid)."""
    found = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            if (d / "comm").read_text().strip() == "postgres":
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
                found[int(d.name)] = (int(fields[11]) + int(fields[12])) / TICK
    return found


class CpuMeter:
    """CPU seconds during a measurement: this process (every thread), PostgreSQL's processes
    (other sessions' included), and the rest of the machine (other work: noise)."""

    def __init__(self) -> None:
        self.t0, self.cpu0 = time.perf_counter(), time.process_time()
        self.busy0, self.pg0 = _machine_busy_s(), _postgres_cpu_s()

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        ours = time.process_time() - self.cpu0
        # Processes that ended meanwhile are not counted (their time cannot be read).
        pg = sum(cpu - self.pg0.get(pid, 0.0) for pid, cpu in _postgres_cpu_s().items())
        busy = _machine_busy_s() - self.busy0
        return {
            "wall_s": round(wall, 2),
            "python_cpu_s": round(ours, 2),
            "postgres_cpu_s": round(pg, 2),
            "other_cpu_s": round(max(0.0, busy - ours - pg), 2),
            "machine_busy_share": round(busy / (wall * (os.cpu_count() or 1)), 2) if wall else 0,
        }


# --- reporting ---------------------------------------------------------------------------------


def sh(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10, cwd=ROOT).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info() -> dict[str, Any]:
    from importlib.metadata import version

    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    packages = {}
    for pkg in ("eventsourcing", "psycopg", "psycopg-binary", "orjson"):
        with contextlib.suppress(Exception):
            packages[pkg] = version(pkg)
    return {
        "hostname": platform.node(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": __import__("sqlite3").sqlite_version,
        "packages": packages,
        "postgres": sh(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-tAc", "SHOW server_version"]
        ).strip()
        or None,
        "load_average_before": os.getloadavg(),
    }


def git_info() -> dict[str, Any]:
    status = sh(["git", "status", "--porcelain"])
    return {
        "commit": sh(["git", "rev-parse", "HEAD"]).strip() or None,
        "describe": sh(["git", "log", "-1", "--format=%h %s"]).strip() or None,
        "dirty": bool(status),
        "uncommitted_files": len(status.splitlines()),
    }


def print_table(results: list[dict[str, Any]]) -> None:
    print()
    print(
        f"{'store':<10} {'events':>10} {'generate/s':>11} {'raw read/s':>11} "
        f"{'read+mapper/s':>14} {'views reader/s':>15} {'rebuild/s':>10} {'verify/s':>9} "
        f"{'rebuild/raw':>12}"
    )
    for r in results:
        print(
            f"{r['store']:<10} {r['generate']['events']:>10,} "
            f"{r['generate']['events_per_s']:>11,} {r['raw_read']['events_per_s']:>11,} "
            f"{r['read_decode']['events_per_s']:>14,} "
            f"{r['lean_read_decode']['events_per_s']:>15,} {r['rebuild']['events_per_s']:>10,} "
            f"{r.get('verify', {}).get('events_per_s', 0):>9,} "
            f"{r['ratios']['rebuild_over_raw_read']:>12.2f}"
        )
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--quick", action="store_true", help="100,000 events")
    parser.add_argument("--page-size", type=int, default=REBUILD_PAGE)
    parser.add_argument("--no-verify", action="store_true", help="skip projections.replay.verify")
    parser.add_argument(
        "--projections", default=",".join(PROJECTIONS),
        help=f"the projections to rebuild (default: all, {','.join(PROJECTIONS)})",
    )  # fmt: skip
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="raw read, read + mapper and rebuild this many times; the fastest rebuild's round "
        "is reported (all rounds are in the JSON)",
    )  # fmt: skip
    parser.add_argument("--output", default=str(RESULTS / "replay.json"))
    args = parser.parse_args(argv)
    events = 100_000 if args.quick else args.events
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    names = [n.strip() for n in args.projections.split(",") if n.strip()]
    for n in names:
        if n not in PROJECTIONS:
            parser.error(f"unknown projection {n!r}")
    if not {"payments", "accounts"} <= set(names):
        parser.error("--projections must include payments and accounts: the checks read them")
    for s in stores:
        if s not in ("sqlite", "postgres"):
            parser.error(f"unknown store {s!r}")
    started = dt.datetime.now(dt.UTC)
    machine, git = machine_info(), git_info()
    results = [
        bench_store(s, events, args.page_size, not args.no_verify, args.rounds, names)
        for s in stores
    ]
    print_table(results)
    goals = {}
    for r in results:
        if r["store"] == "postgres":
            rate = r["rebuild"]["events_per_s"]
            goals = {
                "rebuild_events_per_s": GOAL_EVENTS_PER_S,
                "met": rate >= GOAL_EVENTS_PER_S,
                "ratio_goal": round(GOAL_RATIO, 3),
                "ratio_met": r["ratios"]["rebuild_over_raw_read"] >= GOAL_RATIO,
            }
            print(
                f"goal (PostgreSQL): >= {GOAL_EVENTS_PER_S:,.0f} events/s rebuilt: "
                f"{rate:,} events/s -> {'MET' if goals['met'] else 'NOT MET'}; "
                f"{r['ratios']['rebuild_over_raw_read']:.2f} x the raw read rate"
            )
    ok = all(r["check"]["ok"] and r.get("verify", {}).get("ok", True) for r in results)
    document = {
        "schema_version": 1,
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python", "bench/replay.py", *(argv or sys.argv[1:])]),
        "git": git,
        "machine": machine,
        "settings": {
            "events": events,
            "stores": stores,
            "page_size": args.page_size,
            "rounds": args.rounds,
            "projections": names,
            "group": GROUP,
            "events_per_put": EVENTS_PER_PUT,
            "mix": {k: w for w, k in MIX},
            "tenants": list(TENANTS),
            "currencies": list(CURRENCIES),
        },
        "results": results,
        "goals": goals,
        "load_average_after": os.getloadavg(),
        "all_checks_ok": ok,
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(f"results: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
