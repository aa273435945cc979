"""A constant-rate HTTP/1.1 load generator that does not hide stalls (no coordinated omission).

    python bench/rate.py URL [--rate 1000] [--duration 10] [-H 'Name: value' ...] [--json]

Request ``i`` is *scheduled* at ``start + i / rate``, whatever happened to the ones before it,
and its latency is measured from that scheduled time to the last byte of its answer. A request
that could not be sent on time (every connection busy, or this process late) waits, and the
wait counts in its latency, as in wrk2: a 50 ms stall of the server shows as about 50 requests
with up to 50 ms latency, not as one slow request.

How it keeps time on a shared 2-core machine without spinning: a timer thread sleeps until
each scheduled time (``time.sleep`` has microsecond resolution, unlike the event loop's
millisecond timers) and wakes the asyncio loop through ``call_soon_threadsafe``; the loop sends
every request that is due on a free keep-alive connection (opening another one, up to
``--max-connections``, when none is free). The generator's own lateness (``send lag``: actual
send minus scheduled time) is reported too, so its share of the latency is visible.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import threading
import time
from urllib.parse import urlsplit

import httptools

try:
    import uvloop
except ImportError:  # pragma: no cover - the bench extra installs it
    uvloop = None


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


class Connection(asyncio.Protocol):
    def __init__(self, generator: Generator):
        self.generator = generator
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.scheduled = 0.0
        self.busy = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, scheduled: float) -> None:
        self.scheduled = scheduled
        self.busy = True
        assert self.transport is not None
        self.transport.write(self.generator.request)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.generator.errors += 1
            self.transport.close()  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        self.busy = False
        self.generator.completed(self, status, self.scheduled)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.generator.lost(self)


class Generator:
    def __init__(self, url: str, rate: float, duration: float, headers: list[tuple[str, str]],
                 max_connections: int, initial_connections: int):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        names = {name.lower() for name, _ in headers}
        lines = [f"GET {path} HTTP/1.1", *([f"Host: {parts.netloc}"] if "host" not in names else [])]
        lines += [f"{name}: {value}" for name, value in headers]
        self.request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.rate, self.duration = rate, duration
        self.total = int(rate * duration)
        self.max_connections, self.initial_connections = max_connections, initial_connections
        self.idle: list[Connection] = []
        self.connections = 0
        self.opening = 0
        self.backlog: list[float] = []  # scheduled times of due requests waiting for a connection
        self.latencies: list[float] = []
        self.send_lags: list[float] = []
        self.statuses: dict[int, int] = {}
        self.errors = 0
        self.sent = 0
        self.done = asyncio.Event()
        self.finished = 0

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self.opening += 1
        try:
            _, connection = await loop.create_connection(lambda: Connection(self), self.host, self.port)
        except OSError:
            self.errors += 1
            self.finished += 1  # the request it was opened for is lost
            return
        finally:
            self.opening -= 1
        self.connections += 1
        self.release(connection)

    def release(self, connection: Connection) -> None:
        if self.backlog:
            self.dispatch(connection, self.backlog.pop(0))
        else:
            self.idle.append(connection)

    def dispatch(self, connection: Connection, scheduled: float) -> None:
        self.send_lags.append(time.perf_counter() - scheduled)
        connection.send(scheduled)
        self.sent += 1

    def due(self, scheduled: float) -> None:
        """Called on the loop when request ``scheduled`` is due."""
        if self.idle:
            self.dispatch(self.idle.pop(), scheduled)
            return
        self.backlog.append(scheduled)
        if self.connections + self.opening < self.max_connections:
            asyncio.ensure_future(self.open())

    def completed(self, connection: Connection, status: int, scheduled: float) -> None:
        self.latencies.append(time.perf_counter() - scheduled)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.finish_one()
        self.release(connection)

    def lost(self, connection: Connection) -> None:
        self.connections -= 1
        if connection in self.idle:
            self.idle.remove(connection)
        if connection.busy:
            self.errors += 1
            self.finish_one()

    def finish_one(self) -> None:
        self.finished += 1
        if self.finished >= self.total:
            self.done.set()

    async def run(self) -> dict:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(self.open() for _ in range(self.initial_connections)))
        start = time.perf_counter() + 0.05
        stop = threading.Event()

        def timer() -> None:
            interval = 1.0 / self.rate
            for index in range(self.total):
                if stop.is_set():
                    return
                scheduled = start + index * interval
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                loop.call_soon_threadsafe(self.due, scheduled)

        thread = threading.Thread(target=timer, daemon=True)
        thread.start()
        try:
            await asyncio.wait_for(self.done.wait(), self.duration + 30)
        except asyncio.TimeoutError:
            pass
        finally:
            stop.set()
        elapsed = time.perf_counter() - start
        connections = self.connections
        for connection in list(self.idle):
            connection.transport.close()  # type: ignore[union-attr]
        latencies = sorted(self.latencies)
        lags = sorted(self.send_lags)
        ok = sum(count for status, count in self.statuses.items() if 200 <= status < 400)
        return {
            "rate": self.rate,
            "duration": self.duration,
            "scheduled": self.total,
            "completed": len(latencies),
            "achieved_rps": len(latencies) / elapsed if elapsed > 0 else 0.0,
            "ok": ok,
            "non_2xx_3xx": len(latencies) - ok,
            "errors": self.errors + (self.total - self.finished),
            "connections": connections,
            "p50_ms": percentile(latencies, 0.50) * 1e3,
            "p95_ms": percentile(latencies, 0.95) * 1e3,
            "p99_ms": percentile(latencies, 0.99) * 1e3,
            "p999_ms": percentile(latencies, 0.999) * 1e3,
            "max_ms": (latencies[-1] if latencies else math.nan) * 1e3,
            "send_lag_p50_ms": percentile(lags, 0.50) * 1e3,
            "send_lag_p99_ms": percentile(lags, 0.99) * 1e3,
        }


async def generate(url: str, rate: float = 1000.0, duration: float = 10.0, headers: list[tuple[str, str]] | None = None,
                   max_connections: int = 256, initial_connections: int = 8) -> dict:
    return await Generator(url, rate, duration, headers or [], max_connections, initial_connections).run()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second (default 1000)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of scheduled requests (default 10)")
    parser.add_argument("-H", "--header", action="append", default=[], help="'Name: value', repeatable")
    parser.add_argument("--max-connections", type=int, default=256)
    parser.add_argument("--connections", type=int, default=8, help="connections opened before the start")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = parser.parse_args()
    headers = [tuple(part.strip() for part in header.split(":", 1)) for header in args.header]
    run = generate(args.url, args.rate, args.duration, headers, args.max_connections, args.connections)  # type: ignore[arg-type]
    result = uvloop.run(run) if uvloop is not None else asyncio.run(run)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['completed']}/{result['scheduled']} requests at {result['achieved_rps']:.0f}/s "
              f"(target {args.rate:.0f}/s), {result['connections']} connections, "
              f"{result['non_2xx_3xx']} non-2xx/3xx, {result['errors']} errors")
        print("latency from scheduled send: p50 {p50_ms:.3f} ms  p95 {p95_ms:.3f} ms  p99 {p99_ms:.3f} ms  "
              "p99.9 {p999_ms:.3f} ms  max {max_ms:.3f} ms".format(**result))
        print("send lag (the generator's own lateness): p50 {send_lag_p50_ms:.3f} ms  p99 {send_lag_p99_ms:.3f} ms"
              .format(**result))
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
