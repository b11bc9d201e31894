"""The official ISO 20022 schemas we read and write, shipped in ``xsd/`` and pinned by SHA-256.

Each schema is loaded on first use. Its bytes are checked against the hash recorded here (a
changed file is a packaging fault, never silently accepted), then compiled with lxml. A compiled
``XMLSchema`` keeps its error log on the object, so each thread gets its own compiled copy.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from lxml import etree

from application.xsd import SchemaIntegrityError as SchemaIntegrityError  # raised by schema_bytes
from application.xsd import compiled, shipped_bytes

SCHEMA_SHA256: dict[str, str] = {
    "pain.001.001.03": "6bb5c6f24250ab807f31f6164142bafd6d43bad8d162a926e258ff4c11e128af",
    "pain.001.001.09": "de038b373e47b0077b1832ddd81f4b2f1eb25d35721f62da1e38b7f5a09fda24",
    "pain.002.001.03": "dfb211e63f09825ea89f0ceee870db9e82ab2840fbe8b8148d9c4c2a9a99fd87",
    "pain.002.001.10": "2f9f8d0e9891fa9f31ccf0576397afe501614384d688ae6e43ba694b3d24b0cf",
}
SCHEMA_NAMES = tuple(SCHEMA_SHA256)
NAMESPACE_PREFIX = "urn:iso:std:iso:20022:tech:xsd:"


@dataclass(frozen=True, slots=True)
class SchemaError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def namespace(name: str) -> str:
    """``pain.001.001.09`` -> ``urn:iso:std:iso:20022:tech:xsd:pain.001.001.09``."""
    return NAMESPACE_PREFIX + name


@functools.cache
def schema_bytes(name: str) -> bytes:
    """The XSD's bytes, after checking them against ``SCHEMA_SHA256``."""
    expected = SCHEMA_SHA256.get(name)
    if expected is None:
        raise KeyError(f"unknown schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    return shipped_bytes("application.batch_files", name, expected)


def schema(name: str) -> etree.XMLSchema:
    """The compiled schema, cached per thread (compiled once per thread, on first use)."""
    return compiled(name, schema_bytes)


def schema_errors(
    tree: etree._Element | etree._ElementTree, name: str, limit: int = 20
) -> list[SchemaError]:
    """The first ``limit`` validation errors of ``tree`` against schema ``name`` (none: valid)."""
    compiled = schema(name)
    if compiled.validate(tree):
        return []
    own = f"{{{namespace(name)}}}"  # "{urn:...:pain.001.001.09}PmtInf" reads as "PmtInf"
    return [
        SchemaError(entry.line, entry.message.replace(own, ""))
        for entry in compiled.error_log[:limit]
    ]


def validate(tree: etree._Element | etree._ElementTree, name: str) -> list[str]:
    """Validation error messages, each starting with its line number; empty when valid."""
    return [str(error) for error in schema_errors(tree, name, limit=1_000_000)]
