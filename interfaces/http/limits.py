"""A cap on request bodies, answered as a problem like every other error.

Pure ASGI (no ``BaseHTTPMiddleware``). A declared ``Content-Length`` over the cap is refused
before any byte is read; a body without one (chunked) is counted as it arrives, and the route's
read fails with a 413 that the problem handlers render. (FastAPI's own ``max_body_size`` would
answer the first case in plain text, from outside the exception handlers.)
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from interfaces.http.problems import problem_response

TOO_LARGE = "Content Too Large"


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, larger: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = larger or {}  # path -> its own cap (batch files)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        cap = self.larger.get(scope["path"], self.max_bytes)
        if length is None:
            await self.app(scope, self._counting(receive, cap), send)
        elif length > cap:
            detail = f"the request body must be at most {cap} bytes"
            response = problem_response(413, TOO_LARGE, "payload_too_large", detail)
            await response(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _counting(self, receive: Receive, cap: int) -> Receive:
        received = 0

        async def receive_at_most() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise HTTPException(413, TOO_LARGE)
            return message

        return receive_at_most


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None
