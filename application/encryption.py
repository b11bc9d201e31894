"""Encryption at rest of event payloads: AES-256-GCM with key rotation.

The event store encrypts what ``Mapper.to_stored_event`` produces (each event's and snapshot's
JSON ``state``) with a :class:`eventsourcing.persistence.Cipher` named by ``CIPHER_TOPIC``.
:class:`RotatingAESCipher` is that cipher: it **encrypts** with the current key
(``PAYLEDGER_ENCRYPTION_KEY``) and **decrypts** with the current key or any previous one
(``PAYLEDGER_ENCRYPTION_OLD_KEYS``), so a key can be replaced without rewriting history: new
events are written under the new key and old ones stay readable as long as their key is listed.

The stored format is the library's own (``eventsourcing.cipher`` / ``eventsourcing.cryptography``
``AESCipher``): ``nonce (12 bytes) || tag (16 bytes) || ciphertext``, with a random 96-bit nonce
per value and no associated data. A store written by the library's cipher is readable here with
the same key, and the other way round. What stays in clear: the event's topic, aggregate id,
version and position, the tracking rows, and the SQL views (projections/), which hold the
decoded fields the queries answer with.

AES-GCM comes from the ``cryptography`` package (OpenSSL). Encrypting a 1 KiB event costs about
2 µs; a value that no configured key opens raises :class:`ValueError` (GCM authenticates, so a
wrong key or an altered value is never returned as garbage).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.persistence import Cipher

from application.store import StoreConfigError

if TYPE_CHECKING:
    from eventsourcing.utils import Environment

    from application.settings import Settings

CIPHER_TOPIC = "application.encryption:RotatingAESCipher"
# Keys of the eventsourcing environment (application/store.py builds the rest of it).
ENV_TOPIC = "CIPHER_TOPIC"
ENV_KEY = "CIPHER_KEY"
ENV_OLD_KEYS = "CIPHER_OLD_KEYS"

KEY_BYTES = 32  # AES-256 for new keys
OLD_KEY_SIZES = (16, 24, 32)  # previous keys may come from the library's AESCipher.create_key
NONCE_BYTES = 12
TAG_BYTES = 16
HEADER_BYTES = NONCE_BYTES + TAG_BYTES


class EncryptionKeyError(StoreConfigError):
    """The encryption keys do not fit the store (one clear line, like every store problem)."""


def new_key() -> str:
    """A fresh key for ``PAYLEDGER_ENCRYPTION_KEY``: 32 random bytes, base64."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def parse_key(text: str, sizes: Iterable[int] = (KEY_BYTES,)) -> bytes:
    """The key bytes of a base64 text; ``ValueError`` (never echoing the key) if it is not
    base64 or not of an allowed size."""
    allowed = tuple(sizes)
    try:
        key = base64.b64decode(text.strip().encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        msg = "is not base64 (generate one with `payledger db new-encryption-key`)"
        raise ValueError(msg) from None
    if len(key) not in allowed:
        sizes_text = " or ".join(str(n) for n in allowed)
        raise ValueError(
            f"must be {sizes_text} bytes, base64-encoded; this one is {len(key)} bytes "
            "(generate one with `payledger db new-encryption-key`)"
        )
    return key


def split_keys(text: str) -> list[str]:
    """Comma-separated keys, blanks ignored."""
    return [part.strip() for part in text.split(",") if part.strip()]


class RotatingAESCipher(Cipher):
    """AES-GCM that encrypts with ``CIPHER_KEY`` and decrypts with it or any of
    ``CIPHER_OLD_KEYS`` (comma-separated, base64), tried in that order."""

    def __init__(self, environment: Environment | Mapping[str, str]) -> None:
        current = environment.get(ENV_KEY)
        if not current:
            raise OSError(f"'{ENV_KEY}' not in env")
        self._current = AESGCM(parse_key(current))
        old = [parse_key(k, OLD_KEY_SIZES) for k in split_keys(environment.get(ENV_OLD_KEYS) or "")]
        self._old = [AESGCM(k) for k in old]
        self._all = [self._current, *self._old]

    @property
    def key_count(self) -> int:
        return len(self._all)

    def encrypt(self, plaintext: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._current.encrypt(nonce, plaintext, None)  # ciphertext || tag
        # The tag goes first, as eventsourcing's AESCipher stores it.
        return nonce + sealed[-TAG_BYTES:] + sealed[:-TAG_BYTES]

    def decrypt(self, ciphertext: bytes) -> bytes:
        if len(ciphertext) < HEADER_BYTES:
            raise ValueError("Damaged cipher text: shorter than its nonce and tag")
        nonce = ciphertext[:NONCE_BYTES]
        sealed = ciphertext[HEADER_BYTES:] + ciphertext[NONCE_BYTES:HEADER_BYTES]
        for aes in self._all:
            try:
                return aes.decrypt(nonce, sealed, None)
            except InvalidTag:
                continue
        raise ValueError(
            "Invalid cipher tag: no configured encryption key opens this value (a key missing "
            "from PAYLEDGER_ENCRYPTION_OLD_KEYS, or the value was altered)"
        )

    def key_index(self, ciphertext: bytes) -> int | None:
        """Which key opens ``ciphertext``: 0 the current one, 1.. the old ones in order."""
        if len(ciphertext) < HEADER_BYTES:
            return None
        nonce = ciphertext[:NONCE_BYTES]
        sealed = ciphertext[HEADER_BYTES:] + ciphertext[NONCE_BYTES:HEADER_BYTES]
        for i, aes in enumerate(self._all):
            try:
                aes.decrypt(nonce, sealed, None)
            except InvalidTag:
                continue
            return i
        return None


def cipher_env(settings: Settings) -> dict[str, str]:
    """The eventsourcing environment entries that switch encryption on (none when no key is
    configured)."""
    if not settings.encryption_key:
        return {}
    return {
        ENV_TOPIC: CIPHER_TOPIC,
        ENV_KEY: settings.encryption_key,
        ENV_OLD_KEYS: settings.encryption_old_keys,
    }


def check_readable(app: Any) -> None:
    """Refuse to start when the configured keys do not fit the stored events: encryption on
    with events the keys cannot open (written in clear or under a key not listed), or off with
    encrypted events. Looks at the first and the last event only (cheap at every start)."""
    recorder, cipher = app.recorder, app.mapper.cipher
    try:
        last = recorder.max_notification_id()
        if not last:
            return
        samples = [
            *recorder.select_notifications(start=1, limit=1),
            *recorder.select_notifications(start=last, limit=1),
        ]
    except Exception:  # no tables yet (created elsewhere) or no database: not this check's call
        return
    for notification in samples:
        state: bytes = notification.state
        if cipher is None:
            if not _is_json(state):
                raise EncryptionKeyError(
                    "the event store is encrypted: set PAYLEDGER_ENCRYPTION_KEY (and "
                    "PAYLEDGER_ENCRYPTION_OLD_KEYS) to the keys it was written with"
                )
            continue
        try:
            cipher.decrypt(state)
        except ValueError:
            if _is_json(state):
                raise EncryptionKeyError(
                    "the event store holds unencrypted events: encryption cannot be switched "
                    "on for an existing plaintext store (unset PAYLEDGER_ENCRYPTION_KEY, or "
                    "start from an empty store)"
                ) from None
            raise EncryptionKeyError(
                f"no configured encryption key opens event {notification.id}: add the key it "
                "was written with to PAYLEDGER_ENCRYPTION_OLD_KEYS"
            ) from None


def _is_json(state: bytes) -> bool:
    """A plaintext event (a JSON object); ciphertext practically never parses as one."""
    try:
        return isinstance(orjson.loads(state), dict)
    except orjson.JSONDecodeError:
        return False
