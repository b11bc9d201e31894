"""Schemathesis over the OpenAPI document, authenticated: every operation answers generated
requests, valid and invalid, with a status, content type, headers and body that the document
declares, and never with a server error.

A real server (uvicorn on a throwaway SQLite file) is driven over HTTP with a fixed seed, so
that every run sends the same requests:

    .venv/bin/python -m pytest tests/interfaces/test_schemathesis.py -p no:cacheprovider

* As an admin key (every route is reachable), each operation in both of Schemathesis's modes:
  positive (data the document allows) and negative (data it forbids). Positive cases also come
  with ids that exist (an account, a payment, a key, a webhook endpoint of the admin's tenant),
  a fresh `Idempotency-Key`, a fresh TOTP code where a step-up is asked, and a payment between
  real accounts, so that the success answers are checked too, not only the 4xx.
* With the `Authorization` values Schemathesis makes up, once a key exists: always 401.
* The sandbox (no key exists yet: anonymous requests act in tenant `default`), positive.

The checks: no 5xx, and the status code, content type, headers and body as documented. A
failure shows the request as a curl command; the counts are printed at the end of the module.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from interfaces.http.app import create_app
from interfaces.http.routes.keys import OTP_HEADER
from tests.conftest import make_settings
from tests.interfaces.conftest import Api, LiveServer, serving
from tests.interfaces.keys_helpers import HttpKey, issue

pytestmark = [
    pytest.mark.slow,
    # Schemathesis draws from `random` inside its strategies (schemathesis/generation/
    # dictionaries.py); Hypothesis seeds `random` for every example, so runs stay reproducible.
    pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies"),
]

SEED = 20_240_917  # fixed: the same requests on every run
EXAMPLES = 40  # per operation and mode, as the admin
SHORT_EXAMPLES = 10  # per operation, for generated credentials and for the sandbox
WAIT_CAP_S = 0.2  # see `_cap_wait`
KEY_HEADER = "Idempotency-Key"
FRESH = "<fresh>"  # a header value replaced when sent: see `_fresh_headers`
POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE

# The document the server serves (the admin's server checks that it is this very one).
DOCUMENT = create_app(make_settings("sqlite://")).openapi()


def _load(*, generated_credentials: bool) -> tuple[list[Any], list[str]]:
    """The document's operations, those that change or remove an object last (so that the
    others find the objects they address by id). With ``generated_credentials``, Schemathesis
    also generates the `Authorization` header (the ApiKey scheme); else the test sends one."""
    config = SchemathesisConfig.from_dict(
        {"generation": {"with-security-parameters": generated_credentials}}
    )
    schema = schemathesis.openapi.from_dict(copy.deepcopy(DOCUMENT), config=config)
    loaded = list(schema.get_all_operations())
    operations = sorted((r.ok() for r in loaded if isinstance(r, Ok)), key=_destructive)
    return operations, [str(r.err()) for r in loaded if not isinstance(r, Ok)]


def _destructive(operation: Any) -> bool:
    path = operation.path
    return operation.method.upper() == "DELETE" or path.endswith(("/close", "/revoke"))


OPERATIONS, SCHEMA_ERRORS = _load(generated_credentials=False)
FORGED, _ = _load(generated_credentials=True)


@dataclass
class Target:
    """A server, the headers every request gets, and what exists on it."""

    live: LiveServer
    session: requests.Session
    headers: dict[str, str]
    admin: HttpKey | None = None
    # Path parameter (or "<operation label> <parameter>") -> ids that exist.
    known_ids: dict[str, list[str]] = field(default_factory=dict)
    known_bodies: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # by label

    @property
    def base_url(self) -> str:
        return self.live.base_url


STATS: Counter[tuple[str, str]] = Counter()  # (run, what) -> count, printed at the end
# The run and the log's end after the answer being checked (one request at a time).
_NOW: dict[str, Any] = {"run": "", "log_end": 0}
_KEYS = itertools.count()


# --- the checks ----------------------------------------------------------------------------------


def not_a_server_error_but_a_position_never_reached(
    ctx: Any, response: Any, case: Any
) -> bool | None:
    """``not_a_server_error``, except for the one 503 the API documents as an answer to the
    request rather than a fault: ``?wait_for_position=N`` beyond the end of the log (no write
    has reached N), ``position_not_reached`` after ``timeout_s`` (README, read-your-writes;
    tests/interfaces/test_queries_http.py). The log's end is read after the answer: it never
    moves back, so N beyond it now was beyond it during the whole wait."""
    if response.status_code == 503 and _beyond_the_log(response, case):
        STATS[_NOW["run"], "503 position_not_reached (allowed)"] += 1
        return None
    return not_a_server_error(ctx, response, case)


CHECKS = [
    not_a_server_error_but_a_position_never_reached,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _beyond_the_log(response: Any, case: Any) -> bool:
    try:
        code = response.json().get("code")
        wanted = int((case.query or {}).get("wait_for_position"))
    except (ValueError, TypeError, AttributeError):
        return False
    return code == "position_not_reached" and wanted > _NOW["log_end"]


# --- what is sent --------------------------------------------------------------------------------


def _cap_wait(case: Any) -> None:
    """A query waiting for a position that no write reaches waits its whole `timeout_s` (up to
    30 s, 5 s by default): a valid timeout above WAIT_CAP_S becomes WAIT_CAP_S, still valid, so
    the answer is the same, sooner. An invalid timeout is sent as generated."""
    query = case.query
    if not isinstance(query, dict) or "wait_for_position" not in query:
        return
    timeout = query.get("timeout_s", 5.0)
    try:
        value = float(timeout)
    except (TypeError, ValueError):
        return
    if not isinstance(timeout, bool) and math.isfinite(value) and WAIT_CAP_S < value <= 30:
        query["timeout_s"] = WAIT_CAP_S


def _fresh_headers(target: Target, case: Any) -> dict[str, str]:
    """Headers the case asked to be fresh: a new idempotency key, the admin's current code."""
    fresh = {}
    for name, value in (case.headers or {}).items():
        if value != FRESH:
            continue
        if name == KEY_HEADER:
            fresh[name] = f"schemathesis-{next(_KEYS)}"
        elif name == OTP_HEADER and target.admin is not None:
            fresh[name] = target.admin.code()
    return fresh


