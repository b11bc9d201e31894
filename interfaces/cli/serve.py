"""``payledger serve``: check the configuration and the database, create the tables once, then
hand over to uvicorn (one process, or several workers that must not run DDL themselves)."""

from __future__ import annotations

import os
import sys
from enum import StrEnum

from application.logs import logging_config
from interfaces.cli.errors import ConfigError, StoreUnavailable
from interfaces.cli.keys import require_keys_in_production
from interfaces.cli.runtime import init_store, load_settings

APP_FACTORY = "interfaces.http.app:create_app"


class LogLevel(StrEnum):
    critical = "critical"
    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"
    trace = "trace"


def serve(host: str, port: int, workers: int, log_level: str, *, access_log: bool = False) -> None:
    settings = load_settings()
    try:
        store = init_store(settings)
    except StoreUnavailable as e:
        # At start-up an unreachable database is a configuration problem: refuse to start.
        raise ConfigError(str(e)) from e
    if store.is_memory:
        # The server's views, committer and background workers each open the database: an
        # in-memory one would be a different, empty database for each of them.
        raise ConfigError(
            "PAYLEDGER_DATABASE_URL: a server cannot use an in-memory SQLite database; "
            "write sqlite:///path/to/file.sqlite3"
        )
    require_keys_in_production(settings)  # never serve production without any key
    if workers > 1:
        # Many processes creating tables at once fails ("tuple concurrently updated"); done above.
        os.environ["PAYLEDGER_CREATE_TABLES"] = "n"
    if "PAYLEDGER_COMMITTER" not in os.environ:
        # A server decides and saves in a process of its own: HTTP and the ledger each get a
        # core and a GIL (~1.6x the payments/s of a committer thread, docs/performance.md).
        os.environ["PAYLEDGER_COMMITTER"] = "process"
    if "PAYLEDGER_PROJECTIONS" not in os.environ:
        # And the views are kept by a process of their own, not a thread of the API process
        # (a 100,000-item batch: 1.35x faster end to end, docs/performance.md).
        os.environ["PAYLEDGER_PROJECTIONS"] = "process"
    sys.stdout.write(
        f"payledger: store {store.describe()}\n"
        f"payledger: serving on http://{host}:{port} with {workers} worker(s)\n"
    )
    sys.stdout.flush()
    if access_log:
        # Our request log (interfaces/http/security.py), not uvicorn's: it never writes the
        # query string, and it has the request id, duration and principal.
        os.environ["PAYLEDGER_ACCESS_LOG"] = "true"
    import uvicorn  # after the checks: a bad configuration fails before anything heavy loads

    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,
        # Text or JSON lines (PAYLEDGER_LOG_FORMAT), redacted (application/logs.py).
        log_config=logging_config(settings.log_format, log_level),
    )
