"""The simulator's knobs: set on the command line, changed at run time by ``PUT /_sim/config``."""

from __future__ import annotations

import random

from pydantic import BaseModel, ConfigDict, Field

Rate = Field(default=0.0, ge=0.0, le=1.0)


class SimConfig(BaseModel):
    """How the simulated provider behaves. Rates are probabilities per new charge request."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: int = Field(default=0, ge=0, le=60_000)
    decline_rate: float = Rate
    # A timeout: the charge IS made, then the answer waits ``timeout_s`` (the client gives up).
    timeout_rate: float = Rate
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    # 503 without charging anything: a retry is safe.
    error_rate: float = Rate
    # The charge is made, then the connection breaks in the middle of the answer.
    drop_rate: float = Rate
    seed: int | None = Field(default=None, ge=0, le=2**63)


class SimConfigPatch(BaseModel):
    """``PUT /_sim/config``: the knobs to change; the others keep their values."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: int | None = Field(default=None, ge=0, le=60_000)
    decline_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    timeout_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    timeout_s: float | None = Field(default=None, gt=0, le=600)
    error_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    drop_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=0, le=2**63)


class Knobs:
    """The current configuration and the seeded random source drawn from (one per app)."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.rng = random.Random()
        self.reseed(config.seed)

    def reseed(self, seed: int | None) -> None:
        # Without a seed one is chosen and shown (GET /_sim/config), so a run can be replayed.
        chosen = seed if seed is not None else random.SystemRandom().randrange(2**32)
        self.config = self.config.model_copy(update={"seed": chosen})
        self.rng.seed(chosen)

    def update(self, patch: SimConfigPatch) -> SimConfig:
        changes = patch.model_dump(exclude_none=True)
        seed = changes.pop("seed", None)
        self.config = SimConfig.model_validate(self.config.model_dump() | changes)
        if seed is not None:
            self.reseed(seed)
        return self.config

    def draw(self) -> float:
        return self.rng.random()
