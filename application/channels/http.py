"""``HttpChannel``: a channel reached over HTTP (a provider, or ``payledger channel-sim``).

Wire protocol (the issue-6 contract): ``POST {base}/charges`` with our payment id as the
``Idempotency-Key``, ``POST {base}/charges/batch`` for many in one round trip, and
``GET {base}/charges/{payment_id}`` for what the channel knows of an earlier request.

Because the payment id is the provider's idempotency key, repeating a charge is safe, so
transient failures are retried a bounded number of times with backoff. The outcome stays honest:
- every attempt failed to connect (nothing ever left this process): ``failed`` with
  ``channel_unreachable``;
- a validation refusal (400/422) or another definite refusal (4xx): ``failed``, not charged;
- anything after which the request may have been acted on (a read timeout, a dropped response,
  5xx until the retries ran out): ``unknown``, and the payment becomes ``exception``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote
from uuid import UUID

import httpx
import orjson

from application.channels.base import (
    CHANNELS,
    Channel,
    ChannelOutcome,
    ChannelResult,
    ChargeRequest,
)
from application.channels.sandbox import SandboxChannel
from domain.money import format_amount

if TYPE_CHECKING:
    from application.settings import Settings

log = logging.getLogger(__name__)

# Answers worth another attempt: the provider is busy, or broke before answering for sure.
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
# A validation refusal: the provider looked at the request and charged nothing.
REFUSAL_STATUSES = frozenset({400, 422})
BACKOFF_BASE_S = 0.05
BACKOFF_MAX_S = 1.0
RETRY_AFTER_MAX_S = 2.0
BATCH_CHUNK_MAX = 1_000  # charges per /charges/batch request (the simulator takes up to 10,000)
POOL_MAX_CONNECTIONS = 100
ERROR_TEXT_MAX = 200
BUDGET_SHARE = 0.9


@dataclass(frozen=True, slots=True)
class HttpChannelConfig:
    base_url: str
    connect_timeout_s: float = 2.0
    read_timeout_s: float = 5.0
    retries: int = 2  # attempts after the first
    # The whole call (every attempt and backoff) fits in this; the caller gives up after it.
    budget_s: float = 10.0


class _Attempts:
    """What the attempts of one call have told us, to pick an honest outcome at the end."""

    def __init__(self) -> None:
        self.maybe_sent = False  # some attempt got past connecting: it may have been acted on
        self.last_code = "channel_unreachable"
        self.last_message = "could not connect to the channel"

    def note(self, code: str, message: str, *, sent: bool) -> None:
        self.maybe_sent = self.maybe_sent or sent
        self.last_code, self.last_message = code, message[:ERROR_TEXT_MAX]

    def result(self) -> ChannelResult:
        if not self.maybe_sent:  # nothing reached the channel, or it refused to look (429)
            return ChannelResult(ChannelOutcome.FAILED, None, self.last_code, self.last_message)
        return ChannelResult(ChannelOutcome.UNKNOWN, None, self.last_code, self.last_message)


class HttpChannel:
    """One channel at one base URL; one pooled ``httpx.AsyncClient`` per event loop it runs
    on (a server has one), closed by :meth:`aclose` or :meth:`close`."""

    def __init__(
        self,
        name: str,
        config: HttpChannelConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.base_url = config.base_url.rstrip("/")
        self._transport = transport
        self._rng = rng or random.Random()
        self._http: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: set[asyncio.Future[Any]] = set()
        httpx_log = logging.getLogger("httpx")
        if httpx_log.level == logging.NOTSET:
            # httpx logs every request at INFO: a line per payment on the hot path, and it
            # says nothing our outcomes do not. Unless someone chose a level for it.
            httpx_log.setLevel(logging.WARNING)

    def __repr__(self) -> str:
        return f"HttpChannel({self.name!r}, {self.base_url!r})"

    # --- the Channel port ----------------------------------------------------------------------

    async def execute(self, request: ChargeRequest) -> ChannelResult:
        """Charge once, whatever happens on the way: the payment id is the idempotency key."""
        response, attempts = await self._send(
            "POST", "/charges", _charge_body(request), str(request.payment_id)
        )
        if response is None:
            return attempts.result()
        return _result_of(response, attempts, _json(response))

    async def execute_batch(self, requests: list[ChargeRequest]) -> list[ChannelResult]:
        """Many payments per round trip (chunks of ``BATCH_CHUNK_MAX``, sent concurrently)."""
        chunks = [
            requests[i : i + BATCH_CHUNK_MAX] for i in range(0, len(requests), BATCH_CHUNK_MAX)
        ]
        answers = await asyncio.gather(*(self._execute_chunk(chunk) for chunk in chunks))
        return [result for answer in answers for result in answer]

    async def status(self, payment_id: UUID) -> ChannelResult | None:
        """What the channel knows of ``payment_id``: None if it never saw it. A transport error
        or an unexpected answer raises (the caller still does not know)."""
        response = await self._client().get(f"/charges/{quote(str(payment_id))}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        body = _json(response)
        if not isinstance(body, dict):
            raise httpx.DecodingError(f"{self.name}: the status answer is not a JSON object")
        return _charge_result(body)

    async def verify(self, request: ChargeRequest) -> ChannelResult:
        """Check a beneficiary without moving money (``POST /verifications``). Only a definite
        refusal is ``failed``; a channel that cannot tell answers ``unknown`` (not a refusal)."""
        try:
            response = await self._client().post(
                "/verifications",
                content=orjson.dumps(_charge_body(request)),
                headers={"Content-Type": "application/json"},
            )
        except httpx.HTTPError as e:
            return ChannelResult(ChannelOutcome.UNKNOWN, None, "channel_error", type(e).__name__)
        body = _json(response)
        if response.status_code == 200 and isinstance(body, dict):
            return _charge_result(body)
        return ChannelResult(ChannelOutcome.UNKNOWN, None, "verification_unavailable",
                             f"HTTP {response.status_code}")  # fmt: skip

    # --- lifecycle -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        client, self._http, self._loop = self._http, None, None
        if client is not None:
            await client.aclose()

    def close(self) -> None:
        """Close from synchronous code (the service's ``close()``): on the client's own loop
        if it can still run, else the connections go with the loop."""
        client, loop = self._http, self._loop
        self._http = self._loop = None
        if client is None or loop is None or loop.is_closed():
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:  # called from a coroutine on that loop (an app's lifespan)
            task = loop.create_task(client.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        elif loop.is_running():  # another thread's loop
            asyncio.run_coroutine_threadsafe(client.aclose(), loop)
        else:
            loop.run_until_complete(client.aclose())

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._http is None or self._loop is not loop:
            # A client's connections belong to the loop that opened them; another loop (a CLI
            # command's asyncio.run after an earlier one) gets its own.
            self._http = httpx.AsyncClient(
                base_url=self.base_url,
                transport=self._transport,
                timeout=httpx.Timeout(
                    self.config.read_timeout_s, connect=self.config.connect_timeout_s
                ),
                limits=httpx.Limits(max_connections=POOL_MAX_CONNECTIONS),
                headers={"User-Agent": "payledger-http-channel"},
            )
            self._loop = loop
        return self._http

    # --- sending with retries ------------------------------------------------------------------

    async def _execute_chunk(self, requests: list[ChargeRequest]) -> list[ChannelResult]:
        body = {"charges": [_charge_body(r) for r in requests]}
        response, attempts = await self._send("POST", "/charges/batch", body, None)
        if response is None:
            return [attempts.result()] * len(requests)
        payload = _json(response)
        answers = payload.get("results") if isinstance(payload, dict) else None
        if not response.is_success or not isinstance(answers, list):
            return [_result_of(response, attempts, payload)] * len(requests)
        by_id = {str(a.get("payment_id")): a for a in answers if isinstance(a, dict)}
        missing = ChannelResult(ChannelOutcome.UNKNOWN, None, "channel_error",
                                "the batch answer has no result for this payment")  # fmt: skip
        return [
            _charge_result(by_id[str(r.payment_id)]) if str(r.payment_id) in by_id else missing
            for r in requests
        ]

    async def _send(
        self, method: str, path: str, body: Any, idempotency_key: str | None
    ) -> tuple[httpx.Response | None, _Attempts]:
        """The last answer worth reading (None if there is none) and what the attempts saw."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.budget_s
        attempts = _Attempts()
        headers = {"Content-Type": "application/json"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        content = orjson.dumps(body)  # UUIDs and dates too, and faster than json
        for attempt in range(self.config.retries + 1):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            timeout = httpx.Timeout(
                min(self.config.read_timeout_s, remaining),
                connect=min(self.config.connect_timeout_s, remaining),
            )
            try:
                response = await self._client().request(
                    method, path, content=content, headers=headers, timeout=timeout
                )
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as e:
                attempts.note("channel_unreachable", _describe(e), sent=False)
                delay = None
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as e:
                # Read/write timeout, connection reset, or a response cut short: sent, maybe done.
                code = (
                    "channel_timeout" if isinstance(e, httpx.TimeoutException) else "channel_error"
                )
                attempts.note(code, _describe(e), sent=True)
                delay = None
            else:
                if response.status_code not in RETRY_STATUSES:
                    return response, attempts
                attempts.note(
                    "channel_busy" if response.status_code == 429 else "channel_error",
                    f"HTTP {response.status_code} from {self.name}",
                    sent=response.status_code != 429,
                )
                delay = _retry_after_s(response)
            if attempt < self.config.retries:
                wait_s = delay if delay is not None else self._backoff_s(attempt)
                if loop.time() + wait_s >= deadline:
                    break
                await asyncio.sleep(wait_s)
        log.warning("channel %s: %s after %s attempt(s)", self.name, attempts.last_code,
                    attempt + 1)  # fmt: skip
        return None, attempts

    def _backoff_s(self, attempt: int) -> float:
        """Exponential backoff with jitter (half to all of the step), so retries spread out."""
        step = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt)
        return step * (0.5 + self._rng.random() / 2)


# --- the wire format ---------------------------------------------------------------------------


def _charge_body(request: ChargeRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "payment_id": str(request.payment_id),
        "channel": request.channel,
        "amount": format_amount(request.amount_minor, request.currency),
        "currency": request.currency,
        "payer": request.payer,
        "payee": request.payee,
    }
    if request.channel == "card" and request.secret:
        body["card"] = dict(request.secret)  # only on the wire, never logged
    return body


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _charge_result(body: dict[str, Any]) -> ChannelResult:
    reference, code, message = body.get("reference"), body.get("code"), body.get("message")
    status = body.get("status")
    outcome = {
        "succeeded": ChannelOutcome.SUCCEEDED,
        "failed": ChannelOutcome.FAILED,
    }.get(str(status), ChannelOutcome.UNKNOWN)
    if outcome is ChannelOutcome.UNKNOWN:
        code, message = code or "channel_pending", message or f"channel status {status!r}"
    return ChannelResult(
        outcome,
        str(reference) if reference else None,
        str(code) if code else None,
        str(message)[:ERROR_TEXT_MAX] if message else None,
    )


def _result_of(response: httpx.Response, attempts: _Attempts, body: Any) -> ChannelResult:
    """The outcome of a final (not retried) answer."""
    status = response.status_code
    if response.is_success and isinstance(body, dict):
        return _charge_result(body)  # a "pending" status (202, say) is unknown
    detail = (body.get("message") or body.get("detail")) if isinstance(body, dict) else None
    message = str(detail or f"HTTP {status}")[:ERROR_TEXT_MAX]
    if status in REFUSAL_STATUSES or (400 <= status < 500 and not attempts.maybe_sent):
        code = body.get("code") if isinstance(body, dict) else None
        return ChannelResult(ChannelOutcome.FAILED, None, str(code or "channel_rejected"), message)
    # A 2xx we cannot read, a 4xx after an attempt that may have been acted on, or a 5xx.
    return ChannelResult(ChannelOutcome.UNKNOWN, None, "channel_error", message)


def _retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        return min(RETRY_AFTER_MAX_S, max(0.0, float(value)))
    except ValueError:
        return None


def _describe(error: Exception) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# --- configuration -----------------------------------------------------------------------------


def configured_channels(settings: Settings) -> dict[str, Channel]:
    """Every external channel: over HTTP where ``PAYLEDGER_CHANNEL_<NAME>_URL`` is set, else
    the in-process sandbox."""
    channels: dict[str, Channel] = {}
    for name in CHANNELS:
        if name == "internal":
            continue
        url = settings.channel_url(name)
        if url is None:
            channels[name] = SandboxChannel(name, settings.latency_ms(name))
            continue
        config = HttpChannelConfig(
            base_url=url,
            connect_timeout_s=settings.channel_connect_timeout_ms / 1000,
            read_timeout_s=settings.channel_read_timeout_ms / 1000,
            retries=settings.channel_retries,
            # Inside the caller's own limit (PAYLEDGER_CHANNEL_TIMEOUT_MS), so that the channel
            # answers first and can still say "unreachable" when nothing was sent.
            budget_s=settings.channel_timeout_ms / 1000 * BUDGET_SHARE,
        )
        channels[name] = HttpChannel(name, config)
    return channels


def close_channels(channels: Iterable[object]) -> None:
    """Close what holds connections (``HttpChannel``); the sandbox holds none."""
    for channel in channels:
        close: Callable[[], None] | None = getattr(channel, "close", None)
        if close is None:
            continue
        try:
            close()
        except Exception:  # shutting down: one channel's trouble must not stop the rest
            log.warning("channel %r did not close cleanly", channel, exc_info=True)
