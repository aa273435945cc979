"""Logging: JSON lines (or text) on stdout, event logs and the access log.

Access lines bypass the ``logging`` machinery: a hand-assembled line per request,
written in batches (``AccessLog``), the cheapest way to get a structured line out on
the hot path.
Nothing here ever logs a header value other than the ones named in the record.
"""

from __future__ import annotations

import asyncio
import atexit
import json
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
import logging
import sys
import time
import weakref
from datetime import datetime, timezone
from typing import TextIO


from authproxy.config.schema import LogConfig

LOGGER_NAME = "authproxy"


def log() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def _timestamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, event message, and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": _timestamp(record.created),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            # The type only: tracebacks can quote values (headers, tokens) from frames.
            entry["exception"] = record.exc_info[0].__name__
        return json.dumps(entry, default=str)


def text_value(value: object) -> str:
    """A value for a ``key=value`` text line: as it is when plain, else JSON-quoted, so a
    claim holding a newline, a space or ``key=`` can never forge a line or a field."""
    text = str(value)
    if text and text.isprintable() and not any(char in text for char in ' "=\\'):
        return text
    return encode_basestring_ascii(text)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None) or {}
        extra = " ".join(f"{key}={text_value(value)}" for key, value in fields.items())
        line = f"{_timestamp(record.created)} {record.levelname.lower():7} {text_value(record.getMessage())}"
        if record.exc_info and record.exc_info[0] is not None:
            extra += f" exception={record.exc_info[0].__name__}"
        return f"{line} {extra}" if extra else line


def configure_logging(config: LogConfig, stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter() if config.format == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(config.level.upper())
    logging.getLogger("aiohttp.access").disabled = True


class AccessLog:
    """Writes one line per request; ``enabled`` False makes ``write`` a no-op.

    Lines are batched, as nginx's ``access_log ... buffer= flush=`` and Apache's
    ``BufferedLogs`` do, because a write() per request cost 15-25 µs of a request's
    ~150 (bench/README.md): a line leaves at the end of the event-loop pass that ended
    it when no other request is in flight, with the other lines that pass ended (a quiet
    proxy logs as it serves; an open WebSocket counts as one in flight, so while
    one is open lines wait up to ``log.access_flush``), else together with the next ones once
    ``log.access_buffer`` bytes wait or ``log.access_flush`` after the first one waited,
    whichever comes first; and when the process exits (a clean stop loses no line, only
    a killed process can lose what waited). ``access_buffer: 0`` writes every line at once.
    Lines leave whole and in order, each batch in one write.
    """

    __slots__ = ("enabled", "_json", "_stream", "_pending", "_pending_bytes", "_limit", "_interval", "_timer", "_soon",
                 "_loop", "_second", "_second_text", "__weakref__")

    def __init__(self, config: LogConfig, stream: TextIO | None = None):
        self.enabled = config.access
        self._json = config.format == "json"
        self._stream = stream or sys.stdout
        self._pending: list[str] = []
        self._pending_bytes = 0
        self._limit = config.access_buffer
        self._interval = config.access_flush
        self._timer: asyncio.TimerHandle | None = None
        self._soon: asyncio.Handle | None = None  # the flush at the end of this event-loop pass
        self._loop: asyncio.AbstractEventLoop | None = None  # asked once: get_running_loop() is a getpid() syscall
        self._second = -1
        self._second_text = ""
        _open_logs.add(self)

    def _time(self, now: float) -> str:
        """ISO 8601 UTC with milliseconds; the formatted second is reused within that second."""
        second = int(now)
        if second != self._second:
            self._second = second
            self._second_text = datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._second_text}.{int((now - second) * 1000):03d}Z"

    def write(
        self,
        *,
        request_id: str,
        method: str,
        path: str,
        route: str | None,
        status: int,
        upstream_status: int | None,
        duration: float,
        client: str | None,
        user: str | None = None,
        refusal: str | None = None,
        idle: bool = True,
    ) -> None:
        """``refusal``: why the proxy itself refused the request (a short code such as
        ``expired`` or ``allow_rules``), written only when it did. ``idle``: no other
        request is in flight, so the line (and any waiting) leaves now."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._time(now)  # a new second: formatted once, reused within it
        stamp = f"{self._second_text}.{int((now - second) * 1000):03d}Z"
        if self._json:
            # Hand-assembled JSON: every string goes through the C string encoder, so the
            # line is exactly what json.dumps would give, at a fraction of the cost.
            line = (
                f'{{"time": "{stamp}", "type": "access", "request_id": {_string(request_id)}, '
                f'"method": {_string(method)}, "path": {_string(path)}, '
                f'"route": {"null" if route is None else _string(route)}, '
                f'"status": {status}, "upstream_status": {"null" if upstream_status is None else upstream_status}, '
                f'"duration_ms": {round(duration * 1000, 3)}, "client": {"null" if client is None else _string(client)}, '
                f'"user": {"null" if user is None else _string(user)}'
                + (f', "refusal": {_string(refusal)}}}\n' if refusal is not None else "}\n")
            )
        else:
            line = (
                f"{stamp} access {text_value(method)} {text_value(path)} {status} {round(duration * 1000, 3)}ms "
                f"route={text_value(route or '-')} upstream_status={upstream_status or '-'} "
                f"client={text_value(client or '-')} user={text_value(user or '-')} request_id={text_value(request_id)}"
                + (f" refusal={text_value(refusal)}\n" if refusal is not None else "\n")
            )
        self._pending.append(line)
        self._pending_bytes += len(line)
        if self._pending_bytes >= self._limit:
            self.flush()
            return
        if idle:
            # Nothing else in flight: the line leaves at the end of this event-loop pass,
            # with the others the pass finished (one write for all of them, not one each).
            if self._soon is None:
                loop = self._running_loop()
                if loop is None:
                    self.flush()  # no loop (a tool, a test): at once
                else:
                    self._soon = loop.call_soon(self.flush)
        elif self._timer is None:
            loop = self._running_loop()
            if loop is None:
                self.flush()
            else:
                self._timer = loop.call_later(self._interval, self.flush)

    def _running_loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop, asked once (get_running_loop() is a getpid() syscall on 3.11)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            try:
                loop = self._loop = asyncio.get_running_loop()
            except RuntimeError:
                return None
        return loop

    def flush(self) -> None:
        """Write the waiting lines now (one write), e.g. before the process ends."""
        timer = self._timer
        if timer is not None:
            self._timer = None
            timer.cancel()
        soon = self._soon
        if soon is not None:
            self._soon = None
            soon.cancel()
        pending = self._pending
        if not pending:
            return
        text = pending[0] if len(pending) == 1 else "".join(pending)
        pending.clear()
        self._pending_bytes = 0
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # stdout closed or broken: nothing useful to do
            pass


# Every access log still open, flushed when the interpreter exits (a clean stop, even
# one that ends while lines wait for their batch).
_open_logs: weakref.WeakSet[AccessLog] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    for access_log in list(_open_logs):
        access_log.flush()


_string = encode_basestring_ascii


def _optional(value: str | None) -> str:
    return "null" if value is None else encode_basestring_ascii(value)


def loggable_path(path: str, query: str) -> str:
    """The path with query parameter names but never their values (they may carry codes or tokens)."""
    if not query:
        return path
    names = [part.partition("=")[0] for part in query.split("&") if part]
    return path + "?" + "&".join(f"{name}=" for name in names)