def _strategy(operation: Any, mode: GenerationMode, target: Target) -> Any:
    """Generated cases; in positive mode also the same with ids that exist, fresh headers and
    known bodies, each part generated when not given."""
    strategies = [operation.as_strategy(generation_mode=mode)]
    if mode is not POSITIVE:
        return strategies[0]
    known = {p.name: target.known_ids.get(f"{operation.label} {p.name}")
             or target.known_ids.get(p.name) for p in operation.path_parameters}  # fmt: skip
    id_sets: list[dict[str, str] | None] = [None]
    if known and all(known.values()):
        count = max(len(ids) for ids in known.values() if ids)
        id_sets += [{n: ids[i % len(ids)] for n, ids in known.items() if ids}
                    for i in range(count)]  # fmt: skip
    fresh = {p.name: FRESH for p in operation.headers if p.name in (KEY_HEADER, OTP_HEADER)}
    if OTP_HEADER in fresh and target.admin is None:
        del fresh[OTP_HEADER]
    bodies: list[Any] = [None, *target.known_bodies.get(operation.label, [])]
    for ids, headers, body in itertools.product(id_sets, [None, fresh or None], bodies):
        given_parts: dict[str, Any] = {}
        if ids:
            given_parts["path_parameters"] = ids
        if headers:
            given_parts["headers"] = headers
        if body is not None:
            given_parts["body"] = body
        if given_parts:
            strategies.append(operation.as_strategy(generation_mode=mode, **given_parts))
    return st.one_of(strategies)


def _call_and_check(target: Target, run: str, case: Any, *, refused: bool) -> None:
    headers = {**target.headers, **_fresh_headers(target, case)}
    _cap_wait(case)

    def send() -> Any:
        answer = case.call(
            base_url=target.base_url,
            session=target.session,
            headers=headers,  # over the case's own `Authorization`, if any
            timeout=30,
        )
        _NOW.update(run=run, log_end=target.live.notification_position())
        return answer

    response = send()
    if _views_behind(response, case):
        # The views lag the log (a loaded machine): retry once after `Retry-After`, as the API
        # asks its clients to. A second 503 fails the checks below.
        STATS[run, "retried after Retry-After"] += 1
        time.sleep(float(response.headers.get("Retry-After", "1")))
        response = send()
    STATS[run, "examples"] += 1
    STATS[run, f"status {response.status_code}"] += 1
    try:
        case.validate_response(response, checks=CHECKS, headers=headers)
        if refused:
            assert response.status_code == 401, case.as_curl_command(headers=headers)
    except BaseException:
        STATS[run, "failures"] += 1
        raise


def _views_behind(response: Any, case: Any) -> bool:
    """A 503 ``position_not_reached`` for a position the log has reached."""
    if response.status_code != 503 or _beyond_the_log(response, case):
        return False
    try:
        return bool(response.json().get("code") == "position_not_reached")
    except ValueError:
        return False


def run(
    target: Target,
    run_name: str,
    operation: Any,
    mode: GenerationMode,
    examples: int,
    *,
    refused: bool = False,  # every answer must be a 401
) -> None:
    @seed(SEED)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,  # nothing carried over between runs: the seed alone decides
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        print_blob=False,
    )
    @given(case=_strategy(operation, mode, target))
    def check(case: Any) -> None:
        _call_and_check(target, run_name, case, refused=refused)

    STATS[run_name, "operations"] += 1
    check()


