"""A small open-loop HTTP/1.1 load generator (keep-alive, asyncio), run as its own process.

Open loop: request *i* is due at ``start + i / rate`` whatever happened before, and its latency is measured from
that due time, so a stalled server shows up in the percentiles (no coordinated omission).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, path: str) -> int:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/fhir+json\r\n\r\n".encode())
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


async def open_loop(host: str, port: int, paths: list[str], rate: float, duration: float, connections: int) -> dict:
    pool: asyncio.Queue = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection(host, port))
    latencies: list[float] = []
    errors = 0
    total = int(rate * duration)
    start = time.perf_counter() + 0.05

    async def one(due: float, path: str) -> None:
        nonlocal errors
        reader, writer = await pool.get()
        try:
            status = await _request(reader, writer, host, path)
            if status != 200:
                errors += 1
        except (ConnectionError, asyncio.IncompleteReadError):
            errors += 1
            reader, writer = await asyncio.open_connection(host, port)
        finally:
            pool.put_nowait((reader, writer))
        latencies.append(time.perf_counter() - due)

    tasks = []
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due, random.choice(paths))))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")

    return {
        "requests": len(latencies),
        "errors": errors,
        "achieved_rate": len(latencies) / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": latencies[-1] * 1000 if latencies else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--paths-file", required=True, help="one request path per line")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    with open(args.paths_file) as handle:
        paths = [line.strip() for line in handle if line.strip()]
    result = asyncio.run(open_loop(args.host, args.port, paths, args.rate, args.duration, args.connections))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
