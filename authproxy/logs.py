"""Logging: JSON lines (or text) on stdout, event logs and the access log.

Access lines bypass the ``logging`` machinery: one ``json.dumps`` and one write
per request, the cheapest way to get a structured line out on the hot path.
Nothing here ever logs a header value other than the ones named in the record.
"""

from __future__ import annotations

import asyncio
import json
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
import logging
import sys
import time
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
    """Writes one line per request; ``enabled`` False makes ``write`` a no-op."""

    __slots__ = ("enabled", "_json", "_stream", "_flush_pending", "_second", "_second_text")

    def __init__(self, config: LogConfig, stream: TextIO | None = None):
        self.enabled = config.access
        self._json = config.format == "json"
        self._stream = stream or sys.stdout
        self._flush_pending = False
        self._second = -1
        self._second_text = ""

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
    ) -> None:
        """``refusal``: why the proxy itself refused the request (a short code such as
        ``expired`` or ``allow_rules``), written only when it did."""
        stamp = self._time(time.time())
        if self._json:
            # Hand-assembled JSON: every string goes through the C string encoder, so the
            # line is exactly what json.dumps would give, at a fraction of the cost.
            line = (
                f'{{"time": "{stamp}", "type": "access", "request_id": {_string(request_id)}, '
                f'"method": {_string(method)}, "path": {_string(path)}, "route": {_optional(route)}, '
                f'"status": {status}, "upstream_status": {"null" if upstream_status is None else upstream_status}, '
                f'"duration_ms": {round(duration * 1000, 3)}, "client": {_optional(client)}, "user": {_optional(user)}'
                + (f', "refusal": {_string(refusal)}}}' if refusal is not None else "}")
            )
        else:
            line = (
                f"{stamp} access {text_value(method)} {text_value(path)} {status} {round(duration * 1000, 3)}ms "
                f"route={text_value(route or '-')} upstream_status={upstream_status or '-'} "
                f"client={text_value(client or '-')} user={text_value(user or '-')} request_id={text_value(request_id)}"
                + (f" refusal={text_value(refusal)}" if refusal is not None else "")
            )
        self._stream.write(line + "\n")
        # Lines written in one event-loop pass leave in one flush, not one syscall each.
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        try:
            self._stream.flush()
        except (OSError, ValueError):  # stdout closed or broken: nothing useful to do
            pass


_string = encode_basestring_ascii


def _optional(value: str | None) -> str:
    return "null" if value is None else encode_basestring_ascii(value)


def loggable_path(path: str, query: str) -> str:
    """The path with query parameter names but never their values (they may carry codes or tokens)."""
    if not query:
        return path
    names = [part.partition("=")[0] for part in query.split("&") if part]
    return path + "?" + "&".join(f"{name}=" for name in names)
