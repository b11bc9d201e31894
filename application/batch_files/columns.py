"""Values of many XML elements at once: for each field, the elements at one path below each of
many owners (the ``CdtTrfTxInf``s of a pain.001), found with lxml's C iterator instead of one
lookup per owner, which is what keeps 100,000 transactions to about a second.

Each element with the field's leaf tag is tied to its owner by walking up the path's length. The
schema decides how much checking that needs (see ``Field``); ``test_pain001_paths.py`` proves the
pain.001 fields' flags against the shipped XSDs.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree


@dataclass(frozen=True, slots=True)
class Field:
    """A value at ``path`` (local names) below its owner.

    ``texts`` finds the leaf tag anywhere under its scope and ties each element to its owner;
    how much that needs checking is the schema's to say:

    - ``sole``: the leaf occurs nowhere else in the message, at most once per owner; when there
      are as many as owners they are the owners' own, in order.
    - ``check_top``: the same leaf at the same depth can sit under another child of the owner
      (``UltmtCdtr/Nm`` beside ``Cdtr/Nm``), so that child's tag is checked; below the right
      child, the path must be the only one.
    - neither: the path is the only one of its depth that ends in that leaf.
    """

    path: tuple[str, ...]
    sole: bool = False
    check_top: bool = False
    multiple: bool = False  # may repeat within one owner; the values are joined by a space


def elements(
    scope: etree._Element, owners: dict[etree._Element, int], field: Field, namespace: str
) -> list[etree._Element | None]:
    """For each owner (by index), the element at ``field.path`` below it (the last if several)."""
    indexes, matches = _locate(scope, owners, field, namespace)
    if indexes is None:
        return list(matches)
    found: list[etree._Element | None] = [None] * len(owners)
    for index, element in zip(indexes, matches, strict=True):
        found[index] = element
    return found


def texts(
    scope: etree._Element, owners: dict[etree._Element, int], field: Field, namespace: str
) -> list[str | None]:
    """For each owner (by index), the text at ``field.path`` (repeats joined by a space)."""
    indexes, matches = _locate(scope, owners, field, namespace)
    if indexes is None:
        return [element.text or "" for element in matches]
    values: list[str | None] = [None] * len(owners)
    for index, element in zip(indexes, matches, strict=True):
        text = element.text or ""
        previous = values[index]
        values[index] = text if previous is None or not field.multiple else f"{previous} {text}"
    return values


def _locate(
    scope: etree._Element, owners: dict[etree._Element, int], field: Field, namespace: str
) -> tuple[list[int] | None, list[etree._Element]]:
    """Every element at ``field.path`` below an owner, in file order, and each one's owner
    index (``None``: exactly one per owner, in the owners' order)."""
    found = list(scope.iter(f"{{{namespace}}}{field.path[-1]}"))
    if field.sole and not field.multiple and len(found) == len(owners):
        return None, found
    top_tag = f"{{{namespace}}}{field.path[0]}"
    steps = range(len(field.path) - 1)
    get = owners.get
    indexes: list[int] = []
    matches: list[etree._Element] = []
    for element in found:
        node: etree._Element | None = element
        for _ in steps:
            node = None if node is None else node.getparent()
        if node is None or (field.check_top and node.tag != top_tag):
            continue
        owner = node.getparent()
        index = None if owner is None else get(owner)
        if index is not None:
            indexes.append(index)
            matches.append(element)
    return indexes, matches
