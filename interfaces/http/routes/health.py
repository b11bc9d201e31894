"""Liveness and readiness probes."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request

from application.committer import CommitterStopped
from application.store import StoreConfigError
from interfaces.http.deps import service
from interfaces.http.routes._responses import problems
from interfaces.http.schemas import HealthOut, ReadyOut

router = APIRouter(tags=["health"])


class ProjectionsStopped(CommitterStopped):
    """The in-process follower died: the views no longer follow the log."""


log = logging.getLogger("payledger.http")


@router.get("/healthz", summary="The process is up")
async def healthz() -> HealthOut:
    return HealthOut(status="ok")


@router.get(
    "/readyz", summary="The database answers and commands can be saved", responses=problems(503)
)
def readyz(request: Request) -> ReadyOut:
    svc = service(request)
    if not svc.committer.is_alive():
        raise CommitterStopped("the committer is not running: commands cannot be saved")
    follower = request.app.state.read.follower
    if follower is not None and not follower.is_alive():
        raise ProjectionsStopped("the projections are not running: queries would go stale")
    try:
        svc.app.recorder.max_notification_id()
    except Exception as e:  # whatever the cause, a store that cannot answer is not ready
        log.warning("readiness check failed: %s", type(e).__name__)
        raise StoreConfigError("the database did not answer") from e
    return ReadyOut(status="ready", store=svc.settings.store.kind)
