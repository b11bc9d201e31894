"""Every route x every role x its own tenant's or another tenant's objects, over real HTTP.

The expected roles are written here, route by route, independently of the permission matrix in
``interfaces/http/authz.py`` (a test below checks that the two agree). A role without the
permission gets 403 ``forbidden`` whatever the object; a role with it gets its answer on its own
tenant's objects and 404 on another tenant's, exactly as for an id that does not exist. Routes
without an id show the other tenant's objects nowhere (lists, filters, bodies).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import httpx
import pytest

from application.commands import Principal
from domain.keys import Role
from interfaces.http.authz import ROLE_PERMISSIONS, Permission
from tests.interfaces.batch_helpers import item
from tests.interfaces.conftest import Api, LiveServer, new_key
from tests.interfaces.keys_helpers import HttpKey, issue, new_tenant, problem_code

ROLES = [role.value for role in Role]
EVERYONE = frozenset(ROLES)
READERS = EVERYONE  # balances, statements, payments: every role of the tenant
OVERSIGHT = frozenset({"auditor", "operator", "admin"})
MAKERS = frozenset({"submitter", "admin"})
APPROVERS = frozenset({"approver", "admin"})
ADMIN = frozenset({"admin"})


@dataclass
class Side:
    """One tenant's objects, and a key per role."""

    tenant: str
    admin: HttpKey  # for set-up steps
    keys: dict[str, HttpKey]
    payer: str
    payee: str
    payment: str
    endpoint: str  # a webhook endpoint
    funding: str  # a funded EUR funding account, for batches
    batch: str  # a batch awaiting approval (made by ``admin``)
    failed_batch: str | None = None  # a finished batch with a failed item (retry)
    open_exception: str | None = None  # a payment in exception, never resolved (lists)
    reconciliation: str | None = None  # a completed reconciliation run (made by ``admin``)

    def api(self, base_url: str) -> Api:
        return Api(self.admin.client(base_url))


@dataclass
class World:
    live: LiveServer
    own: Side
    other: Side


def make_side(live: LiveServer) -> Side:
    tenant = new_tenant()
    admin = issue(live.service, tenant, "admin")
    keys = {role: issue(live.service, tenant, role) for role in ROLES}
    api = Api(admin.client(live.base_url))
    payer, payee = api.funded_account("1000.00"), api.merchant()
    paid = api.pay(payment_body(payer, payee))
    assert paid.status_code == 201 and paid.json()["status"] == "succeeded", paid.text
    endpoint = register_endpoint(api.client)
    funding = api.funded_account("1000.00", "EUR", kind="funding")
    side = Side(tenant, admin, keys, payer, payee, paid.json()["id"], endpoint, funding, "")
    side.batch = _fresh_batch(live, side)
    return side


def _fresh_batch(live: LiveServer, side: Side, suffix: str = "") -> str:
    """A new batch of one item, awaiting approval, made by the side's set-up admin."""
    items = [item(1, "1.00", suffix)]
    body = {"funding_account_id": side.funding, "currency": "EUR", "items": items}
    with side.admin.client(live.base_url) as client:
        made = client.post("/v1/batches", json=body, headers={"Idempotency-Key": new_key()})
    assert made.status_code == 201, made.text
    return made.json()["id"]  # type: ignore[no-any-return]


def _batch_with_a_failure(w: World, side: Side) -> str:
    """The side's batch whose one item failed (a closed account), finished (again, after a
    retry). Approved and run through the service: the roles' TOTP codes are for the routes."""
    if side.failed_batch is None:
        batch_id = _fresh_batch(w.live, side, suffix="0004")
        svc = w.live.service
        checker = Principal(tenant=side.tenant, client="key:matrix-set-up")
        svc.committer.run(svc.decision("batches", "decide_approve", UUID(batch_id), checker, True))
        asyncio.run(svc.batch_runner.run(UUID(batch_id)))
        side.failed_batch = batch_id
    with side.admin.client(w.live.base_url) as client:
        for _ in range(500):
            if client.get(f"/v1/batches/{side.failed_batch}").json()["status"] != "processing":
                break
            time.sleep(0.02)
    return side.failed_batch


