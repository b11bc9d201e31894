"""For receivers of Payledger webhooks: ``verify`` checks a notification's signature.

from interfaces.webhooks import verify, WebhookVerificationError
"""

from interfaces.webhooks.verify import (
    InvalidPayload,
    MalformedSignatureHeader,
    SignatureMismatch,
    TimestampOutOfTolerance,
    WebhookVerificationError,
    verify,
)

__all__ = [
    "InvalidPayload",
    "MalformedSignatureHeader",
    "SignatureMismatch",
    "TimestampOutOfTolerance",
    "WebhookVerificationError",
    "verify",
]
