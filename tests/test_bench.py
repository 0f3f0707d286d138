"""The benchmark's own machinery: open-loop timing, percentiles and its HTTP client.

The benchmark itself is not part of the suite (it runs for minutes); these checks keep its
measuring honest: latency counts from the intended send time, so a slow service cannot
hide its queue, and the lean HTTP client reuses connections and survives a server that
closes an idle one.
"""

from __future__ import annotations

import asyncio
import json

from bench.http import HttpClient
from bench.loadgen import closed_loop, open_loop, percentile


def test_percentile_is_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([3.0], 99) == 3.0


async def test_open_loop_counts_queueing_from_the_intended_time() -> None:
    """A service that serves one request at a time, 50 ms each, offered 40/s for 0.5 s:
    later requests wait behind earlier ones, and their latency must show that wait."""
    lock = asyncio.Lock()

    async def one_at_a_time(index: int) -> tuple[bool, str]:
        async with lock:
            await asyncio.sleep(0.05)
        return True, "ok"

    stats = await open_loop(40, 0.5, one_at_a_time, label="test")
    latencies = sorted(sample.latency for sample in stats.samples)
    assert len(latencies) == 20
    assert latencies[0] < 0.1
    # The 20th is due at 0.475 s but served last, at about 20 x 50 ms = 1 s.
    assert latencies[-1] > 0.4
    assert stats.achieved_rate < 25  # 20 answers in about a second, not 40/s


async def test_closed_loop_waits_for_each_answer() -> None:
    async def slow(index: int) -> tuple[bool, str]:
        await asyncio.sleep(0.05)
        return index % 2 == 0, "even" if index % 2 == 0 else "odd"

    stats = await closed_loop(2, 0.3, slow, label="test")
    assert 8 <= len(stats.samples) <= 14
    assert stats.errors == sum(sample.label == "odd" for sample in stats.samples)


async def test_http_client_keeps_connections_and_survives_a_closed_one() -> None:
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        served = 0
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.decode().split("\r\n"):
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":")[1])
            body = await reader.readexactly(length) if length else b""
            answer = json.dumps({"echo": json.loads(body) if body else None}).encode()
            writer.write(
                b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(answer)}\r\n\r\n".encode()
                + answer
            )
            await writer.drain()
            served += 1
            if served == 2:  # like uvicorn's keep-alive timeout: close an idle connection
                writer.close()
                return

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = HttpClient(f"http://127.0.0.1:{port}")
    try:
        for n in range(5):
            response = await client.request("POST", "/orders", json_body={"n": n})
            assert response.status == 201
            assert response.json() == {"echo": {"n": n}}
        assert connections == 3  # two answers per connection, then a fresh one
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
