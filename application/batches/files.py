"""Which parser reads an uploaded batch file: ISO 20022 XML or CSV, by content."""

from __future__ import annotations

import hashlib

from application.batch_files.csv_format import parse_csv
from application.batch_files.model import ParsedFile, location_error
from application.batch_files.pain001 import parse_pain001

# A 100,000-item pain.001 is 60-110 MB depending on its layout (one PmtInf or one per item).
MAX_FILE_BYTES = 160 * 1024 * 1024


def parse_batch_file(data: bytes) -> ParsedFile:
    """A pain.001 (anything that starts as XML) or a CSV file with a header row."""
    if not data.strip():
        raise location_error("file", "the file is empty")
    if len(data) > MAX_FILE_BYTES:
        raise location_error("file", f"the file is larger than {MAX_FILE_BYTES} bytes")
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if head == b"<":
        return parse_pain001(data)
    return parse_csv(data)


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
