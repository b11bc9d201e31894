"""``payledger channel-sim``: serve the channel simulator (interfaces/channel_sim) with uvicorn.

Point a channel at it with ``PAYLEDGER_CHANNEL_<NAME>_URL=http://127.0.0.1:PORT``."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

# Leave a held-back (timeout) answer at most this long when stopping.
SHUTDOWN_GRACE_S = 2


def channel_sim(
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8100,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    latency_ms: Annotated[
        int, typer.Option(min=0, max=60_000, help="Delay before each charge is answered.")
    ] = 0,
    decline_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of charges declined (not charged).")
    ] = 0.0,
    timeout_rate: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="Share of charges made, then answered only after --timeout-s."
        ),
    ] = 0.0,
    timeout_s: Annotated[
        float, typer.Option(min=0.001, max=600, help="How long a timed-out answer is held.")
    ] = 30.0,
    error_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of calls answered 503, uncharged.")
    ] = 0.0,
    drop_rate: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="Share of charges made, then the answer's connection broken."
        ),
    ] = 0.0,
    seed: Annotated[
        int | None, typer.Option(min=0, help="Seed of the fault draws (default: random, shown).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
) -> None:
    """Serve a simulated payment channel: charges (idempotent per payment id), status queries,
    daily statements (CSV, camt.053), and injected faults. The deterministic sandbox triggers
    (card numbers, wallet payer ids, IBAN suffixes) apply too. Knobs can be changed while it
    runs: PUT /_sim/config."""
    import uvicorn

    from interfaces.channel_sim import SimConfig, create_app

    config = SimConfig(
        latency_ms=latency_ms, decline_rate=decline_rate, timeout_rate=timeout_rate,
        timeout_s=timeout_s, error_rate=error_rate, drop_rate=drop_rate, seed=seed,
    )  # fmt: skip
    app = create_app(config)
    sys.stdout.write(
        f"payledger channel-sim: serving on http://{host}:{port} "
        f"(seed {app.state.knobs.config.seed})\n"
    )
    sys.stdout.flush()
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,  # a card number never reaches a log; the path is all it would show
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )
