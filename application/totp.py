"""TOTP (RFC 6238, pyotp): new seeds, provisioning URIs and QR codes, code checks, and sealing
the seed for the event store.

A seed is stored sealed with AES-256-GCM under a key derived from ``PAYLEDGER_SECRET_KEY``
(purpose ``payledger-totp-seal-v1``), bound to its key id, so someone who can read the events
but not the server's secret cannot compute codes. Changing ``PAYLEDGER_SECRET_KEY`` therefore
makes existing TOTP enrolments unreadable: issue new approver/admin keys after rotating it.
"""

from __future__ import annotations

import hmac
import io
from datetime import datetime
from uuid import UUID

import pyotp

from application.sealing import Sealer
from application.sealing import SealError as SealError  # re-exported for callers

ISSUER = "Payledger"
SEAL_CONTEXT = b"payledger-totp-seal-v1"
SEAL_VERSION = "v1"
STEP_S = 30
DIGITS = 6
# Codes of the previous and next 30-second step are accepted too (clock drift, typing time).
VALID_WINDOW = 1


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


_SEALER = Sealer(SEAL_CONTEXT, SEAL_VERSION, "the TOTP seed")
seal_key = _SEALER.key


def seal(seed: str, key_id: UUID, secret_key: str | bytes) -> str:
    return _SEALER.seal(seed, key_id, secret_key)


def unseal(sealed: str, key_id: UUID, secret_key: str | bytes) -> str:
    return _SEALER.unseal(sealed, key_id, secret_key)


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
