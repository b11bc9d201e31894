"""Configuration from the environment (``PAYLEDGER_*``), validated once at start-up."""

from __future__ import annotations

from functools import cached_property
from typing import Literal

from pydantic import Field, field_validator
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
    model_config = SettingsConfigDict(env_prefix="PAYLEDGER_", extra="ignore")

    database_url: str = "sqlite:///var/payledger.sqlite3"
    env: Literal["development", "test", "production"] = "development"
    # Keys card fingerprints and request fingerprints; production must set its own.
    secret_key: str = "payledger-development-key-do-not-use-in-production"
    sandbox_latency_ms: dict[str, int] = Field(default_factory=dict)
    channel_timeout_ms: int = Field(default=10_000, ge=1, le=120_000)
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
    # leads, the others stand by); "off" when `payledger project --follow` runs elsewhere.
    projections: Literal["inline", "off"] = "inline"

    @field_validator("sandbox_latency_ms")
    @classmethod
    def _known_channels(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = set(value) - set(DEFAULT_SANDBOX_LATENCY_MS)
        if unknown:
            raise ValueError(f"unknown channels: {sorted(unknown)}")
        if any(ms < 0 or ms > 60_000 for ms in value.values()):
            raise ValueError("latencies must be between 0 and 60000 ms")
        return value

    def latency_ms(self, channel: str) -> int:
        return self.sandbox_latency_ms.get(channel, DEFAULT_SANDBOX_LATENCY_MS[channel])

    @cached_property
    def store(self) -> StoreConfig:
        return parse_database_url(self.database_url, pool_size=self.postgres_pool_size)
