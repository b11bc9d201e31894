"""Official XSDs shipped inside a package's ``xsd/`` folder, pinned by SHA-256.

A schema's bytes are checked against the pinned hash when first read (a changed file is a
packaging fault, never silently accepted), then compiled with lxml (no DTDs, entities or
network). A compiled ``XMLSchema`` keeps its error log on the object, so each thread compiles
its own copy.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from importlib import resources

from lxml import etree


class SchemaIntegrityError(RuntimeError):
    """A shipped XSD is missing or differs from the pinned hash: the installation is broken."""


def shipped_bytes(package: str, name: str, expected_sha256: str) -> bytes:
    """``<package>/xsd/<name>.xsd``, after checking it against ``expected_sha256``."""
    data = (resources.files(package) / "xsd" / f"{name}.xsd").read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise SchemaIntegrityError(
            f"xsd/{name}.xsd has SHA-256 {actual}, expected {expected_sha256}"
        )
    return data


_local = threading.local()


def compiled(name: str, load: Callable[[str], bytes]) -> etree.XMLSchema:
    """Schema ``name`` compiled from ``load(name)``, once per thread."""
    cache: dict[str, etree.XMLSchema] | None = getattr(_local, "schemas", None)
    if cache is None:
        cache = _local.schemas = {}
    schema = cache.get(name)
    if schema is None:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
        schema = cache[name] = etree.XMLSchema(etree.fromstring(load(name), parser))
    return schema
