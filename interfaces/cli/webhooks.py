"""``payledger webhooks list|deliveries|deliver``: webhook endpoints and their deliveries.

``deliver`` sends the notifications that are due (``--follow``: keeps doing so; a process of its
own beside API workers started with ``PAYLEDGER_WEBHOOK_DELIVERY=off``). Only one deliverer per
store works at a time; another one started meanwhile stands by.
"""

from __future__ import annotations

import signal
from typing import Annotated, Any
from uuid import UUID

import typer

from application.webhooks import EndpointInfo, WebhookSettings
from domain.errors import ValidationError
from interfaces.cli import output
from interfaces.cli.principal import cli_principal
from interfaces.cli.runtime import load_settings, service
from interfaces.cli.views import read_side
from projections.db import from_us
from projections.webhook_delivery import Deliverer
from projections.webhooks import STATUSES, DeliveryLog, DeliveryRecord

app = typer.Typer(help="Webhook endpoints, their delivery log, and the deliverer.")
app.info.no_args_is_help = True

Json = Annotated[bool, typer.Option("--json", help="Print plain JSON on stdout.")]


def _iso(us: int | None) -> str | None:
    at = from_us(us)
    return None if at is None else at.isoformat()


def endpoint_json(info: EndpointInfo) -> dict[str, Any]:
    return {
        "id": str(info.id),
        "url": info.url,
        "events": info.events,
        "description": info.description,
        "status": info.status,
        "signing_secrets": info.signing_secrets,
        "created_at": info.created_at.isoformat(),
    }


def delivery_json(d: DeliveryRecord) -> dict[str, Any]:
    return {
        "id": d.event_id,
        "type": d.type,
        "entity_id": d.entity_id,
        "sequence": d.sequence,
        "created_at": _iso(d.created_us),
        "status": d.status,
        "attempt_count": d.attempts,
        "next_attempt_at": _iso(d.next_attempt_us) if d.status == "pending" else None,
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "attempts": [
            {"attempt": a.attempt, "at": _iso(a.at_us), "status_code": a.status_code,
             "error": a.error, "next_retry_at": _iso(a.next_retry_us)}
            for a in d.attempt_log
        ],
    }  # fmt: skip


@app.command("list")
def list_endpoints(as_json: Json = False) -> None:
    """The tenant's endpoints (``payledger --tenant T webhooks list``); never a secret."""
    with service() as svc:
        endpoints = svc.webhooks.list(cli_principal())
    rows = [endpoint_json(e) for e in endpoints]
    if as_json:
        output.print_json(rows)
        return
    for row in rows:
        typer.echo(f"{row['id']}  {row['status']:<8}  {row['url']}  {','.join(row['events'])}")
    output.note(f"{len(rows)} endpoint(s)")


@app.command("deliveries")
def deliveries(
    endpoint_id: Annotated[UUID, typer.Argument(help="Endpoint id.", show_default=False)],
    status: Annotated[str | None, typer.Option(help=f"Only these: {', '.join(STATUSES)}.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
    as_json: Json = False,
) -> None:
    """An endpoint's delivery log, newest first, with every attempt."""
    if status is not None and status not in STATUSES:
        raise ValidationError.single("status", f"must be one of {', '.join(STATUSES)}")
    principal = cli_principal()
    with service() as svc:
        svc.webhooks.get(endpoint_id, principal)  # not found: exit 3
    with read_side(catch_up=False) as read:
        found = DeliveryLog(read.model.db).deliveries(
            endpoint_id, principal.tenant, status=status, limit=limit
        )
    rows = [delivery_json(d) for d in found]
    if as_json:
        output.print_json(rows)
        return
    for row in rows:
        last = row["last_status_code"] or row["last_error"] or "-"
        typer.echo(
            f"{row['created_at']}  {row['id']}  {row['type']:<18}  seq {row['sequence']:<3}  "
            f"{row['status']:<9}  attempts {row['attempt_count']}  last {last}"
        )
    output.note(f"{len(rows)} deliveries")


@app.command("deliver")
def deliver(
    follow: Annotated[bool, typer.Option("--follow", help="Keep delivering.")] = False,
) -> None:
    """Send the notifications that are due now; with --follow keep doing so (SIGTERM/SIGINT
    stop it). Uses PAYLEDGER_WEBHOOK_* (time-outs, retries) and PAYLEDGER_SECRET_KEY (to open
    the signing secrets)."""
    settings = load_settings()
    hooks = WebhookSettings()
    with read_side(catch_up=False):  # the tables exist (created if allowed)
        pass
    deliverer = Deliverer(settings.store, settings.secret_key, hooks)
    try:
        if not follow:
            if not deliverer.lock.try_acquire():
                output.note("another deliverer is working on this store: nothing done")
                return
            attempts = deliverer.drain()
            output.note(f"{attempts} delivery attempt(s) made")
            return
        stop = deliverer.stop_event
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        output.note("delivering webhooks (Ctrl-C to stop)")
        deliverer.run_forever()
    finally:
        deliverer.close()