# --- the servers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    """Prints each run's counts once the module is done (also on failure)."""
    STATS.clear()
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        for name in sorted({r for r, _ in STATS}):
            counts = {what: n for (r, what), n in STATS.items() if r == name}
            line = ", ".join(f"{what}: {n}" for what, n in sorted(counts.items()))
            reporter.write_line(f"schemathesis [{name}, seed {SEED}] {line}")


@pytest.fixture(scope="module")
def admin_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A server whose tenant has an admin key and one object of each kind to address by id."""
    url = f"sqlite:///{tmp_path_factory.mktemp('schemathesis') / 'payledger.sqlite3'}"
    # Up to 100 wrong codes in a row before the second factor locks (the most the settings
    # allow), so that the fresh codes still pass after the generated wrong ones.
    with serving(create_app(make_settings(url, otp_max_failures=100))) as live:
        admin = issue(live.service, "schemathesis", "admin")
        spare = issue(live.service, "schemathesis", "auditor")  # revoked, never the admin's
        with admin.client(live.base_url) as client:
            api = Api(client)
            payer, payee = api.funded_account("500.00"), api.merchant()
            empty, closable = api.open_account()["id"], api.open_account()["id"]
            payment = {"amount": "1.00", "currency": "CNY", "channel": "internal",
                       "payer_account_id": payer, "payee_account_id": payee}  # fmt: skip
            paid = api.pay(payment)
            assert paid.status_code == 201, paid.text
            hook = {"url": "http://127.0.0.1:9/hooks", "events": ["payment.succeeded"]}
            endpoint = client.post("/v1/webhook-endpoints", json=hook)
            assert endpoint.status_code == 201, endpoint.text
            assert client.get("/openapi.json").json() == DOCUMENT, "not the document tested"
        known = {
            "account_id": [payer, payee, empty],
            "POST /v1/accounts/{account_id}/close account_id": [closable, payer],
            "payment_id": [paid.json()["id"]],
            "key_id": [spare.id],
            "endpoint_id": [endpoint.json()["id"]],
        }
        bodies = {"POST /v1/payments": [payment]}
        with requests.Session() as session:
            yield Target(live, session, admin.auth, admin, known, bodies)


@pytest.fixture
def forged_target(admin_target: Target) -> Iterator[Target]:
    """The admin's server, with the credentials Schemathesis makes up instead of the key."""
    with requests.Session() as session:
        yield Target(admin_target.live, session, {})


@pytest.fixture(scope="module")
def sandbox_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A server where no key exists: anonymous requests are the sandbox's (not in production)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('schemathesis') / 'sandbox.sqlite3'}"
    with serving(create_app(make_settings(url))) as live, requests.Session() as session:
        yield Target(live, session, {})


def _has_input(operation: Any) -> bool:
    return any(True for _ in operation.iter_parameters()) or len(operation.body) > 0


def label(operation: Any) -> str:
    return str(operation.label)


# --- the tests -----------------------------------------------------------------------------------


def test_the_document_loads_every_operation() -> None:
    assert not SCHEMA_ERRORS
    assert len(OPERATIONS) >= 25


@pytest.mark.parametrize("mode", [POSITIVE, NEGATIVE], ids=str)
@pytest.mark.parametrize("operation", OPERATIONS, ids=label)
def test_every_operation_conforms_for_an_admin_key(
    admin_target: Target, operation: Any, mode: GenerationMode
) -> None:
    if mode is NEGATIVE and not _has_input(operation):
        pytest.skip("nothing to make invalid: no parameter, no body")
    run(admin_target, f"admin {mode}", operation, mode, EXAMPLES)


@pytest.mark.parametrize("operation", FORGED, ids=label)
def test_every_operation_refuses_made_up_credentials(forged_target: Target, operation: Any) -> None:
    if not operation.definition.raw.get("security"):
        pytest.skip("an open route (probes): no credentials to refuse")
    run(forged_target, "made-up credentials", operation, POSITIVE, SHORT_EXAMPLES, refused=True)


@pytest.mark.parametrize("operation", OPERATIONS, ids=label)
def test_every_operation_conforms_in_the_sandbox(sandbox_target: Target, operation: Any) -> None:
    if operation.method.upper() == "POST" and operation.path == "/v1/keys":
        # Not a weaker check: issuing the first key ends the sandbox for good (by design), and
        # every later request would be a 401. The admin runs cover this operation.
        pytest.skip("issuing a key ends the sandbox")
    run(sandbox_target, "sandbox positive", operation, POSITIVE, SHORT_EXAMPLES)
