"""JSON encoding of events with orjson, compatible with the library's stored format.

The library's ``JSONTranscoder`` encodes with the standard ``json`` module, a sixth of the
committer's time in profiles. This one encodes with orjson and sends datetimes and Decimals
through the library's registered transcodings, so what is stored is the same
(``{"_type_": "datetime_iso", "_data_": ...}``) and the library's decoder reads it back.

One difference: orjson writes a UUID as a plain string. Events keep ids as strings for that
reason (see ``domain/``); ``tests/application/test_recorders.py`` round-trips every event type.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

import orjson
from eventsourcing.persistence import DatetimeAsISO, JSONTranscoder

OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME


class OrjsonTranscoder(JSONTranscoder):
    def encode(self, obj: Any) -> bytes:
        return orjson.dumps(obj, default=self._encode_obj, option=OPTIONS)

    def _encode_obj(self, o: Any) -> dict[str, Any]:
        # Every event has datetimes: skip the registry's lookup for them (what the library's
        # DatetimeAsISO would write, when it is the registered transcoding for datetime).
        if type(o) is datetime and self._datetime_iso:
            return {"_type_": "datetime_iso", "_data_": o.isoformat()}
        return super()._encode_obj(o)

    @functools.cached_property
    def _datetime_iso(self) -> bool:
        return type(self.types.get(datetime)) is DatetimeAsISO

    def decode(self, data: bytes) -> Any:
        return self.decoder.decode(data.decode("utf8"))
