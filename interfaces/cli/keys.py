"""``payledger keys create|list|revoke|totp-qr``: API keys, with the database's credentials.

The key is printed once and stored only as a salted hash: keep it in your secret store. Roles
that approve or administer (``approver``, ``admin``) get a TOTP second factor at once: scan the
printed QR code (or ``totp_uri``) into an authenticator app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import typer

from application.keys import ROLES, CreateKey, IssuedKey, KeyInfo
from application.service import Payledger
from application.settings import Settings
from application.totp import qr_png, qr_terminal
from domain.keys import KeyNotFound
from interfaces.cli import output
from interfaces.cli.errors import ConfigError
from interfaces.cli.principal import cli_principal
from interfaces.cli.runtime import run, service

app = typer.Typer(help="API keys: create, list, revoke; second-factor QR codes.")
app.info.no_args_is_help = True

Json = Annotated[bool, typer.Option("--json", help="Print plain JSON on stdout.")]
KeyId = Annotated[UUID, typer.Argument(help="Key id (UUID).", show_default=False)]


def info_json(info: KeyInfo) -> dict[str, Any]:
    return {
        "id": str(info.id),
        "tenant": info.tenant,
        "role": info.role,
        "name": info.name,
        "second_factor": info.second_factor,
        "revoked": info.revoked,
        "created_at": info.created_at.isoformat(),
        "revoked_at": info.revoked_at.isoformat() if info.revoked_at else None,
    }


def issued_json(issued: IssuedKey) -> dict[str, Any]:
    info = issued.info
    out = {"id": str(info.id), "key": issued.token, "tenant": info.tenant, "role": info.role}
    out["name"] = info.name
    if issued.totp_uri is not None:
        out["totp_uri"] = issued.totp_uri
    return out


@app.command("create")
def create(
    tenant: Annotated[str, typer.Option(help="The tenant the key acts for.", show_default=False)],
    role: Annotated[str, typer.Option(help=f"One of {', '.join(ROLES)}.", show_default=False)],
    name: Annotated[str, typer.Option(help="A label, e.g. the service that uses it.")] = "",
    totp: Annotated[
        bool, typer.Option("--totp", help="Enrol a TOTP second factor (approver, admin: always).")
    ] = False,
    as_json: Json = False,
) -> None:
    """Issue an API key and print it once (with its TOTP URI and QR code if it has one)."""
    with service() as svc:
        issued = run(svc.keys.create(CreateKey(tenant, role, name, totp), cli_principal(tenant)))
    if as_json:
        output.print_json(issued_json(issued))
        return
    info = issued.info
    output.note(f"key {info.id}: tenant {info.tenant}, role {info.role}")
    output.note("API key (shown once, keep it secret):")
    typer.echo(issued.token)
    if issued.totp_uri is not None:
        output.note("second factor: scan this into an authenticator app (shown once here):")
        typer.echo(qr_terminal(issued.totp_uri))
        typer.echo(issued.totp_uri)


@app.command("list")
def list_keys(
    tenant: Annotated[
        str | None, typer.Option(help="Only this tenant's keys.", show_default="all")
    ] = None,
    as_json: Json = False,
) -> None:
    """Every key (revoked ones too), oldest first; never a secret."""
    with service() as svc:
        keys = svc.keys.list(tenant)
    if as_json:
        output.print_json([info_json(k) for k in keys])
        return
    for k in keys:
        state = "revoked" if k.revoked else "active"
        second = "totp" if k.second_factor else "-"
        output.note(f"{k.id}  {k.tenant:<16} {k.role:<10} {state:<8} {second:<5} {k.name}")


@app.command("revoke")
def revoke(key_id: KeyId, as_json: Json = False) -> None:
    """Revoke a key: every server refuses it within PAYLEDGER_AUTH_CACHE_TTL_S (1 s)."""
    with service() as svc:
        key = svc.keys.load(key_id)
        if key is None:
            raise KeyNotFound(f"key {key_id} does not exist")
        info = run(svc.keys.revoke(key_id, cli_principal(key.tenant)))
    if as_json:
        output.print_json(info_json(info))
    else:
        output.note(f"key {info.id} revoked")


@app.command("totp-qr")
def totp_qr(
    key_id: KeyId,
    png: Annotated[
        Path | None, typer.Option(help="Write the QR code to this PNG file too.", dir_okay=False)
    ] = None,
    uri: Annotated[bool, typer.Option("--uri", help="Print the otpauth:// URI only.")] = False,
) -> None:
    """Show a key's second factor again as a QR code (terminal, and PNG with --png)."""
    with service() as svc:
        provisioning_uri = svc.keys.totp_uri(key_id)
    if png is not None:
        png.write_bytes(qr_png(provisioning_uri))
        png.chmod(0o600)
        output.note(f"wrote {png}")
    if uri:
        typer.echo(provisioning_uri)
    elif png is None:
        typer.echo(qr_terminal(provisioning_uri))


def require_keys_in_production(settings: Settings) -> None:
    """``payledger serve`` refuses to start in production while no key exists."""
    if settings.env != "production":
        return
    with Payledger(settings.model_copy(update={"committer": "thread"}), create_tables=False) as svc:
        if svc.keys.any_exist():
            return
    raise ConfigError(
        "PAYLEDGER_ENV=production and no API key exists: the API would refuse every request. "
        "Create one first: payledger keys create --tenant T --role admin"
    )
