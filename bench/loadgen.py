"""A small HTTP/1.1 load generator (keep-alive, asyncio), run as its own process.

Open loop (``--rate``): request *i* is due at ``start + i / rate`` whatever happened before, and its latency is
measured from that due time, so a stalled server shows up in the percentiles (no coordinated omission).
Closed loop (``--closed N``): N connections each send their next request as soon as the last one answered; the
result is the throughput ceiling.

Requests come from ``--paths-file`` (GET, one path a line) or ``--requests-file`` (JSON lines of
``{"method", "path", "body"}``), used in order and cycled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes = b""
    headers: tuple[str, ...] = ()  # "Name: value" lines, e.g. a bearer token

    def wire(self, host: str) -> bytes:
        head = f"{self.method} {self.path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/fhir+json\r\n"
        head += "".join(f"{line}\r\n" for line in self.headers)
        if self.body:
            head += f"Content-Type: application/fhir+json\r\nContent-Length: {len(self.body)}\r\n"
        return head.encode() + b"\r\n" + self.body


async def _send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes) -> int:
    writer.write(payload)
    await writer.drain()
    status_line = await reader.readline()
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return int(status_line.split()[1])


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _send_or_reconnect(connection: Connection, host: str, port: int, request: Request) -> tuple[bool, Connection]:
    """(ok, the connection to use next): a failed or non-2xx answer counts as an error; a broken connection is
    replaced."""
    reader, writer = connection
    try:
        return await _send(reader, writer, request.wire(f"{host}:{port}")) < 300, connection
    except (ConnectionError, asyncio.IncompleteReadError):
        return False, await asyncio.open_connection(host, port)


def percentiles(latencies: list[float]) -> dict[str, float]:
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")

    return {"p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": latencies[-1] * 1000 if latencies else float("nan")}


async def open_loop(
    host: str, port: int, requests: list[Request], rate: float, duration: float, connections: int
) -> dict:
    pool: asyncio.Queue = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection(host, port))
    latencies: list[float] = []
    by_second: dict[int, list[float]] = {}
    errors = 0
    total = int(rate * duration)
    start = time.perf_counter() + 0.05

    async def one(due: float, request: Request) -> None:
        nonlocal errors
        ok, connection = await _send_or_reconnect(await pool.get(), host, port, request)
        pool.put_nowait(connection)
        errors += not ok
        latencies.append(time.perf_counter() - due)
        by_second.setdefault(int(due - start), []).append(latencies[-1])

    tasks = []
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due, requests[i % len(requests)])))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    return {
        "requests": len(latencies),
        "errors": errors,
        "achieved_rate": len(latencies) / elapsed,
        **percentiles(latencies),
        # where in the run the tail happened: a stall shows as one or two slow seconds, overload as a slow end
        "by_second": [
            {"second": second, "requests": len(slice_), **percentiles(slice_)}
            for second, slice_ in sorted(by_second.items())
        ],
    }


async def closed_loop(host: str, port: int, requests: list[Request], connections: int) -> dict:
    queue: asyncio.Queue = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)
    latencies: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        connection = await asyncio.open_connection(host, port)
        while not queue.empty():
            request = queue.get_nowait()
            started = time.perf_counter()
            ok, connection = await _send_or_reconnect(connection, host, port, request)
            errors += not ok
            latencies.append(time.perf_counter() - started)
        connection[1].close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - start
    return {
        "requests": len(latencies),
        "errors": errors,
        "achieved_rate": len(latencies) / elapsed,
        "seconds": elapsed,
        **percentiles(latencies),
    }


def load_requests(args: argparse.Namespace) -> list[Request]:
    headers = tuple(args.header or ())
    if args.requests_file:
        with open(args.requests_file) as handle:
            items = [json.loads(line) for line in handle if line.strip()]
        return [
            Request(
                i.get("method", "GET"), i["path"], json.dumps(i["body"]).encode() if i.get("body") else b"", headers
            )
            for i in items
        ]
    with open(args.paths_file) as handle:
        return [Request("GET", line.strip(), headers=headers) for line in handle if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--paths-file", help="one GET path per line")
    source.add_argument("--requests-file", help='JSON lines: {"method", "path", "body"}')
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--rate", type=float, help="open loop: requests per second")
    mode.add_argument("--closed", type=int, help="closed loop: this many connections, every request once")
    parser.add_argument("--duration", type=float, default=10, help="open loop: seconds")
    parser.add_argument("--connections", type=int, default=64, help="open loop: connection pool size")
    parser.add_argument("--header", action="append", help='a request header, "Name: value" (repeatable)')
    args = parser.parse_args()
    requests = load_requests(args)
    if args.closed:
        result = asyncio.run(closed_loop(args.host, args.port, requests, args.closed))
    else:
        result = asyncio.run(open_loop(args.host, args.port, requests, args.rate, args.duration, args.connections))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
