"""Name-based ids are exactly ``uuid.uuid5``: every stored id derived from a natural key
(idempotency keys, batch items, chunks, clearing accounts) must stay what it always was."""

from __future__ import annotations

import pickle
import uuid

from hypothesis import given
from hypothesis import strategies as st

from domain.batch_items import CHUNK_NAMESPACE, chunk_id
from domain.ids import NameIds, name_id
from domain.payments import PAYMENT_NAMESPACE, batch_item_payment_id


@given(st.uuids(), st.text())
def test_name_id_is_uuid5(namespace, name):
    made, expected = name_id(namespace, name), uuid.uuid5(namespace, name)
    assert made == expected
    assert (str(made), made.version, made.variant, hash(made)) == (
        str(expected), 5, uuid.RFC_4122, hash(expected),
    )  # fmt: skip
    assert pickle.loads(pickle.dumps(made)) == expected


@given(st.uuids(), st.text(), st.lists(st.text(), max_size=5))
def test_ids_sharing_a_prefix_are_uuid5_of_the_whole_name(namespace, prefix, suffixes):
    ids = NameIds(namespace, prefix)
    assert [ids(s) for s in suffixes] == [uuid.uuid5(namespace, prefix + s) for s in suffixes]


def test_batch_item_and_chunk_ids_are_unchanged():
    batch = uuid.UUID("2f7e0c8a-5b1d-4c9e-8f3a-6d2b1a0e9c47")
    name = f"/batches/{batch}/items/7/attempts/2"
    assert batch_item_payment_id(batch, 7, 2) == uuid.uuid5(PAYMENT_NAMESPACE, name)
    assert batch_item_payment_id(batch, 7) != batch_item_payment_id(batch, 7, 2)
    assert chunk_id(batch, 3) == uuid.uuid5(CHUNK_NAMESPACE, f"/batches/{batch}/chunks/3")
