"""Batches over real HTTP: a tenant with a funded funding account, a submitter and an approver
(with TOTP), valid IBANs that hit the bank sandbox's triggers, and waiting for a batch."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx
from schwifty import IBAN

from tests.interfaces.conftest import Api, LiveServer, new_key
from tests.interfaces.keys_helpers import HttpKey, issue, new_tenant

FINAL = ("completed", "completed_with_failures", "failed", "cancelled", "rejected")


def iban(n: int, suffix: str = "") -> str:
    """A valid German IBAN; ``suffix`` sets the account number's last digits (the bank
    sandbox: ...0004 is a closed account (AC04), ...0001 a wrong one (AC01), ...0119 times
    out)."""
    account = f"{532000000 + n * 10 + 5:09d}"  # ends in 5: never a trigger
    if suffix:
        account = account[: -len(suffix)] + suffix
    return str(IBAN.generate("DE", bank_code="37040044", account_code=account))


@dataclass
class Payroll:
    live: LiveServer
    tenant: str
    admin: HttpKey
    submitter: HttpKey
    approver: HttpKey
    funding: str  # account id
    funding_iban: str

    def as_(self, key: HttpKey) -> httpx.Client:
        return key.client(self.live.base_url)

    def submit(self, body: dict[str, Any], **params: Any) -> httpx.Response:
        with self.as_(self.submitter) as http:
            return http.post(
                "/v1/batches", json=body, params=params, headers={"Idempotency-Key": new_key()}
            )

    def submit_file(
        self, content: bytes, name: str, key: str | None = None, **params: Any
    ) -> httpx.Response:
        headers = {"Idempotency-Key": key} if key else {}
        with self.as_(self.submitter) as http:
            return http.post(
                "/v1/batches", files={"file": (name, content)}, params=params, headers=headers
            )

    def approve(
        self, batch_id: str, execute_now: bool = True, code: str | None = None
    ) -> httpx.Response:
        with self.as_(self.approver) as http:
            return http.post(
                f"/v1/batches/{batch_id}/approve",
                json={"execute_now": execute_now},
                headers={"X-Payledger-OTP": code or self.approver.code()},
            )

    def get(self, batch_id: str) -> dict[str, Any]:
        with self.as_(self.submitter) as http:
            answer = http.get(f"/v1/batches/{batch_id}")
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]

    def wait(self, batch_id: str, timeout_s: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            batch = self.get(batch_id)
            if batch["status"] in FINAL or batch["status"] == "scheduled":
                return batch
            assert time.monotonic() < deadline, f"batch still {batch['status']}"
            time.sleep(0.05)

    def items(self, batch_id: str, **params: Any) -> list[dict[str, Any]]:
        with self.as_(self.submitter) as http:
            answer = http.get(f"/v1/batches/{batch_id}/items", params={"limit": 1000, **params})
        assert answer.status_code == 200, answer.text
        return answer.json()["items"]  # type: ignore[no-any-return]

    def account(self, account_id: str) -> dict[str, Any]:
        with self.as_(self.admin) as http:
            return Api(http).account(account_id)


def payroll(live: LiveServer, amount: str = "10000.00", currency: str = "EUR") -> Payroll:
    tenant = new_tenant()
    admin = issue(live.service, tenant, "admin")
    submitter = issue(live.service, tenant, "submitter")
    approver = issue(live.service, tenant, "approver", totp=True)
    funding_iban = iban(999_999)
    with admin.client(live.base_url) as http:
        api = Api(http)
        funding = api.open_account(currency, owner="ACME payroll", kind="funding",
                                   iban=funding_iban)["id"]  # fmt: skip
        api.deposit(funding, amount)
    return Payroll(live, tenant, admin, submitter, approver, funding, funding_iban)


def item(n: int, amount: str = "100.00", suffix: str = "", **fields: Any) -> dict[str, Any]:
    return {"end_to_end_id": f"E2E-{n}", "amount": amount, "iban": iban(n, suffix),
            "name": f"Employee {n}", **fields}  # fmt: skip
