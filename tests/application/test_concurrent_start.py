"""Processes that start together on one PostgreSQL schema (a server and a CLI command, two servers
sharing a database) each create what the store needs: the schema, the tables, the save function.
Unserialised, they race in PostgreSQL's catalog (a unique violation on a new schema, ``tuple
concurrently updated`` on an existing one)."""

from __future__ import annotations

import threading

import pytest

from application.service import Payledger
from tests.application.helpers import Driver
from tests.conftest import make_settings

STARTERS = 4


def start_together(url: str, projections: str) -> tuple[list[Payledger], list[BaseException]]:
    started: list[Payledger] = []
    errors: list[BaseException] = []
    gate = threading.Barrier(STARTERS)

    def start() -> None:
        gate.wait()
        try:
            started.append(Payledger(make_settings(url, projections=projections)))
        except BaseException as e:  # every failure is the finding
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(STARTERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return started, errors


@pytest.mark.postgres
@pytest.mark.parametrize("projections", ["off", "inline"])
@pytest.mark.parametrize("store", ["new", "existing"])
def test_services_starting_together_on_one_schema_all_start(
    postgres_url: str, store: str, projections: str
) -> None:
    """``inline`` adds the views' tables and the snapshots' recorder to what each creates."""
    if store == "existing":
        Payledger(make_settings(postgres_url, projections=projections)).close()
    for _round in range(3):  # the race does not lose every time: give it several chances
        started, errors = start_together(postgres_url, projections)
        try:
            assert errors == []
            assert len(started) == STARTERS
            driver = Driver(started[-1])  # and the store they made works
            payer, shop = driver.open("payer"), driver.open("shop", kind="merchant")
            driver.deposit(payer, "10.00")
            assert driver.pay("1.00", payer=payer, payee=shop).status == "succeeded"
        finally:
            for service in started:
                service.close()
