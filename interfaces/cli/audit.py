"""``payledger audit verify``: check the events' tamper-evidence hash chain
(application/audit.py)."""

from __future__ import annotations

from typing import Annotated

import typer

from application.audit import MAX_REPORTED, derive_key, verify_chain
from interfaces.cli import output
from interfaces.cli.errors import EXIT_UNEXPECTED
from interfaces.cli.runtime import service

# The status ``ledger check`` gives a broken invariant: 1.
EXIT_TAMPERED = EXIT_UNEXPECTED

app = typer.Typer(help="Tamper evidence: the events' hash chain.", no_args_is_help=True)

Json = Annotated[bool, typer.Option("--json", help="Print plain JSON on stdout.")]
Until = Annotated[
    int | None,
    typer.Option(
        "--until",
        min=1,
        help="Stop at this notification id, to compare the head hash with one anchored then "
        "(chain rows without an event are then not looked for).",
    ),
]


@app.command("verify")
def verify(as_json: Json = False, until: Until = None) -> None:
    """Recompute every event's chain link; exit 1 with the first broken one if anything was
    altered, inserted or deleted. Prints the events and aggregates checked and the store's head
    hash, to anchor outside the database."""
    with service() as svc:
        report = verify_chain(svc.app, derive_key(svc.settings.secret_key), stop=until)
    if as_json:
        output.print_json(report.to_json())
    else:
        output.note(
            f"checked {report.events} events of {report.aggregates} aggregates "
            f"up to notification {report.position}"
        )
        output.note(f"head hash: {report.head_hash}")
        if report.ok:
            output.note("chain intact")
        else:
            first = report.first_broken
            assert first is not None
            output.note(f"CHAIN BROKEN: {report.broken_total} broken link(s); the first:")
            output.note(f"  {first.describe()}")
            for link in report.broken[1:10]:
                output.note(f"  then: {link.describe()}")
            if report.broken_total > 10:
                output.note(f"  ... {report.broken_total - 10} more (--json lists {MAX_REPORTED})")
    if not report.ok:
        raise typer.Exit(EXIT_TAMPERED)