def register_endpoint(client: httpx.Client) -> str:
    body = {"url": "http://127.0.0.1:9/hooks", "events": ["payment.succeeded"]}
    registered = client.post("/v1/webhook-endpoints", json=body)
    assert registered.status_code == 201, registered.text
    return registered.json()["id"]  # type: ignore[no-any-return]


def payment_body(payer: str, payee: str) -> dict[str, Any]:
    return {
        "amount": "1.00", "currency": "CNY", "channel": "internal",
        "payer_account_id": payer, "payee_account_id": payee,
    }  # fmt: skip


@pytest.fixture(scope="module")
def world(shared_live_server: LiveServer) -> World:
    return World(shared_live_server, make_side(shared_live_server), make_side(shared_live_server))


# --- the routes ---------------------------------------------------------------------------------

Call = tuple[str, str, dict[str, Any]]  # method, path, httpx keyword arguments


@dataclass(frozen=True)
class Route:
    name: str
    roles: frozenset[str]  # who may
    permission: Permission
    call: Callable[[World, Side, HttpKey], Call]  # the request on the target side's objects
    ok: int = 200
    # Routes without an id: what "the other tenant" means for them (None: nothing to cross).
    other: Callable[[httpx.Response, World], None] | None = None
    by_id: bool = True


def _empty_account(w: World, side: Side) -> str:
    return side.api(w.live.base_url).open_account()["id"]  # type: ignore[no-any-return]


def _endpoint_path(w: World, side: Side, key: HttpKey) -> str:
    return f"/v1/webhook-endpoints/{_spare_endpoint(w, side, key)}"


def _spare_endpoint(w: World, side: Side, key: HttpKey) -> str:
    """A new endpoint to change, when the role may (endpoints are few per tenant)."""
    if key.role not in ADMIN:
        return side.endpoint
    return register_endpoint(side.admin.client(w.live.base_url))


def _spare_key(w: World, side: Side) -> str:
    return issue(w.live.service, side.tenant, "auditor").id


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _no_other_payments(r: httpx.Response, w: World) -> None:
    # Only this tenant's own attempts to pay from that account (refused) may show up.
    items = r.json()["items"]
    assert w.other.payment not in {p["id"] for p in items}
    assert all(p["failure_code"] == "account_not_found" for p in items)


def _refused_other_accounts(r: httpx.Response, w: World) -> None:
    assert r.json()["status"] == "failed" and r.json()["failure_code"] == "account_not_found"


def _tenant_field(w: World, side: Side) -> dict[str, str]:
    return {} if side is w.own else {"tenant": side.tenant}


def _tenant_not_accepted(r: httpx.Response, w: World) -> None:
    assert [e["field"] for e in r.json()["errors"]] == ["tenant"]


def _only_own_endpoints(r: httpx.Response, w: World) -> None:
    ids = {e["id"] for e in r.json()["items"]}
    assert ids and w.other.endpoint not in ids


def _funding_not_found(r: httpx.Response, w: World) -> None:
    assert r.status_code == 422 and r.json()["errors"][0]["code"] == "AC02"


def _batch_body(w: World, side: Side) -> dict[str, Any]:
    return {"json": {"funding_account_id": side.funding, "currency": "EUR",
                     "items": [item(1, "1.00")]},
            "headers": {"Idempotency-Key": new_key()}}  # fmt: skip


def _only_own_batches(r: httpx.Response, w: World) -> None:
    ids = {b["id"] for b in r.json()["items"]}
    assert ids and w.other.batch not in ids


def _approval(w: World, side: Side, key: HttpKey) -> Call:
    code = key.code(steps_ahead=1) if key.seed else "000000"
    batch = _fresh_batch(w.live, side) if key.role in APPROVERS else side.batch
    return ("POST", f"/v1/batches/{batch}/approve",
            {"json": {}, "headers": {"X-Payledger-OTP": code}})  # fmt: skip


