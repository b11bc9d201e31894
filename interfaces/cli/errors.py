"""The one place where the CLI turns errors into exit codes and one-line messages on stderr.

Exit codes (also in ``payledger --help``):
  0 success                        4 conflict or account rule (closed account, reused key)
  1 unexpected error               5 store unavailable (database down, locked, timed out)
  2 invalid input or configuration 6 payment failed (``pay``)
  3 not found                      7 payment outcome unknown: exception (``pay``)
Tracebacks are shown only with PAYLEDGER_DEBUG=1.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

import pydantic
import typer
from pydantic_settings import SettingsError

from domain.cards import redact_pan
from domain.errors import (
    AccountRuleViolation,
    Conflict,
    IllegalTransition,
    NotFound,
    PayledgerError,
    ValidationError,
)
from domain.keys import AuthError

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_INVALID = 2
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_STORE_UNAVAILABLE = 5
EXIT_PAYMENT_FAILED = 6
EXIT_PAYMENT_EXCEPTION = 7
EXIT_REFUSED = 8  # not allowed: a bad API key, a role without the permission, a wrong code

EXIT_CODES_HELP = (
    "Exit codes: 0 ok, 1 unexpected error, 2 invalid input or configuration, 3 not found, "
    "4 conflict or account rule, 5 store unavailable, 6 payment failed (batches: finished "
    "with failures), 7 payment outcome unknown (batches: failed), 8 not allowed (API key, "
    "role, second-factor code)."
)

# API field names as the CLI user typed them.
OPTION_OF_FIELD = {
    "Idempotency-Key": "--key",
    "payer": "--from/--card/--wallet-payer",
    "payee": "--to/--iban",
    "payment_method.number": "--card",
    "payment_method.exp_month": "--exp",
    "payment_method.exp_year": "--exp",
    "payment_method.cvc": "--cvc",
    "payment_method.payer_id": "--wallet-payer",
    "payment_method.type": "--channel",
    "beneficiary.iban": "--iban",
    "beneficiary.name": "--name",
    "beneficiary.bic": "--bic",
}


class CliError(Exception):
    """An error the CLI itself detects, with its exit code; the message is one line."""

    exit_code = EXIT_UNEXPECTED


class ConfigError(CliError):
    """Bad settings or an unusable database URL: nothing can start."""

    exit_code = EXIT_INVALID


class StoreUnavailable(CliError):
    exit_code = EXIT_STORE_UNAVAILABLE


def _store_errors() -> tuple[type[BaseException], ...]:
    """Driver and library errors that mean the database is not answering as it should."""
    import sqlite3

    from eventsourcing.persistence import InterfaceError, OperationalError

    errors: list[type[BaseException]] = [
        OperationalError,
        InterfaceError,
        sqlite3.OperationalError,
        TimeoutError,
    ]
    try:
        import psycopg

        errors += [psycopg.OperationalError, psycopg.InterfaceError]
    except ImportError:  # PostgreSQL support is optional
        pass
    return tuple(errors)


def settings_message(error: Exception) -> str:
    """Settings errors name the environment variable that holds the bad value."""
    if isinstance(error, pydantic.ValidationError):
        parts = []
        for e in error.errors():
            name = "PAYLEDGER_" + str(e["loc"][0]).upper() if e["loc"] else "settings"
            parts.append(f"{name}: {e['msg']}")
        return "invalid configuration: " + "; ".join(parts)
    return f"invalid configuration: {error}"


def field_label(field: str) -> str:
    option = OPTION_OF_FIELD.get(field)
    return f"{field} ({option})" if option else field


def classify(error: BaseException) -> tuple[int, str]:
    """Exit code and one-line message for any error a command lets escape."""
    if isinstance(error, CliError):
        return error.exit_code, str(error)
    if isinstance(error, ValidationError):
        reasons = "; ".join(f"{field_label(e.field)}: {e.reason}" for e in error.errors)
        return EXIT_INVALID, f"invalid input: {reasons}"
    if isinstance(error, pydantic.ValidationError | SettingsError):
        return EXIT_INVALID, settings_message(error)  # type: ignore[arg-type]
    if isinstance(error, NotFound):
        return EXIT_NOT_FOUND, error.message
    if isinstance(error, AuthError):
        return EXIT_REFUSED, f"{error.code}: {error.message}"
    if isinstance(error, Conflict | AccountRuleViolation | IllegalTransition):
        return EXIT_CONFLICT, f"{error.code}: {error.message}"
    if isinstance(error, _store_errors()):
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return EXIT_STORE_UNAVAILABLE, f"store unavailable: {reason or type(error).__name__}"
    if isinstance(error, PayledgerError):
        return EXIT_UNEXPECTED, f"{error.code}: {error.message}"
    return EXIT_UNEXPECTED, f"unexpected error: {type(error).__name__}: {error}"


def one_line(text: str) -> str:
    # Never let a card number slip out through an error message, and never split the line.
    return " ".join(redact_pan(text).split())


def report(error: BaseException) -> int:
    """Print ``error: ...`` on stderr (a traceback too under PAYLEDGER_DEBUG=1); return the code."""
    code, message = classify(error)
    if os.environ.get("PAYLEDGER_DEBUG") == "1":
        traceback.print_exception(error, file=sys.stderr)
    sys.stderr.write(f"error: {one_line(message)}\n")
    sys.stderr.flush()
    return code


class ErrorMappingGroup:
    """Mixin for the root click group: every command's errors pass through :func:`report`."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)  # type: ignore[misc]
        except (typer.Exit, typer.Abort, typer.TyperException):  # usage errors, --help, exits
            raise
        except KeyboardInterrupt:
            sys.stderr.write("error: interrupted\n")
            raise typer.Exit(130) from None
        except Exception as error:
            raise typer.Exit(report(error)) from None
