"""The shipped XSDs: pinned by SHA-256, compiled lazily once per thread, errors with lines."""

from __future__ import annotations

import hashlib
import threading
from importlib import resources

import pytest
from lxml import etree

from application.batch_files import schemas
from tests.application.batch_files.files import DATA, sample


@pytest.mark.parametrize("name", schemas.SCHEMA_NAMES)
def test_each_shipped_xsd_matches_its_pinned_hash(name):
    data = (resources.files("application.batch_files") / "xsd" / f"{name}.xsd").read_bytes()
    assert hashlib.sha256(data).hexdigest() == schemas.SCHEMA_SHA256[name]
    assert schemas.schema_bytes(name) == data


@pytest.mark.parametrize("name", schemas.SCHEMA_NAMES)
def test_the_shipped_xsds_are_the_official_ones_from_the_corpus(name):
    official = DATA / "iso20022-xsd" / f"{name}.xsd"
    assert schemas.schema_bytes(name) == sample(str(official.relative_to(DATA)))


def test_a_changed_xsd_is_refused(monkeypatch):
    monkeypatch.setitem(schemas.SCHEMA_SHA256, "pain.002.001.03", "0" * 64)
    schemas.schema_bytes.cache_clear()
    try:
        with pytest.raises(schemas.SchemaIntegrityError, match=r"pain\.002\.001\.03"):
            schemas.schema_bytes("pain.002.001.03")
    finally:
        schemas.schema_bytes.cache_clear()


def test_an_unknown_schema_is_an_error():
    with pytest.raises(KeyError, match=r"pain\.001\.001\.99"):
        schemas.schema_bytes("pain.001.001.99")


def test_compiled_once_per_thread():
    here = schemas.schema("pain.001.001.09")
    assert schemas.schema("pain.001.001.09") is here
    other: list[etree.XMLSchema] = []
    thread = threading.Thread(target=lambda: other.append(schemas.schema("pain.001.001.09")))
    thread.start()
    thread.join()
    assert other[0] is not here


def test_validate_gives_nothing_for_a_valid_file_and_lines_for_an_invalid_one():
    valid = etree.fromstring(sample("apiome/01-minimal-pain001.xml"))
    assert schemas.validate(valid, "pain.001.001.09") == []
    invalid = etree.fromstring(sample("apiome/negative/02-semantic-no-transactions.xml"))
    [message] = schemas.validate(invalid, "pain.001.001.09")
    assert message.startswith("line 10: Element 'PmtInf': Missing child element(s).")
    # Validated against the wrong version, every element is unexpected.
    assert schemas.validate(valid, "pain.001.001.03")[0].startswith("line 2: ")
