from __future__ import annotations

from collections.abc import Iterator

import pytest

from application.service import Payledger
from projections.read_side import ReadSide
from tests.application.helpers import Driver
from tests.conftest import make_settings


@pytest.fixture
def service(database_url: str) -> Iterator[Payledger]:
    with Payledger(make_settings(database_url)) as svc:
        yield svc


@pytest.fixture
def driver(service: Payledger) -> Driver:
    return Driver(service)


@pytest.fixture
def read(service: Payledger) -> Iterator[ReadSide]:
    """The read side without a follower: tests catch up explicitly."""
    side = ReadSide(service.app, service.settings.store)
    yield side
    side.close()
