"""How a CLI command reaches the application: in-process, on the database the server uses."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pydantic
from pydantic_settings import SettingsError

from application.encryption import EncryptionKeyError
from application.service import Payledger
from application.settings import Settings
from application.store import StoreConfig, StoreConfigError
from interfaces.cli.errors import ConfigError, StoreUnavailable, settings_message
from projections.read_side import ReadSide

T = TypeVar("T")


def load_settings() -> Settings:
    """Settings from PAYLEDGER_* and the store they name; a bad value is a ConfigError."""
    try:
        settings = Settings()
        settings.store  # noqa: B018 -- parse the URL now: an unknown scheme is a config error
    except (pydantic.ValidationError, SettingsError) as e:
        raise ConfigError(settings_message(e)) from e
    except StoreConfigError as e:
        raise ConfigError(str(e)) from e
    return settings


def create_tables_allowed() -> bool:
    """Workers started by ``serve --workers N`` (and operators) can turn DDL off."""
    return os.environ.get("PAYLEDGER_CREATE_TABLES", "y").strip().lower() not in (
        "n",
        "no",
        "0",
        "false",
    )


def check_store(store: StoreConfig) -> None:
    try:
        store.check_reachable()
    except StoreConfigError as e:
        raise StoreUnavailable(str(e)) from e


def init_store(settings: Settings) -> StoreConfig:
    """Create the schema and the event store's tables once, from this one process."""
    check_store(settings.store)
    try:
        with Payledger(settings, create_tables=True) as svc:
            ReadSide(svc.app, settings.store, create_tables=True).close()  # the views' tables
    except EncryptionKeyError as e:
        raise ConfigError(str(e)) from e
    except StoreConfigError as e:
        raise StoreUnavailable(str(e)) from e
    return settings.store


@contextmanager
def service() -> Iterator[Payledger]:
    settings = load_settings()
    try:
        svc = Payledger(settings, create_tables=create_tables_allowed())
    except EncryptionKeyError as e:  # the keys do not fit the store: a configuration problem
        raise ConfigError(str(e)) from e
    except StoreConfigError as e:
        raise StoreUnavailable(str(e)) from e
    with svc:
        yield svc


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)
