"""Admission of order placements: a bounded number in flight per API process, FIFO.

During an on-sale every `POST /orders` arrives at once. Without a bound, each one passes
the fast availability pre-check (nothing is reserved yet in the first instant) and starts a
workflow, so the losers queue behind the winners in Temporal and hear "sold out" only
seconds later. With at most `limit` placements in flight, the rest wait here briefly and run
their pre-check once earlier ones have decided: by then the section is full and they get a
400 in milliseconds, without touching Temporal. A request that cannot get a slot within
`wait_seconds` (Temporal is slow or down) gets a 503 with Retry-After instead of a hang.

The pre-check counts only committed holds, so waiting here never refuses an order that
could have had tickets: nothing is turned away for demand that is merely in flight.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import RETRY_AFTER_SECONDS, error_response

ADMISSION_WAIT_SECONDS = 20.0
BUSY = "The service is busy placing other orders. Please retry shortly."


class PlacementAdmission:
    """ASGI middleware: at most `limit` `POST /orders` run at once in this process."""

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        wait_seconds: float = ADMISSION_WAIT_SECONDS,
    ) -> None:
        self.app = app
        self.wait_seconds = wait_seconds
        self._slots = asyncio.Semaphore(limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"].rstrip("/") == "/orders"
        ):
            await self.app(scope, receive, send)
            return
        try:
            async with asyncio.timeout(self.wait_seconds):
                await self._slots.acquire()
        except TimeoutError:
            response = error_response(503, BUSY, {"Retry-After": RETRY_AFTER_SECONDS})
            await response(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self._slots.release()
