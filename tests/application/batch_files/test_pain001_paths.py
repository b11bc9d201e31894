"""The pain.001 mapper follows each field's path child by child below its transaction or block
(see ``pain001.Field``). These tests prove the paths against the shipped XSDs: each exists, and
a field is read as repeating (texts joined) exactly where the schema lets its path repeat."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import pytest
from lxml import etree

from application.batch_files import pain001, schemas

XS = "{http://www.w3.org/2001/XMLSchema}"
TRANSACTION = ("Document", "CstmrCdtTrfInitn", "PmtInf", "CdtTrfTxInf")
BLOCK = TRANSACTION[:-1]


@dataclass(frozen=True)
class Step:
    name: str
    repeats: bool  # maxOccurs > 1


@functools.cache
def element_paths(version: str) -> tuple[tuple[Step, ...], ...]:
    """Every element path from ``Document`` down that the schema allows."""
    root = etree.fromstring(schemas.schema_bytes(version))
    types = {t.get("name"): t for t in root if t.tag == f"{XS}complexType"}
    paths: list[tuple[Step, ...]] = []

    def walk(type_name: str, prefix: tuple[Step, ...]) -> None:
        assert len(prefix) < 40, f"unexpectedly deep (recursive?) at {prefix}"
        complex_type = types.get(type_name)
        if complex_type is None:  # a simple type: a leaf
            return
        for element in complex_type.iter(f"{XS}element"):
            repeats = element.get("maxOccurs", "1") != "1"
            path = (*prefix, Step(element.get("name", ""), repeats))
            paths.append(path)
            walk(element.get("type", ""), path)

    document = next(e for e in root if e.tag == f"{XS}element" and e.get("name") == "Document")
    start = (Step("Document", False),)
    paths.append(start)
    walk(document.get("type", ""), start)
    return tuple(paths)


def names(path: tuple[Step, ...]) -> tuple[str, ...]:
    return tuple(step.name for step in path)


def below(version: str, owner: tuple[str, ...]) -> list[tuple[Step, ...]]:
    """The paths below ``owner``, relative to it."""
    return [p[len(owner) :] for p in element_paths(version) if names(p[: len(owner)]) == owner]


CASES = [
    (version, field)
    for version in pain001.SUPPORTED_VERSIONS
    for field in pain001.TRANSACTION_FIELDS[version]
]


@pytest.mark.parametrize(("version", "field"), CASES, ids=lambda x: str(getattr(x, "path", x)))
def test_each_transaction_field_exists_in_the_schema(version, field):
    assert field.path in {names(p) for p in below(version, TRANSACTION)}


@pytest.mark.parametrize(("version", "field"), CASES, ids=lambda x: str(getattr(x, "path", x)))
def test_a_field_is_multiple_exactly_when_its_path_may_repeat(version, field):
    [path] = [p for p in below(version, TRANSACTION) if names(p) == field.path]
    assert field.multiple == any(step.repeats for step in path)


@pytest.mark.parametrize("version", pain001.SUPPORTED_VERSIONS)
def test_each_block_field_exists_in_the_schema(version):
    block_paths = {names(p) for p in below(version, BLOCK)}
    fields = [
        pain001.BLOCK_ID,
        pain001.BLOCK_COUNT,
        pain001.BLOCK_SUM,
        pain001.DEBTOR_NAME,
        pain001.DEBTOR_IBAN,
        pain001.CATEGORY_PURPOSE,
        *pain001.EXECUTION_DATE[version],
    ]
    for field in fields:
        assert field.path in block_paths, field.path


def test_the_walker_sees_the_whole_schema():
    # A sanity check on the test itself: known paths and a known repeat are there.
    paths = {names(p): p for p in element_paths("pain.001.001.09")}
    assert (*TRANSACTION, "RmtInf", "Ustrd") in paths
    assert paths[TRANSACTION][-1].repeats
    assert not paths[(*TRANSACTION, "PmtId")][-1].repeats