def _exception_payment(w: World, side: Side) -> str:
    """A new payment in exception (the sandbox card that times out after the charge)."""
    with side.admin.client(w.live.base_url) as client:
        api = Api(client)
        method = {"type": "card", "number": "4000000000000119", "exp_month": 12,
                  "exp_year": 2099, "cvc": "123"}  # fmt: skip
        body = {"amount": "1.00", "currency": "CNY", "channel": "card",
                "payment_method": method, "payee_account_id": side.payee}  # fmt: skip
        paid = api.pay(body)
    assert paid.status_code == 201 and paid.json()["status"] == "exception", paid.text
    return paid.json()["id"]  # type: ignore[no-any-return]


def _resolution(w: World, side: Side, key: HttpKey) -> Call:
    allowed = key.role in {"operator", "admin"} and side is w.own
    payment = _exception_payment(w, side) if allowed else side.payment
    body = {"outcome": "failed", "reason": "the matrix says so"}
    return ("POST", f"/v1/exceptions/{payment}/resolve", {"json": body})


def _exception_list(w: World, side: Side, key: HttpKey) -> Call:
    if w.other.open_exception is None:
        w.other.open_exception = _exception_payment(w, w.other)
    return ("GET", "/v1/exceptions", {})


def _only_own_exceptions(r: httpx.Response, w: World) -> None:
    assert w.other.open_exception not in {x["payment_id"] for x in r.json()["items"]}


def _statement(side: Side, lines: list[str]) -> dict[str, Any]:
    """A card statement of today (a new file each time: its hash names the run)."""
    day = datetime.now(UTC).date().isoformat()
    rows = [
        "booking_date,reference,payment_id,amount,currency,direction,status,entry_ref",
        *lines,
        f"{day},card_matrix_{uuid.uuid4().hex},,1.00,CNY,credit,settled,X1",
    ]
    return {
        "data": {"channel": "card", "period_start": day, "period_end": day},
        "files": {"file": ("s.csv", ("\n".join(rows) + "\n").encode(), "text/csv")},
    }


def _new_run(w: World, side: Side, lines: list[str] | None = None) -> str:
    with side.admin.client(w.live.base_url) as client:
        made = client.post("/v1/reconciliations", **_statement(side, lines or []))
    assert made.status_code == 201, made.text
    return made.json()["id"]  # type: ignore[no-any-return]


def _run(w: World, side: Side) -> str:
    if side.reconciliation is None:
        side.reconciliation = _new_run(w, side)
    return side.reconciliation


def _run_item(w: World, side: Side, key: HttpKey, action: str) -> Call:
    """An item the role can take ``action`` on (own side, allowed); else any item."""
    allowed = key.role in {"operator", "admin"} and side is w.own
    run, body, index = _run(w, side), {"reason": "the matrix says so"}, 0
    if allowed and action == "resolve-exception":
        payment = _exception_payment(w, side)
        day = datetime.now(UTC).date().isoformat()
        run = _new_run(w, side, [f"{day},,{payment},1.00,CNY,credit,settled,E1"])
        with side.admin.client(w.live.base_url) as client:
            items = client.get(f"/v1/reconciliations/{run}/items",
                               params={"category": "status_mismatch"}).json()["items"]  # fmt: skip
        index = items[0]["index"]
    elif allowed and action == "accept":
        run = _new_run(w, side)
    elif allowed and action == "approve":
        run, body = _new_run(w, side), {}
        proposer = side.keys["operator"] if key.role == "admin" else side.admin
        with proposer.client(w.live.base_url) as client:
            proposed = client.post(f"/v1/reconciliations/{run}/items/0/accept",
                                   json={"reason": "proposed for the matrix"})  # fmt: skip
        assert proposed.status_code == 200, proposed.text
    elif action == "approve":
        body = {}
    if action == "annotate":
        body = {"note": "seen"}
    kwargs = {"json": body} if body else {}
    return ("POST", f"/v1/reconciliations/{run}/items/{index}/{action}", kwargs)


def _only_own_runs(r: httpx.Response, w: World) -> None:
    ids = {run["id"] for run in r.json()["items"]}
    assert w.other.reconciliation is not None and w.other.reconciliation not in ids


