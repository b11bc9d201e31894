"""TOTP (RFC 6238, pyotp): new seeds, provisioning URIs and QR codes, code checks, and sealing
the seed for the event store.

A seed is stored sealed with AES-256-GCM under a key derived from ``PAYLEDGER_SECRET_KEY``
(purpose ``payledger-totp-seal-v1``), bound to its key id, so someone who can read the events
but not the server's secret cannot compute codes. Changing ``PAYLEDGER_SECRET_KEY`` therefore
makes existing TOTP enrolments unreadable: issue new approver/admin keys after rotating it.
"""

from __future__ import annotations

import base64
import hmac
import io
import os
from datetime import datetime
from uuid import UUID

import pyotp
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ISSUER = "Payledger"
SEAL_CONTEXT = b"payledger-totp-seal-v1"
SEAL_VERSION = "v1"
STEP_S = 30
DIGITS = 6
# Codes of the previous and next 30-second step are accepted too (clock drift, typing time).
VALID_WINDOW = 1


class SealError(Exception):
    """A sealed seed that cannot be opened (another secret key, or altered)."""


def new_seed() -> str:
    return pyotp.random_base32()  # 160 bits, from `secrets`


def provisioning_uri(seed: str, key_id: UUID, tenant: str, role: str) -> str:
    """The ``otpauth://totp/...`` URI an authenticator app scans."""
    label = f"{tenant}:{role}:{key_id.hex[:8]}"
    return pyotp.TOTP(seed, digits=DIGITS, interval=STEP_S).provisioning_uri(
        name=label, issuer_name=ISSUER
    )


def matching_step(seed: str, code: str, now: datetime) -> int | None:
    """The time step whose code ``code`` is, within the valid window around ``now``, or None."""
    if len(code) != DIGITS or not code.isascii() or not code.isdigit():
        return None
    totp = pyotp.TOTP(seed, digits=DIGITS, interval=STEP_S)
    current = totp.timecode(now)
    found = None
    for step in range(current - VALID_WINDOW, current + VALID_WINDOW + 1):
        # Every candidate is compared, in constant time, whichever matches.
        if hmac.compare_digest(totp.generate_otp(step), code):
            found = step
    return found


def code_at(seed: str, when: datetime) -> str:
    """The code an authenticator shows at ``when`` (for tests and the CLI)."""
    return pyotp.TOTP(seed, digits=DIGITS, interval=STEP_S).at(when)


def seed_of_uri(uri: str) -> str:
    parsed = pyotp.parse_uri(uri)
    assert isinstance(parsed, pyotp.TOTP)
    return parsed.secret


# --- sealing ---------------------------------------------------------------------------------


def seal_key(secret_key: str | bytes) -> bytes:
    raw = secret_key.encode() if isinstance(secret_key, str) else secret_key
    return hmac.digest(raw, SEAL_CONTEXT, "sha256")


def seal(seed: str, key_id: UUID, secret_key: str | bytes) -> str:
    nonce = os.urandom(12)
    sealed = AESGCM(seal_key(secret_key)).encrypt(nonce, seed.encode(), key_id.bytes)
    return f"{SEAL_VERSION}:{base64.b64encode(nonce + sealed).decode()}"


def unseal(sealed: str, key_id: UUID, secret_key: str | bytes) -> str:
    version, _, payload = sealed.partition(":")
    if version != SEAL_VERSION:
        raise SealError(f"unknown seal version {version!r}")
    try:
        raw = base64.b64decode(payload, validate=True)
        seed = AESGCM(seal_key(secret_key)).decrypt(raw[:12], raw[12:], key_id.bytes)
    except Exception as e:  # InvalidTag, bad base64
        raise SealError("the TOTP seed cannot be opened with this PAYLEDGER_SECRET_KEY") from e
    return seed.decode()


# --- QR codes --------------------------------------------------------------------------------


def qr_terminal(uri: str) -> str:
    """The URI as a QR code drawn with block characters, for a terminal."""
    import qrcode

    qr = qrcode.QRCode(border=2)
    qr.add_data(uri)
    qr.make(fit=True)
    out = io.StringIO()
    qr.print_ascii(out=out, invert=True)
    return out.getvalue()


def qr_png(uri: str) -> bytes:
    """The URI as a QR code PNG (pure Python: qrcode with pypng)."""
    import qrcode
    from qrcode.image.pure import PyPNGImage

    image = qrcode.make(uri, image_factory=PyPNGImage, border=4, box_size=8)
    out = io.BytesIO()
    image.save(out)
    return out.getvalue()
