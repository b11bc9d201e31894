"""Commands: frozen dataclasses built by an interface from its input and handed to one handler.

They carry raw client values (amounts as decimal strings); handlers validate them into drafts.
Sensitive values (card number, CVC) are excluded from ``repr`` so they never reach a log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from uuid import UUID


@dataclass(frozen=True)
class Principal:
    """Who is acting: the tenant they act for and the client id their idempotency keys belong
    to (also the actor every event they cause records).

    * an API key: ``key:<key id>``, with the key's ``role`` (application/keys.py);
    * the CLI: ``cli:<os user>``, acting for the tenant it is told (interfaces/cli/runtime.py);
    * ``anonymous`` in the default tenant: the development sandbox, while no key exists.
    """

    tenant: str = "default"
    client: str = "anonymous"
    role: str | None = None  # None: not an API key (the sandbox, the CLI)
    key_id: UUID | None = None
    second_factor: bool = False  # the key has TOTP enrolled (step-up is possible)

    @property
    def actor(self) -> str:
        return self.client


ANONYMOUS = Principal()


@dataclass(frozen=True)
class OpenAccount:
    owner: str
    currency: str
    kind: str = "customer"
    overdraft_limit: str = "0"
    idempotency_key: str | None = None
    iban: str | None = None  # the bank account it stands for (a batch's funding account)


@dataclass(frozen=True)
class MakeDeposit:
    account_id: UUID
    amount: str
    idempotency_key: str
    currency: str | None = None


@dataclass(frozen=True)
class CloseAccount:
    account_id: UUID


@dataclass(frozen=True)
class CardMethod:
    number: str = field(repr=False)
    exp_month: int
    exp_year: int
    cvc: str = field(repr=False)
    type: str = "card"


@dataclass(frozen=True)
class WalletMethod:
    type: str  # "alipay" | "wechat_pay"
    payer_id: str


@dataclass(frozen=True)
class BankBeneficiary:
    iban: str
    name: str
    bic: str | None = None
    type: str = "bank_account"


PaymentMethod = CardMethod | WalletMethod


@dataclass(frozen=True)
class SubmitPayment:
    amount: str
    currency: str
    channel: str
    idempotency_key: str
    payer_account_id: UUID | None = None
    payment_method: PaymentMethod | None = None
    payee_account_id: UUID | None = None
    beneficiary: BankBeneficiary | None = None
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
