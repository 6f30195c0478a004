"""Cap request bodies (413 in the contract's error shape) before anything reads them.

A pure ASGI middleware: a declared Content-Length over the cap is answered
at once without reading the body; a chunked body is counted as it arrives
and the read fails with 413 as soon as it passes the cap, so a 10 MiB body
is never held in memory.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import errors


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = errors.APIError(413, errors.BODY_TOO_LARGE.format(limit=self.max_bytes))
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0:
                    await _answer(send, errors.APIError(400, errors.BAD_BODY))
                    return
                if declared > self.max_bytes:
                    await _answer(send, too_large)
                    return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise too_large  # answered by the app's APIError handler
            return message

        await self.app(scope, limited, send)


async def _answer(send: Send, exc: errors.APIError) -> None:
    response = errors.error_response(exc.status, exc.message, exc.data)
    scope: dict[str, Any] = {"type": "http"}

    async def no_body() -> Message:
        return {"type": "http.disconnect"}

    await response(scope, no_body, send)
