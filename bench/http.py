"""A lean HTTP/1.1 client for the load generator: asyncio protocol + httptools parser.

The load generator shares two cores with the service it measures, so every millisecond of
client CPU is a millisecond the service does not get. A general-purpose client (httpx)
costs about a millisecond per request in Python; this one builds the request bytes by hand
and parses the answer with httptools (the C parser uvicorn uses, already installed), which
is several times cheaper. It speaks only what the benchmark needs: keep-alive connections
to one host, JSON bodies, Content-Length answers.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httptools

# uvicorn closes a keep-alive connection after 5 s idle; never reuse one idle that long.
_IDLE_REUSE_LIMIT = 4.0


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self.last_used = time.monotonic()
        self.received_any = False
        self._body: list[bytes] = []
        self._headers: dict[str, str] = {}

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(ConnectionError(f"bad HTTP answer: {error}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError("connection closed by the server"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        response = Response(self.parser.get_status_code(), b"".join(self._body), self._headers)
        if not self.parser.should_keep_alive():
            self.closed = True
            if self.transport is not None:
                self.transport.close()
        self._body, self._headers = [], {}
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def _fail(self, error: Exception) -> None:
        self.closed = True
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    async def send(self, data: bytes) -> Response:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.received_any = False
        self.transport.write(data)
        try:
            return await self.waiter
        finally:
            self.last_used = time.monotonic()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class HttpClient:
    """Keep-alive connections to one base URL; one request per connection at a time.

    An open-loop generator may have hundreds of requests in flight: the pool opens a new
    connection whenever no idle one is free, up to `max_connections`, beyond which requests
    wait for a connection (and that wait counts in their latency).
    """

    def __init__(self, base_url: str, *, max_connections: int = 2000, timeout: float = 30.0):
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self._host_header = f"{self.host}:{self.port}"
        self._idle: list[_Connection] = []
        self._open = 0
        self._slots = asyncio.Semaphore(max_connections)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(_Connection, self.host, self.port)
        self._open += 1
        return connection

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and now - connection.last_used < _IDLE_REUSE_LIMIT:
                return connection
            connection.close()
            self._open -= 1
        return None

    def _encode(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str] | None
    ) -> bytes:
        lines = [f"{method} {self.prefix}{path} HTTP/1.1", f"Host: {self._host_header}"]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if body is not None:
            lines.append("Content-Type: application/json")
            lines.append(f"Content-Length: {len(body)}")
        elif method in ("POST", "PUT", "PATCH", "DELETE"):
            lines.append("Content-Length: 0")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        body = None if json_body is None else json.dumps(json_body).encode()
        data = self._encode(method, path, body, headers)
        async with self._slots:
            return await asyncio.wait_for(self._exchange(data), self.timeout)

    async def _exchange(self, data: bytes) -> Response:
        connection = self._take_idle()
        reused = connection is not None
        if connection is None:
            connection = await self._connect()
        try:
            response = await connection.send(data)
        except ConnectionError:
            self._open -= 1
            connection.close()
            # The server closed an idle connection just as we wrote to it: the request
            # never reached the application, so one retry on a fresh connection is safe.
            if not (reused and not connection.received_any):
                raise
            connection = await self._connect()
            try:
                response = await connection.send(data)
            except BaseException:
                self._open -= 1
                connection.close()
                raise
        except BaseException:  # timeout or cancellation: the connection is unusable
            self._open -= 1
            connection.close()
            raise
        if connection.closed:
            self._open -= 1
        else:
            self._idle.append(connection)
        return response

    async def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
        self._open = 0
