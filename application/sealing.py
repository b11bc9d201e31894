"""Secrets kept inside events (TOTP seeds, webhook signing secrets), sealed with AES-256-GCM.

The key is derived from ``PAYLEDGER_SECRET_KEY`` and a per-use context, and the sealed value is
bound to its owner's id (associated data), so a sealed secret copied to another aggregate does
not open. Format: ``<version>:<base64(nonce | ciphertext+tag)>``.
"""

from __future__ import annotations

import base64
import hmac
import os
from dataclasses import dataclass
from uuid import UUID

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


class SealError(Exception):
    """A sealed secret that this ``PAYLEDGER_SECRET_KEY`` cannot open."""


@dataclass(frozen=True)
class Sealer:
    context: bytes  # separates the keys of different uses
    version: str  # the prefix of what it seals
    what: str  # named in errors: "the TOTP seed"

    def key(self, secret_key: str | bytes) -> bytes:
        raw = secret_key.encode() if isinstance(secret_key, str) else secret_key
        return hmac.digest(raw, self.context, "sha256")

    def seal(self, plain: str, owner_id: UUID, secret_key: str | bytes) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self.key(secret_key)).encrypt(nonce, plain.encode(), owner_id.bytes)
        return f"{self.version}:{base64.b64encode(nonce + sealed).decode()}"

    def unseal(self, sealed: str, owner_id: UUID, secret_key: str | bytes) -> str:
        version, _, payload = sealed.partition(":")
        if version != self.version:
            raise SealError(f"unknown seal version {version!r}")
        try:
            raw = base64.b64decode(payload, validate=True)
            plain = AESGCM(self.key(secret_key)).decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], owner_id.bytes
            )
        except Exception as e:  # InvalidTag, bad base64
            raise SealError(f"{self.what} cannot be opened with this PAYLEDGER_SECRET_KEY") from e
        return plain.decode()
