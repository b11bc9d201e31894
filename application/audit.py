"""Tamper evidence: a keyed hash chain over every stored event, and the walk that checks it.

Each event the recorders write gets, in the same transaction, a row in a side table
``<events table>_chain`` (originator id, version, chain hash; keyed by (originator id, version)
on PostgreSQL, by the event's notification id on SQLite) where

    chain_hash(v) = HMAC-SHA256(key, chain_hash(v-1) || originator id (16 bytes)
                                || version (8 bytes, big-endian)
                                || len(topic) (4 bytes) || topic (UTF-8)
                                || len(state) (4 bytes) || state)

and ``chain_hash(0)`` is 32 zero bytes. The key is derived from the service's secret key, so
someone with write access to the database but without the key cannot alter, insert or delete an
event and then repair the chain: :func:`verify_chain` recomputes every link from the raw stored
bytes and names the first one that does not hold. Deleting an aggregate's *latest* events together
with their chain rows leaves a shorter, valid chain: only the store's head hash, anchored outside
the database, shows that (``verify_chain(..., stop=N)`` recomputes the head hash as it was at
notification N). Snapshots are derived data and are not chained.

This module is pure standard library: the recorders (application/sqlite_recorder.py,
application/pg_recorder.py) import :class:`ChainWriter` from here.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol
from uuid import UUID

# The eventsourcing environment key (hex) through which the recorders get the chain key.
ENV_KEY = "PAYLEDGER_AUDIT_KEY"
KEY_CONTEXT = b"payledger-audit-chain-v1"
HEAD_CONTEXT = b"payledger-audit-head-v1"
ZERO = bytes(32)
FIRST_VERSION = 1
MAX_VERSION = 2**63
CACHE_MAX = 100_000  # recently written heads kept in memory per recorder
PAGE = 10_000  # events per query while verifying
MAX_REPORTED = 100  # broken links kept in a report (all are counted)

HASH_MISMATCH = "hash mismatch"
MISSING_CHAIN_ROW = "missing chain row"
VERSION_GAP = "version gap"
ORPHAN_CHAIN_ROW = "chain row without event"

_HEAD = struct.Struct(">32s16sQI")
_LEN = struct.Struct(">I")


def derive_key(secret: str | bytes) -> bytes:
    """The chain key: HMAC(secret key, "payledger-audit-chain-v1"), never the secret itself."""
    raw = secret.encode() if isinstance(secret, str) else secret
    return hmac.digest(raw, KEY_CONTEXT, "sha256")


def default_key() -> bytes:
    """The key of the settings' default (development) secret, for stores opened without one."""
    from application.settings import Settings  # settings -> store -> here: import late

    return derive_key(str(Settings.model_fields["secret_key"].default))


def key_from_env(env: Mapping[str, str] | Any) -> bytes:
    """The chain key from an eventsourcing environment (``ENV_KEY``, hex), else the default."""
    value = env.get(ENV_KEY)
    return bytes.fromhex(value) if value else default_key()


def id_bytes(originator_id: UUID | str) -> bytes:
    return originator_id.bytes if isinstance(originator_id, UUID) else UUID(originator_id).bytes


def chain_hash(
    key: bytes, prev: bytes, oid: bytes, version: int, topic: bytes, state: bytes
) -> bytes:
    message = b"".join(
        (_HEAD.pack(prev, oid, version, len(topic)), topic, _LEN.pack(len(state)), state)
    )
    return hmac.digest(key, message, "sha256")