def _other_run_list(w: World, side: Side, key: HttpKey) -> Call:
    _run(w, w.other)
    return ("GET", "/v1/reconciliations", {})


def _only_own_keys(r: httpx.Response, w: World) -> None:
    ids = {k["id"] for k in r.json()["items"]}
    assert ids and not ids & {k.id for k in w.other.keys.values()} and w.other.admin.id not in ids


ROUTES = [
    Route("open account", ADMIN, Permission.ACCOUNTS_OPEN,
          lambda w, s, k: ("POST", "/v1/accounts", {"json": {"owner": "o", "currency": "CNY"}}),
          ok=201, by_id=False),
    Route("get account", READERS, Permission.ACCOUNTS_READ,
          lambda w, s, k: ("GET", f"/v1/accounts/{s.payer}", {})),
    Route("account as of", READERS, Permission.ACCOUNTS_READ,
          lambda w, s, k: ("GET", f"/v1/accounts/{s.payer}", {"params": {"as_of": _now()}})),
    Route("statement", READERS, Permission.ACCOUNTS_READ,
          lambda w, s, k: ("GET", f"/v1/accounts/{s.payer}/entries", {})),
    Route("deposit", frozenset({"operator", "admin"}), Permission.DEPOSITS_CREATE,
          lambda w, s, k: ("POST", f"/v1/accounts/{s.payer}/deposits",
                           {"json": {"amount": "5.00"}, "headers": {"Idempotency-Key": new_key()}}),
          ok=201),
    Route("close account", ADMIN, Permission.ACCOUNTS_CLOSE,
          lambda w, s, k: ("POST", f"/v1/accounts/{_empty_account(w, s)}/close", {})),
    Route("pay", frozenset({"submitter", "admin"}), Permission.PAYMENTS_CREATE,
          lambda w, s, k: ("POST", "/v1/payments", {"json": payment_body(s.payer, s.payee),
                                                    "headers": {"Idempotency-Key": new_key()}}),
          ok=201, other=_refused_other_accounts, by_id=False),
    Route("search payments", READERS, Permission.PAYMENTS_READ,
          lambda w, s, k: ("GET", "/v1/payments", {"params": {"payer": s.payer}}),
          other=_no_other_payments, by_id=False),
    Route("get payment", READERS, Permission.PAYMENTS_READ,
          lambda w, s, k: ("GET", f"/v1/payments/{s.payment}", {})),
    Route("payment as of version", READERS, Permission.PAYMENTS_READ,
          lambda w, s, k: ("GET", f"/v1/payments/{s.payment}", {"params": {"as_of_version": 1}})),
    Route("payment events", OVERSIGHT, Permission.PAYMENTS_AUDIT,
          lambda w, s, k: ("GET", f"/v1/payments/{s.payment}/events", {})),
    Route("metrics", OVERSIGHT, Permission.METRICS_READ,
          lambda w, s, k: ("GET", "/v1/metrics", {}), by_id=False),
    Route("prometheus", OVERSIGHT, Permission.METRICS_READ,
          lambda w, s, k: ("GET", "/metrics", {}), by_id=False),
    Route("dashboard", OVERSIGHT, Permission.METRICS_READ,
          lambda w, s, k: ("GET", "/dashboard", {"params": {"refresh": 0}}), by_id=False),
    Route("issue key", ADMIN, Permission.KEYS_MANAGE,
          lambda w, s, k: ("POST", "/v1/keys",
                           {"json": {"role": "auditor"} | _tenant_field(w, s),
                            "headers": {"X-Payledger-OTP": k.code() if k.seed else "000000"}}),
          ok=201, other=_tenant_not_accepted, by_id=False),
    Route("list keys", ADMIN, Permission.KEYS_MANAGE,
          lambda w, s, k: ("GET", "/v1/keys", {}), other=_only_own_keys, by_id=False),
    Route("get key", ADMIN, Permission.KEYS_MANAGE,
          lambda w, s, k: ("GET", f"/v1/keys/{s.admin.id}", {})),
    Route("revoke key", ADMIN, Permission.KEYS_MANAGE,
          lambda w, s, k: ("POST", f"/v1/keys/{_spare_key(w, s)}/revoke", {})),
    Route("delete key", ADMIN, Permission.KEYS_MANAGE,
          lambda w, s, k: ("DELETE", f"/v1/keys/{_spare_key(w, s)}", {})),
    Route("register webhook endpoint", ADMIN, Permission.WEBHOOKS_MANAGE,
          lambda w, s, k: ("POST", "/v1/webhook-endpoints",
                           {"json": {"url": "http://127.0.0.1:9/h", "events": ["payment.failed"]}
                            | _tenant_field(w, s)}),
          ok=201, other=_tenant_not_accepted, by_id=False),
    Route("list webhook endpoints", ADMIN, Permission.WEBHOOKS_MANAGE,
          lambda w, s, k: ("GET", "/v1/webhook-endpoints", {}), other=_only_own_endpoints,
          by_id=False),
    Route("get webhook endpoint", ADMIN, Permission.WEBHOOKS_MANAGE,
          lambda w, s, k: ("GET", f"/v1/webhook-endpoints/{s.endpoint}", {})),
    Route("webhook deliveries", ADMIN, Permission.WEBHOOKS_MANAGE,
          lambda w, s, k: ("GET", f"/v1/webhook-endpoints/{s.endpoint}/deliveries", {})),
    Route("rotate webhook secret", ADMIN, Permission.WEBHOOKS_MANAGE,
          lambda w, s, k: ("POST", f"{_endpoint_path(w, s, k)}/rotate-secret", {})),
    Route("disable webhook endpoint", ADMIN, Permission.WEBHOOKS_MANAGE,
          lambda w, s, k: ("POST", f"{_endpoint_path(w, s, k)}/disable", {})),
    Route("enable webhook endpoint", ADMIN, Permission.WEBHOOKS_MANAGE,
          lambda w, s, k: ("POST", f"{_endpoint_path(w, s, k)}/enable", {})),
    Route("delete webhook endpoint", ADMIN, Permission.WEBHOOKS_MANAGE,
          lambda w, s, k: ("DELETE", _endpoint_path(w, s, k), {}), ok=204),
    Route("submit batch", MAKERS, Permission.BATCHES_CREATE,
          lambda w, s, k: ("POST", "/v1/batches", _batch_body(w, s)),
          ok=201, other=_funding_not_found, by_id=False),
    Route("list batches", READERS, Permission.PAYMENTS_READ,
          lambda w, s, k: ("GET", "/v1/batches", {}), other=_only_own_batches, by_id=False),
    Route("get batch", READERS, Permission.PAYMENTS_READ,
          lambda w, s, k: ("GET", f"/v1/batches/{s.batch}", {})),
    Route("batch items", READERS, Permission.PAYMENTS_READ,
          lambda w, s, k: ("GET", f"/v1/batches/{s.batch}/items", {})),
    Route("batch report", READERS, Permission.PAYMENTS_READ,
          lambda w, s, k: ("GET", f"/v1/batches/{s.batch}/report", {})),
    Route("approve batch", APPROVERS, Permission.BATCHES_APPROVE, _approval),
    Route("reject batch", APPROVERS, Permission.BATCHES_APPROVE,
          lambda w, s, k: ("POST", f"/v1/batches/{_fresh_batch(w.live, s)}/reject", {"json": {}})),
    Route("cancel batch", MAKERS, Permission.BATCHES_CREATE,
          lambda w, s, k: ("POST", f"/v1/batches/{_fresh_batch(w.live, s)}/cancel", {"json": {}})),
    Route("retry batch", MAKERS, Permission.BATCHES_CREATE,
          lambda w, s, k: ("POST", f"/v1/batches/{_batch_with_a_failure(w, s)}/retry",
                           {"json": {"all_failed": True}})),
    Route("list exceptions", READERS, Permission.PAYMENTS_READ, _exception_list,
          other=_only_own_exceptions, by_id=False),
    Route("resolve exception", frozenset({"operator", "admin"}), Permission.EXCEPTIONS_RESOLVE,
          _resolution),
    Route("resolve pending exceptions", frozenset({"operator", "admin"}),
          Permission.EXCEPTIONS_RESOLVE,
          lambda w, s, k: ("POST", "/v1/exceptions/resolve-pending", {}), by_id=False),
    Route("reconcile", frozenset({"operator", "admin"}), Permission.RECONCILIATION_DECIDE,
          lambda w, s, k: ("POST", "/v1/reconciliations", _statement(s, [])), ok=201,
          by_id=False),
    Route("list reconciliations", OVERSIGHT, Permission.RECONCILIATION_READ, _other_run_list,
          other=_only_own_runs, by_id=False),
    Route("get reconciliation", OVERSIGHT, Permission.RECONCILIATION_READ,
          lambda w, s, k: ("GET", f"/v1/reconciliations/{_run(w, s)}", {})),
    Route("reconciliation items", OVERSIGHT, Permission.RECONCILIATION_READ,
          lambda w, s, k: ("GET", f"/v1/reconciliations/{_run(w, s)}/items", {})),
    Route("reconciliation export", OVERSIGHT, Permission.RECONCILIATION_READ,
          lambda w, s, k: ("GET", f"/v1/reconciliations/{_run(w, s)}/export", {})),
    Route("annotate reconciliation item", frozenset({"operator", "admin"}),
          Permission.RECONCILIATION_DECIDE, lambda w, s, k: _run_item(w, s, k, "annotate")),
    Route("resolve reconciliation item exception", frozenset({"operator", "admin"}),
          Permission.EXCEPTIONS_RESOLVE,
          lambda w, s, k: _run_item(w, s, k, "resolve-exception")),
    Route("accept reconciliation item", frozenset({"operator", "admin"}),
          Permission.RECONCILIATION_DECIDE, lambda w, s, k: _run_item(w, s, k, "accept")),
    Route("approve reconciliation item", frozenset({"operator", "admin"}),
          Permission.RECONCILIATION_DECIDE, lambda w, s, k: _run_item(w, s, k, "approve")),
]  # fmt: skip
CASES = [
    pytest.param(route, role, side, id=f"{route.name}-{role}-{side}")
    for route in ROUTES
    for role in ROLES
    for side in ("own", "other")
    if side == "own" or route.by_id or route.other is not None
]
NOT_FOUND = {
    "account": "account_not_found",
    "payment": "payment_not_found",
    "keys": "key_not_found",
    "webhook-endpoints": "webhook_endpoint_not_found",
    "batches": "batch_not_found",
    "exceptions": "payment_not_found",
    "reconciliations": "reconciliation_not_found",
}


