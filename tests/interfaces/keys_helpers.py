"""API keys for tests over real HTTP: issued through the service of a live server, as
``payledger keys create`` does, with clients that send them."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from application.commands import Principal
from application.keys import CreateKey
from application.service import Payledger
from application.totp import STEP_S, code_at, seed_of_uri


@dataclass(frozen=True)
class HttpKey:
    id: str
    token: str
    tenant: str
    role: str
    seed: str | None  # the TOTP seed, from the provisioning URI shown at creation

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def code(self, steps_ahead: int = 0) -> str:
        """The authenticator's code now (or ``steps_ahead`` 30-second steps later)."""
        assert self.seed is not None, "this key has no second factor"
        return code_at(self.seed, datetime.now(UTC) + timedelta(seconds=STEP_S * steps_ahead))

    def client(self, base_url: str) -> httpx.Client:
        return httpx.Client(base_url=base_url, timeout=30, headers=self.auth)


def issue(
    service: Payledger, tenant: str, role: str, *, totp: bool = False, name: str = ""
) -> HttpKey:
    """A new key, issued as the CLI issues one (outside the server's event loop)."""
    principal = Principal(tenant=tenant, client="cli:tests")
    issued = asyncio.run(service.keys.create(CreateKey(tenant, role, name, totp), principal))
    seed = seed_of_uri(issued.totp_uri) if issued.totp_uri else None
    return HttpKey(str(issued.info.id), issued.token, tenant, role, seed)


def revoke(service: Payledger, key: HttpKey) -> None:
    principal = Principal(tenant=key.tenant, client="cli:tests")
    asyncio.run(service.keys.revoke(uuid.UUID(key.id), principal))


def new_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def problem_code(response: httpx.Response) -> Any:
    assert response.headers["content-type"] == "application/problem+json", response.text
    return response.json()["code"]
