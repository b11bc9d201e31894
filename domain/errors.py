"""The domain's error hierarchy.

Each error carries a stable machine-readable ``code``; interfaces map the classes to HTTP problems
and CLI exit codes in exactly one place each. Errors say which field was wrong and why, so a client
can fix its request without reading our logs.
"""

from __future__ import annotations

from dataclasses import dataclass


class PayledgerError(Exception):
    """Base of every error the domain and application raise on purpose."""

    code = "payledger_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[object, ...]:
        # Rebuild from the attributes, not from __init__'s arguments (subclasses differ), so an
        # error can cross a process boundary (the committer process answers with it).
        return _restore, (type(self), self.args, dict(vars(self)))


def _restore(
    cls: type[PayledgerError], args: tuple[object, ...], state: dict[str, object]
) -> PayledgerError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    vars(error).update(state)
    return error


@dataclass(frozen=True)
class FieldError:
    """One offending input field: where it is (dotted path) and what is wrong with it."""

    field: str
    reason: str
    code: str = "invalid"


class ValidationError(PayledgerError):
    """Input that is malformed: it changes nothing and is never recorded."""

    code = "validation_error"

    def __init__(self, errors: list[FieldError] | FieldError, message: str | None = None) -> None:
        self.errors = [errors] if isinstance(errors, FieldError) else list(errors)
        summary = "; ".join(f"{e.field}: {e.reason}" for e in self.errors)
        super().__init__(message or summary)

    @classmethod
    def single(cls, field: str, reason: str, code: str = "invalid") -> ValidationError:
        return cls(FieldError(field, reason, code))


class InvalidAmount(ValidationError):
    code = "invalid_amount"


class UnknownCurrency(ValidationError):
    code = "unknown_currency"


class InvalidCard(ValidationError):
    code = "invalid_card"


class NotFound(PayledgerError):
    code = "not_found"


class AccountNotFound(NotFound):
    code = "account_not_found"


class PaymentNotFound(NotFound):
    code = "payment_not_found"


class Conflict(PayledgerError):
    code = "conflict"


class IdempotencyKeyReused(Conflict):
    """Same idempotency key, different request: the client has a bug; we refuse loudly."""

    code = "idempotency_key_reused"


class IllegalTransition(PayledgerError):
    """A state machine was asked to move along an edge it does not have."""

    code = "illegal_transition"


class AccountRuleViolation(PayledgerError):
    """An account-level rule refused an operation (closing a non-empty account, ...)."""

    code = "account_rule_violation"


class LedgerInvariantBroken(PayledgerError):
    """A journal entry whose legs do not sum to zero per currency: always a bug, never input."""

    code = "ledger_invariant_broken"
