from __future__ import annotations

from collections.abc import Iterator

import pytest

from application.service import Payledger
from tests.conftest import make_settings


@pytest.fixture
def service(database_url: str) -> Iterator[Payledger]:
    with Payledger(make_settings(database_url)) as svc:
        yield svc