@pytest.mark.parametrize(("route", "role", "side"), CASES)
def test_route_role_tenant(world: World, route: Route, role: str, side: str) -> None:
    key = world.own.keys[role]
    target = world.own if side == "own" else world.other
    method, path, kwargs = route.call(world, target, key)
    with key.client(world.live.base_url) as client:
        response = client.request(method, path, **kwargs)

    if role not in route.roles:
        assert response.status_code == 403, response.text
        assert problem_code(response) == "forbidden"
    elif side == "own":
        assert response.status_code == route.ok, response.text
    elif route.by_id:
        assert response.status_code == 404, response.text
        expected = next(code for noun, code in NOT_FOUND.items() if noun in path)
        assert problem_code(response) == expected
        assert target.tenant not in response.text
    else:
        assert route.other is not None
        assert response.status_code in (200, 201, 422), response.text
        route.other(response, world)


def test_the_expected_roles_are_the_permission_matrix() -> None:
    for route in ROUTES:
        granted = {
            role
            for role, permissions in ROLE_PERMISSIONS.items()
            if route.permission in permissions
        }
        assert granted == route.roles, route.name


def test_the_matrix_covers_every_route(world: World) -> None:
    """A new route must be added to ROUTES (and so to the matrix)."""
    covered = {route.name for route in ROUTES}
    assert len(covered) == len(ROUTES)
    served = {
        (method, route.path)
        for route in _routes(world.live.app.routes)
        for method in getattr(route, "methods", ()) or ()
        if route.path
        not in ("/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")
        and method != "HEAD"
    }
    assert served == {
        ("POST", "/v1/accounts"), ("GET", "/v1/accounts/{account_id}"),
        ("GET", "/v1/accounts/{account_id}/entries"),
        ("POST", "/v1/accounts/{account_id}/deposits"),
        ("POST", "/v1/accounts/{account_id}/close"), ("POST", "/v1/payments"),
        ("GET", "/v1/payments"), ("GET", "/v1/payments/{payment_id}"),
        ("GET", "/v1/payments/{payment_id}/events"), ("GET", "/v1/metrics"), ("GET", "/metrics"),
        ("GET", "/dashboard"), ("POST", "/v1/keys"), ("GET", "/v1/keys"),
        ("GET", "/v1/keys/{key_id}"), ("POST", "/v1/keys/{key_id}/revoke"),
        ("DELETE", "/v1/keys/{key_id}"),
        ("POST", "/v1/webhook-endpoints"), ("GET", "/v1/webhook-endpoints"),
        ("GET", "/v1/webhook-endpoints/{endpoint_id}"),
        ("GET", "/v1/webhook-endpoints/{endpoint_id}/deliveries"),
        ("POST", "/v1/webhook-endpoints/{endpoint_id}/rotate-secret"),
        ("POST", "/v1/webhook-endpoints/{endpoint_id}/disable"),
        ("POST", "/v1/webhook-endpoints/{endpoint_id}/enable"),
        ("DELETE", "/v1/webhook-endpoints/{endpoint_id}"),
        ("POST", "/v1/batches"), ("GET", "/v1/batches"), ("GET", "/v1/batches/{batch_id}"),
        ("GET", "/v1/batches/{batch_id}/items"), ("GET", "/v1/batches/{batch_id}/report"),
        ("POST", "/v1/batches/{batch_id}/approve"), ("POST", "/v1/batches/{batch_id}/reject"),
        ("POST", "/v1/batches/{batch_id}/cancel"), ("POST", "/v1/batches/{batch_id}/retry"),
        ("GET", "/v1/exceptions"), ("POST", "/v1/exceptions/{payment_id}/resolve"),
        ("POST", "/v1/exceptions/resolve-pending"),
        ("POST", "/v1/reconciliations"), ("GET", "/v1/reconciliations"),
        ("GET", "/v1/reconciliations/{reconciliation_id}"),
        ("GET", "/v1/reconciliations/{reconciliation_id}/items"),
        ("GET", "/v1/reconciliations/{reconciliation_id}/export"),
        ("POST", "/v1/reconciliations/{reconciliation_id}/items/{index}/annotate"),
        ("POST", "/v1/reconciliations/{reconciliation_id}/items/{index}/resolve-exception"),
        ("POST", "/v1/reconciliations/{reconciliation_id}/items/{index}/accept"),
        ("POST", "/v1/reconciliations/{reconciliation_id}/items/{index}/approve"),
    }  # fmt: skip


def _routes(routes: list[Any]) -> list[Any]:
    """The app's routes, through included routers (FastAPI keeps those as one entry each)."""
    found = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        found += _routes(inner.routes) if inner is not None else [route]
    return found


def test_an_unknown_id_and_another_tenants_id_answer_alike(world: World) -> None:
    key = world.own.keys["admin"]
    with key.client(world.live.base_url) as client:
        for template, real in (
            ("/v1/accounts/{}", world.other.payer),
            ("/v1/payments/{}", world.other.payment),
            ("/v1/keys/{}", world.other.admin.id),
            ("/v1/batches/{}", world.other.batch),
        ):
            theirs = client.get(template.format(real))
            unknown = client.get(template.format(uuid.uuid4()))
            assert (theirs.status_code, problem_code(theirs)) == (
                unknown.status_code, problem_code(unknown),
            )  # fmt: skip
            assert theirs.json()["title"] == unknown.json()["title"]
