"""interfaces/webhooks/verify.py: what a receiver runs on every notification.

Signatures here are made by the deliverer's own ``sign`` (projections/webhook_delivery.py), so
these also hold the two ends to one format."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import orjson
import pytest

from interfaces.webhooks.verify import (
    InvalidPayload,
    MalformedSignatureHeader,
    SignatureMismatch,
    TimestampOutOfTolerance,
    WebhookVerificationError,
    verify,
)
from projections.webhook_delivery import sign

SECRET = "whsec_current-0123456789abcdefghijklmnopqrstuv"
OLD = "whsec_previous-0123456789abcdefghijklmnopqrstu"
NOW = 1_767_225_600
BODY = orjson.dumps({"id": "evt", "type": "payment.succeeded", "sequence": 4, "data": {}})


def test_a_genuine_notification_verifies_and_returns_its_json():
    header = sign(BODY, [SECRET], NOW)
    assert header.startswith(f"t={NOW},v1=")
    event = verify(BODY, header, [SECRET], now=NOW + 10)
    assert event["type"] == "payment.succeeded" and event["sequence"] == 4


def test_an_altered_body_is_rejected():
    header = sign(BODY, [SECRET], NOW)
    altered = BODY.replace(b'"sequence":4', b'"sequence":5')
    with pytest.raises(SignatureMismatch):
        verify(altered, header, [SECRET], now=NOW)
    with pytest.raises(SignatureMismatch):
        verify(BODY + b" ", header, [SECRET], now=NOW)  # even whitespace


def test_a_wrong_secret_is_rejected():
    header = sign(BODY, [SECRET], NOW)
    with pytest.raises(SignatureMismatch):
        verify(BODY, header, ["whsec_someone-else"], now=NOW)


def test_an_altered_timestamp_breaks_the_signature():
    header = sign(BODY, [SECRET], NOW).replace(f"t={NOW}", f"t={NOW + 1}")
    with pytest.raises(SignatureMismatch):
        verify(BODY, header, [SECRET], now=NOW)


@pytest.mark.parametrize("offset", [301, -301, 86_400])
def test_stale_or_future_timestamps_are_rejected(offset):
    header = sign(BODY, [SECRET], NOW)
    with pytest.raises(TimestampOutOfTolerance) as e:
        verify(BODY, header, [SECRET], now=NOW + offset)
    # Signed 301 s before "now" is -301 s from now; signed after it, + seconds.
    assert f"{-offset:+d} s from now" in str(e.value)


@pytest.mark.parametrize("offset", [0, 300, -300])
def test_timestamps_within_tolerance_pass(offset):
    assert verify(BODY, sign(BODY, [SECRET], NOW), [SECRET], now=NOW + offset)


def test_the_tolerance_can_be_narrowed():
    header = sign(BODY, [SECRET], NOW)
    with pytest.raises(TimestampOutOfTolerance):
        verify(BODY, header, [SECRET], tolerance_s=5, now=NOW + 6)


def test_during_rotation_two_v1_values_each_verify_alone():
    header = sign(BODY, [SECRET, OLD], NOW)
    assert header.count("v1=") == 2
    assert verify(BODY, header, [SECRET], now=NOW)  # a receiver that switched already
    assert verify(BODY, header, [OLD], now=NOW)  # one that did not yet
    assert verify(BODY, header, [OLD, SECRET], now=NOW)  # one holding both
    with pytest.raises(SignatureMismatch):
        verify(BODY, header, ["whsec_neither"], now=NOW)


def test_after_rotation_the_old_secret_alone_fails():
    header = sign(BODY, [SECRET], NOW)
    with pytest.raises(SignatureMismatch):
        verify(BODY, header, [OLD], now=NOW)


def test_unknown_schemes_are_ignored():
    header = sign(BODY, [SECRET], NOW) + ",v0=deadbeef"
    assert verify(BODY, header, [SECRET], now=NOW)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "   ",
        "t=123",  # no signature
        "v1=" + "a" * 64,  # no timestamp
        "t=abc,v1=" + "a" * 64,
        "t=-5,v1=" + "a" * 64,
        "t=1,t=2,v1=" + "a" * 64,
        "t=1,v1=xyz",
        "t=1,v1=" + "A" * 64,  # hex is lowercase
        "t=1;v1=" + "a" * 64,
        "garbage",
        "t=1,v1=" + "a" * 64 + ",x" * 3000,  # absurdly long
    ],
)
def test_malformed_headers_are_rejected(header):
    with pytest.raises(MalformedSignatureHeader):
        verify(BODY, header, [SECRET], now=NOW)


def test_a_signed_body_that_is_not_a_json_object_is_rejected():
    for body in (b"not json", b"[1, 2]"):
        with pytest.raises(InvalidPayload):
            verify(body, sign(body, [SECRET], NOW), [SECRET], now=NOW)


def test_every_failure_is_one_exception_type_and_a_value_error():
    for cls in (MalformedSignatureHeader, SignatureMismatch, TimestampOutOfTolerance,
                InvalidPayload):  # fmt: skip
        assert issubclass(cls, WebhookVerificationError)
        assert issubclass(cls, ValueError)


def test_misuse_is_a_programming_error_not_a_verification_failure():
    header = sign(BODY, [SECRET], NOW)
    with pytest.raises(TypeError):
        verify(BODY.decode(), header, [SECRET], now=NOW)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        verify(BODY, header, [], now=NOW)


def test_a_single_secret_string_is_accepted():
    assert verify(BODY, sign(BODY, [SECRET], NOW), SECRET, now=NOW)  # type: ignore[arg-type]


def test_the_module_is_standalone_so_receivers_can_copy_it():
    module = importlib.import_module("interfaces.webhooks.verify")
    tree = ast.parse(Path(str(module.__file__)).read_text())
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {"__future__", "hashlib", "hmac", "json", "re", "time", "typing"}
