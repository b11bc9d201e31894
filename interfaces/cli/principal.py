"""Who the CLI acts as: ``cli:<os user>``, for the tenant given by ``payledger --tenant T``
(or ``PAYLEDGER_TENANT``; ``default`` otherwise).

The CLI runs the application in-process with the database's credentials, so it is not asked for
an API key: it is trusted as whoever can read the database is. Every event it causes still
records which OS user acted (``actor: "cli:alice"``), and its idempotency keys are its own.
"""

from __future__ import annotations

import asyncio
import getpass
from typing import TYPE_CHECKING

from application.commands import Principal
from application.key_directory import KeyDirectory
from application.keys import TENANT_PATTERN
from domain.errors import ValidationError

if TYPE_CHECKING:
    from application.service import Payledger

DEFAULT_TENANT = "default"
_tenant = DEFAULT_TENANT


def use_tenant(tenant: str) -> None:
    global _tenant
    if not TENANT_PATTERN.fullmatch(tenant):
        raise ValidationError.single("tenant", "must be 1-63 characters: a-z, 0-9, '_' or '-'")
    _tenant = tenant


def os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no USER/LOGNAME and no passwd entry (some containers)
        return "unknown"


def cli_principal(tenant: str | None = None) -> Principal:
    return Principal(tenant=tenant or _tenant, client=f"cli:{os_user()}")


def acting_as(svc: Payledger, api_key: str | None) -> Principal:
    """An API key's principal when one is given (``--api-key``: an approval needs an approver
    with a second factor, a correction a second person), else ``cli:<os user>``."""
    if not api_key:
        return cli_principal()
    directory = KeyDirectory(svc.keys, ttl_s=0, production=True)
    return asyncio.run(directory.principal(f"Bearer {api_key}"))
