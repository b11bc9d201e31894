"""Configuration from the environment (``PAYLEDGER_*``), validated once at start-up."""

from __future__ import annotations

from decimal import Decimal
from functools import cached_property
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from application.store import StoreConfig, parse_database_url

# Realistic sandbox latencies (ms); tests set them to zero through PAYLEDGER_SANDBOX_LATENCY_MS.
DEFAULT_SANDBOX_LATENCY_MS = {
    "internal": 0,
    "card": 120,
    "alipay": 180,
    "wechat_pay": 180,
    "bank_transfer": 250,
}


class Settings(BaseSettings):
    # Errors never echo a value: some are secrets (keys).
    model_config = SettingsConfigDict(
        env_prefix="PAYLEDGER_", extra="ignore", hide_input_in_errors=True
    )

    database_url: str = "sqlite:///var/payledger.sqlite3"
    env: Literal["development", "test", "production"] = "development"
    # Keys card fingerprints and request fingerprints; production must set its own.
    secret_key: str = Field(
        default="payledger-development-key-do-not-use-in-production", repr=False
    )
    sandbox_latency_ms: dict[str, int] = Field(default_factory=dict)
    channel_timeout_ms: int = Field(default=10_000, ge=1, le=120_000)
    # A channel over HTTP (application/channels/http.py) instead of the sandbox:
    # PAYLEDGER_CHANNEL_<NAME>_URL=http://127.0.0.1:8100 (a provider or `payledger channel-sim`).
    # Its connect and read time-outs per attempt, and the retries after the first attempt
    # (safe: our payment id is the channel's idempotency key), all within channel_timeout_ms.
    channel_card_url: str | None = None
    channel_alipay_url: str | None = None
    channel_wechat_pay_url: str | None = None
    channel_bank_transfer_url: str | None = None
    channel_connect_timeout_ms: int = Field(default=2_000, ge=1, le=60_000)
    channel_read_timeout_ms: int = Field(default=5_000, ge=1, le=120_000)
    channel_retries: int = Field(default=2, ge=0, le=10)
    # Group commit: most commands folded into one transaction, and how long a caller waits.
    commit_group_max: int = Field(default=200, ge=1, le=5_000)
    commit_queue_max: int = Field(default=20_000, ge=1, le=1_000_000)
    command_timeout_s: float = Field(default=30.0, gt=0, le=600)
    conflict_retries: int = Field(default=8, ge=1, le=100)
    # Where decisions run: a thread of the API process, or a process of their own
    # (application/committer_process.py; not with an in-memory SQLite database).
    committer: Literal["thread", "process"] = "thread"
    postgres_pool_size: int = Field(default=4, ge=1, le=100)
    # The read side: "inline" keeps the views current from a thread of each API process (one
    # leads, the others stand by); "process" from a child process of each API process (what
    # `payledger serve` runs: the views' work off the API process's interpreter lock); "off"
    # when `payledger project --follow` runs elsewhere.
    projections: Literal["inline", "process", "off"] = "inline"
    # Batches: how often the server looks for scheduled batches that are due and for batches
    # left processing by a process that stopped (it also looks once at start-up).
    batch_scheduler_interval_s: float = Field(default=30.0, gt=0, le=3600)
    # Exceptions (application/exceptions.py): how often the server's resolver asks the channels
    # about payments with an unknown outcome (0: not in the server; `payledger exceptions
    # resolve` still works), how long it keeps asking before flagging one for reconciliation,
    # and how long a payment left `submitted` (its process died) is left to a retry of the
    # same request (which can send it again) before the resolver takes it.
    exception_resolver_interval_s: float = Field(default=5.0, ge=0, le=3600)
    exception_deadline_s: int = Field(default=86_400, ge=1, le=90 * 86_400)
    exception_abandoned_after_s: float = Field(default=60.0, ge=0, le=86_400)
    # API keys (application/keys.py, interfaces/http/authz.py): how long a verified key is
    # trusted before it is read again (a revocation takes effect within this time), per-key
    # rate limits (a token bucket per key and process; 0 turns it off), and the second factor:
    # real-time payments above `step_up_amount` (a decimal in the payment's own currency,
    # "off" for none) need a fresh TOTP code; `otp_max_failures` wrong codes in a row lock a
    # key's second factor for `otp_lockout_s`.
    auth_cache_ttl_s: float = Field(default=1.0, ge=0, le=60)
    rate_limit_per_s: float = Field(default=200.0, ge=0, le=1_000_000)
    rate_limit_burst: int = Field(default=400, ge=1, le=10_000_000)
    step_up_amount: Decimal | None = Field(default=Decimal("10000"), gt=0, allow_inf_nan=False)
    otp_max_failures: int = Field(default=5, ge=1, le=100)
    otp_lockout_s: int = Field(default=900, ge=1, le=86_400)  # 15 minutes
    # Encryption at rest of event payloads (application/encryption.py): a base64 AES-256 key,
    # required in production; previous keys (comma-separated) only decrypt, for key rotation.
    encryption_key: str | None = Field(default=None, repr=False, validate_default=True)
    encryption_old_keys: str = Field(default="", repr=False)
    # HTTP hardening (interfaces/http/security.py) and logs (application/logs.py).
    cors_origins: str = ""  # comma-separated origins allowed by CORS; none by default
    hsts_max_age: int = Field(default=0, ge=0, le=63_072_000)  # seconds; 0: no HSTS header
    log_format: Literal["text", "json"] = "text"
    access_log: bool = False  # one log line per request (`payledger serve --access-log`)

    @field_validator("step_up_amount", mode="before")
    @classmethod
    def _step_up_off(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("", "off", "none"):
            return None
        return value

    @field_validator(
        "channel_card_url", "channel_alipay_url", "channel_wechat_pay_url",
        "channel_bank_transfer_url",
    )  # fmt: skip
    @classmethod
    def _channel_url(cls, value: str | None) -> str | None:
        value = (value or "").strip()
        if not value:
            return None
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number in range)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                "must be an http:// or https:// URL with a host, such as http://127.0.0.1:8100"
            )
        if parts.query or parts.fragment:
            raise ValueError("must not have a query string or a fragment")
        return value.rstrip("/")

    @field_validator("sandbox_latency_ms")
    @classmethod
    def _known_channels(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = set(value) - set(DEFAULT_SANDBOX_LATENCY_MS)
        if unknown:
            raise ValueError(f"unknown channels: {sorted(unknown)}")
        if any(ms < 0 or ms > 60_000 for ms in value.values()):
            raise ValueError("latencies must be between 0 and 60000 ms")
        return value

    @field_validator("encryption_key")
    @classmethod
    def _encryption_key(cls, value: str | None, info: ValidationInfo) -> str | None:
        from application.encryption import parse_key  # encryption -> store: import late

        value = (value or "").strip() or None
        if value is None:
            if info.data.get("env") == "production":
                raise ValueError(
                    "required when PAYLEDGER_ENV=production "
                    "(generate one with `payledger db new-encryption-key`)"
                )
            return None
        parse_key(value)
        return value

    @field_validator("encryption_old_keys")
    @classmethod
    def _old_keys(cls, value: str) -> str:
        from application.encryption import OLD_KEY_SIZES, parse_key, split_keys

        keys = split_keys(value)
        for key in keys:
            parse_key(key, OLD_KEY_SIZES)
        return ",".join(keys)

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    def channel_url(self, channel: str) -> str | None:
        """The base URL of ``channel`` over HTTP, or None for the sandbox."""
        url: str | None = getattr(self, f"channel_{channel}_url", None)
        return url

    def latency_ms(self, channel: str) -> int:
        return self.sandbox_latency_ms.get(channel, DEFAULT_SANDBOX_LATENCY_MS[channel])

    @cached_property
    def store(self) -> StoreConfig:
        return parse_database_url(self.database_url, pool_size=self.postgres_pool_size)