def hmac_sha256(key: bytes) -> Callable[[bytes], bytes]:
    """``hmac.digest(key, message, "sha256")`` with the key's padded states computed once
    (RFC 2104): half the cost per event, which the write path and the walk pay a million times."""
    block = 64
    if len(key) > block:
        key = hashlib.sha256(key).digest()
    key = key.ljust(block, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def mac(message: bytes) -> bytes:
        i = inner.copy()
        i.update(message)
        o = outer.copy()
        o.update(i.digest())
        return o.digest()

    return mac


# --- writing -------------------------------------------------------------------------------------

# (key as the recorder stores the originator id, version)
Link = tuple[Hashable, int]


@dataclass
class Linked:
    """One save's chain rows, and the heads to remember once its transaction has committed."""

    rows: list[tuple[Hashable, int, bytes]]
    heads: dict[Hashable, tuple[int, int, bytes]]  # id -> (first version, last version, hash)


class ChainWriter:
    """Computes a save's chain rows; keeps the hashes of recently written heads.

    The cache is only ever asked for an exact (id, version) this process committed itself, so it
    stays right when other processes write the same store: anything else is read from the chain
    table inside the writing transaction (:meth:`plan` says what)."""

    def __init__(self, key: bytes, cache_max: int = CACHE_MAX) -> None:
        self.key = key
        self.mac = hmac_sha256(key)
        self.cache_max = cache_max
        self._heads: OrderedDict[Link, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._topics: dict[str, bytes] = {}

    def plan(self, keys: Iterable[Link]) -> tuple[dict[Link, bytes], list[Link]]:
        """For a save's (id, version) in order: the previous links known from the cache, and
        the ones to read from the chain table (neither in the cache nor in this save)."""
        known: dict[Link, bytes] = {}
        missing: list[Link] = []
        last_in_save: dict[Hashable, int] = {}
        with self._lock:
            for oid, version in keys:
                if version > FIRST_VERSION and last_in_save.get(oid) != version - 1:
                    prev = (oid, version - 1)
                    cached = self._heads.get(prev)
                    if cached is None:
                        missing.append(prev)
                    else:
                        known[prev] = cached
                last_in_save[oid] = version
        return known, missing

    def link(
        self, events: Iterable[tuple[Hashable, bytes, int, str, bytes]], prevs: Mapping[Link, bytes]
    ) -> Linked:
        """Chain rows for (id key, id bytes, version, topic, state) in save order. A previous link
        found nowhere (a store written before the chain existed, or a deleted chain row) restarts
        from zero; verification reports the missing row."""
        mac, pack_head, pack_len = self.mac, _HEAD.pack, _LEN.pack
        topics = self._topics
        rows: list[tuple[Hashable, int, bytes]] = []
        heads: dict[Hashable, tuple[int, int, bytes]] = {}
        for oid, raw_id, version, topic, state in events:
            in_save = heads.get(oid)
            if version <= FIRST_VERSION:
                prev = ZERO
            elif in_save is not None and in_save[1] == version - 1:
                prev = in_save[2]
            else:
                prev = prevs.get((oid, version - 1), ZERO)
            topic_b = topics.get(topic)
            if topic_b is None:
                topic_b = topic.encode()
                if len(topics) < 10_000:  # event classes: a few dozen
                    topics[topic] = topic_b
            message = (pack_head(prev, raw_id, version, len(topic_b)), topic_b,
                       pack_len(len(state)), state)  # fmt: skip
            link = mac(b"".join(message))
            rows.append((oid, version, link))
            heads[oid] = (version if in_save is None else in_save[0], version, link)
        return Linked(rows, heads)

    def remember(self, linked: Linked) -> None:
        """Call after the save committed: its heads replace the links they follow."""
        with self._lock:
            cache = self._heads
            for oid, (first, last, digest) in linked.heads.items():
                cache.pop((oid, first - 1), None)
                cache[(oid, last)] = digest
            while len(cache) > self.cache_max:
                cache.popitem(last=False)

    def forget(self) -> None:
        with self._lock:
            self._heads.clear()


# --- verifying -----------------------------------------------------------------------------------

# (notification id, originator id as 16 bytes, version, topic, state, chain hash or None)
ChainedRow = tuple[int, bytes, int, str, bytes, bytes | None]


class ChainedRecorder(Protocol):
    def select_chained_events(
        self, after: int, limit: int, stop: int | None = None
    ) -> Sequence[ChainedRow]: ...

    def select_orphan_chain_rows(self, limit: int) -> tuple[int, list[tuple[bytes, int]]]: ...


class AuditApp(Protocol):
    recorder: Any


@dataclass(frozen=True)
class BrokenLink:
    aggregate_id: UUID
    version: int
    reason: str
    notification_id: int | None = None  # the event where it was seen (None: no such event)

    def describe(self) -> str:
        where = f" (seen at notification {self.notification_id})" if self.notification_id else ""
        return f"aggregate {self.aggregate_id} version {self.version}: {self.reason}{where}"


@dataclass
class AuditReport:
    events: int = 0
    aggregates: int = 0
    position: int = 0  # the last notification id checked
    head_hash: str = ""  # HMAC over every aggregate's (id, version, chain hash), sorted by id
    complete: bool = True  # False with --until: orphan chain rows are not looked for
    broken: list[BrokenLink] = field(default_factory=list)  # the first MAX_REPORTED
    broken_total: int = 0

    @property
    def ok(self) -> bool:
        return self.broken_total == 0

    @property
    def first_broken(self) -> BrokenLink | None:
        return self.broken[0] if self.broken else None

    def add(self, link: BrokenLink) -> None:
        self.broken_total += 1
        if len(self.broken) < MAX_REPORTED:
            self.broken.append(link)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        data["first_broken"] = None
        for item in data["broken"]:
            item["aggregate_id"] = str(item["aggregate_id"])
        if data["broken"]:
            data["first_broken"] = data["broken"][0]
        return data


def verify_chain(
    app: AuditApp, key: bytes, *, stop: int | None = None, page: int = PAGE
) -> AuditReport:
    """Walk every event in notification order (up to ``stop``) with its chain row, recompute
    each aggregate's chain from the raw stored bytes, and report what does not hold.

    A broken link does not cascade: the next link is checked against the stored hash, or against
    the recomputed one when only the chain row was altered."""
    recorder: ChainedRecorder = app.recorder
    if not hasattr(recorder, "select_chained_events"):
        raise TypeError(f"{type(recorder).__name__} does not keep a hash chain")
    report = AuditReport(complete=stop is None)
    # id -> [last version, its hash, another hash the next link may follow (or None)]
    heads: dict[bytes, list[Any]] = {}
    topics: dict[str, bytes] = {}
    gaps: set[tuple[bytes, int]] = set()
    after = 0
    mac = hmac_sha256(key)
    pack_head, pack_len = _HEAD.pack, _LEN.pack
    events = 0
    while True:
        rows = recorder.select_chained_events(after, page, stop)
        for nid, oid, version, topic, state, stored in rows:
            head = heads.get(oid)
            if head is None:
                expected, prev, alt = FIRST_VERSION, ZERO, None
            else:
                expected, prev, alt = head[0] + 1, head[1], head[2]
            if (
                type(state) is not bytes
                or type(topic) is not str
                or type(version) is not int
                or not 0 < version < MAX_VERSION
                or (stored is not None and type(stored) is not bytes)
            ):  # a value of another type (SQLite keeps whatever it is given): altered
                version = _as_version(version, expected)
                report.add(BrokenLink(UUID(bytes=oid), version, HASH_MISMATCH, nid))
                heads[oid] = [version, stored if type(stored) is bytes else ZERO, None]
                continue
            topic_b = topics.get(topic)
            if topic_b is None:
                topic_b = topics[topic] = topic.encode()
            if version != expected:  # an event deleted (or moved): name the version missing
                missing = expected if version > expected else version
                report.add(BrokenLink(UUID(bytes=oid), missing, VERSION_GAP, nid))
                gaps.add((oid, missing))
                heads[oid] = [version, stored or ZERO, None]
                continue
            computed = mac(b"".join((pack_head(prev, oid, version, len(topic_b)), topic_b,
                                     pack_len(len(state)), state)))  # fmt: skip
            if stored is None:
                report.add(BrokenLink(UUID(bytes=oid), version, MISSING_CHAIN_ROW, nid))
                heads[oid] = [version, computed, ZERO]  # the writer restarts from zero then
            elif computed == stored:
                heads[oid] = [version, stored, None]
            elif alt is not None and stored == chain_hash(key, alt, oid, version, topic_b, state):
                heads[oid] = [version, stored, None]  # the previous chain row was the altered one
            else:
                report.add(BrokenLink(UUID(bytes=oid), version, HASH_MISMATCH, nid))
                heads[oid] = [version, stored, computed]
        events += len(rows)
        if rows:
            after = rows[-1][0]
        if len(rows) < page:
            break
    report.events = events
    report.aggregates = len(heads)
    report.position = after
    if stop is None:
        _orphans(recorder, report, gaps)
    anchor = hmac.new(key, HEAD_CONTEXT, hashlib.sha256)
    for oid in sorted(heads):
        version, stored = heads[oid][0], heads[oid][1]
        anchor.update(oid + version.to_bytes(8, "big") + stored)
    report.head_hash = anchor.hexdigest()
    return report


def _as_version(value: object, expected: int) -> int:
    try:
        version = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return expected
    return version if 0 < version < MAX_VERSION else expected


def _orphans(recorder: ChainedRecorder, report: AuditReport, gaps: set[tuple[bytes, int]]) -> None:
    """Chain rows whose event is gone. An event deleted from the middle of a chain was already
    reported as a version gap: it is counted once."""
    total, rows = recorder.select_orphan_chain_rows(MAX_REPORTED + len(gaps))
    gaps_seen = 0
    for oid, version in rows:
        if (oid, version) in gaps:
            gaps_seen += 1
        else:
            report.add(BrokenLink(UUID(bytes=oid), version, ORPHAN_CHAIN_ROW))
    unread = total - len(rows)  # beyond the rows read; some may be gaps already counted
    report.broken_total += max(0, unread - (len(gaps) - gaps_seen))
