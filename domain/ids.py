"""Name-based ids (RFC 9562 version 5, SHA-1): the same UUIDs as ``uuid.uuid5``, made faster.

Ids that must be unique by a natural key are ``uuid5`` of that key (GUIDE.md section 3), and a
100,000-item batch derives several per item. ``uuid.uuid5`` spends most of its ~10 us building
the ``UUID`` through its checking constructor; this builds the same value from the digest
directly. ``tests/domain/test_ids.py`` checks it against ``uuid.uuid5`` on random names.
"""

from __future__ import annotations

from hashlib import sha1
from uuid import UUID, SafeUUID

_VARIANT_VERSION_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_VARIANT_VERSION_SET = (0x8000 << 48) | (5 << 76)
_new = object.__new__
_set = object.__setattr__
_UNKNOWN = SafeUUID.unknown


def name_id(namespace: UUID, name: str) -> UUID:
    """``uuid.uuid5(namespace, name)``."""
    digest = sha1(namespace.bytes + name.encode("utf-8"), usedforsecurity=False).digest()
    value = (int.from_bytes(digest[:16], "big") & _VARIANT_VERSION_CLEAR) | _VARIANT_VERSION_SET
    uuid = _new(UUID)
    _set(uuid, "int", value)
    _set(uuid, "is_safe", _UNKNOWN)
    return uuid


class NameIds:
    """``name_id(namespace, prefix + suffix)`` for many suffixes of one prefix: the prefix is
    hashed once (a batch's 100,000 item ids share ``/batches/<id>/items/``)."""

    __slots__ = ("_prefix",)

    def __init__(self, namespace: UUID, prefix: str) -> None:
        self._prefix = sha1(namespace.bytes + prefix.encode("utf-8"), usedforsecurity=False)

    def __call__(self, suffix: str) -> UUID:
        hasher = self._prefix.copy()
        hasher.update(suffix.encode("utf-8"))
        value = (int.from_bytes(hasher.digest()[:16], "big") & _VARIANT_VERSION_CLEAR) | (
            _VARIANT_VERSION_SET
        )
        uuid = _new(UUID)
        _set(uuid, "int", value)
        _set(uuid, "is_safe", _UNKNOWN)
        return uuid
