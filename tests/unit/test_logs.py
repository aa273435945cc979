"""Text-format logs: no value can forge a line or a field (JSON lines are safe by construction)."""

import asyncio
import io
import json
import logging
import re

import pytest

from authproxy.config.schema import LogConfig
from authproxy.logs import AccessLog, TextFormatter, text_value

HOSTILE = ["alice\n2026-11-30T00:00:00.000Z info    refresh_success sub=admin", "a b", "x=y", 'q"uote', "tab\there",
           "back\\slash", "bell\x07", "\u2028line-separator", ""]


@pytest.mark.parametrize("value", HOSTILE)
def test_a_hostile_value_stays_one_token_on_one_line(value):
    rendered = text_value(value)
    assert "\n" not in rendered and "\r" not in rendered and "\u2028" not in rendered
    assert " " not in rendered.strip('"') or rendered.startswith('"')
    assert rendered.isprintable()


def test_plain_values_are_left_as_they_are():
    assert text_value("alice@example.com") == "alice@example.com" and text_value(42) == "42"


def test_text_formatter_fields_and_message():
    record = logging.LogRecord("authproxy", logging.INFO, __file__, 1, "refresh_rejected", (), None)
    record.fields = {"sub": HOSTILE[0], "error": "invalid_grant"}
    line = TextFormatter().format(record)
    assert line.count("\n") == 0
    # parsed as a logfmt reader would: the forged "sub=admin" stays inside the quoted value
    fields = re.findall(r' (\w+)=("(?:[^"\\]|\\.)*"|\S+)', line)
    assert [key for key, _ in fields] == ["sub", "error"]
    assert json.loads(dict(fields)["sub"]) == HOSTILE[0]


async def test_text_access_line_with_a_hostile_user_and_path():
    stream = io.StringIO()
    log = AccessLog(LogConfig(format="text"), stream)
    log.write(request_id="r1", method="GET", path="/x\nforged 200", route="app", status=200, upstream_status=200,
              duration=0.001, client="127.0.0.1", user=HOSTILE[0])
    await asyncio.sleep(0)
    assert stream.getvalue().count("\n") == 1


class CountingStream(io.StringIO):
    """Counts writes: each is one write() syscall on a real unbuffered stdout."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def access_line(log: AccessLog, n: int, *, idle: bool) -> None:
    log.write(request_id=f"r{n}", method="GET", path=f"/p/{n}", route="app", status=200, upstream_status=200,
              duration=0.001, client="127.0.0.1", user="alice", idle=idle)


async def test_access_lines_wait_while_requests_are_in_flight_and_leave_in_one_write_when_idle():
    stream = CountingStream()
    log = AccessLog(LogConfig(), stream)
    for n in range(5):
        access_line(log, n, idle=False)
    assert stream.getvalue() == "" and stream.writes == 0
    access_line(log, 5, idle=True)  # the last request in flight ended: everything leaves, in order, ...
    access_line(log, 6, idle=True)  # ... at the end of this event-loop pass, with what else the pass ended
    assert stream.writes == 0
    await asyncio.sleep(0)  # one pass of the loop (the flush was queued before this task's wake-up)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [record["request_id"] for record in records] == [f"r{n}" for n in range(7)]
    assert stream.writes == 1


def test_without_an_event_loop_an_idle_line_leaves_at_once():
    stream = CountingStream()
    log = AccessLog(LogConfig(), stream)
    access_line(log, 1, idle=True)
    assert stream.writes == 1 and json.loads(stream.getvalue())["request_id"] == "r1"


async def test_access_lines_leave_when_the_batch_is_full():
    stream = CountingStream()
    log = AccessLog(LogConfig(access_buffer="1KiB", access_flush="1h"), stream)
    n = 0
    while stream.writes == 0:
        access_line(log, n, idle=False)
        n += 1
    written = stream.getvalue()
    assert 1024 <= len(written) < 1024 + 400 and written.endswith("\n")  # whole lines, about one batch
    assert [json.loads(line)["request_id"] for line in written.splitlines()] == [f"r{i}" for i in range(n)]


async def test_access_lines_leave_after_the_flush_interval():
    stream = CountingStream()
    log = AccessLog(LogConfig(access_flush="10ms"), stream)
    access_line(log, 1, idle=False)
    assert stream.getvalue() == ""
    for _ in range(500):  # until the flush timer ran (a condition, not a duration)
        if stream.getvalue():
            break
        await asyncio.sleep(0.01)
    assert json.loads(stream.getvalue())["request_id"] == "r1"


async def test_access_buffer_zero_writes_every_line_at_once():
    stream = CountingStream()
    log = AccessLog(LogConfig(access_buffer=0), stream)
    for n in range(3):
        access_line(log, n, idle=False)
        assert stream.getvalue().count("\n") == n + 1
    assert stream.writes == 3


async def test_waiting_access_lines_are_written_at_exit():
    from authproxy import logs

    stream = CountingStream()
    log = AccessLog(LogConfig(access_flush="1h"), stream)
    access_line(log, 1, idle=False)
    assert stream.getvalue() == ""
    logs._flush_at_exit()  # what atexit runs when the process ends
    assert json.loads(stream.getvalue())["request_id"] == "r1"


def test_the_access_line_is_unchanged():
    """Batching changed when lines leave, not what they say: json.dumps's own line, key for key."""
    stream = io.StringIO()
    log = AccessLog(LogConfig(), stream)
    log.write(request_id="r\"1", method="GET", path="/ä?x=", route=None, status=403, upstream_status=None,
              duration=0.0123456, client="::1", user=None, refusal="allow_rules")
    line = stream.getvalue()
    record = json.loads(line)
    expected = {"time": record["time"], "type": "access", "request_id": "r\"1", "method": "GET", "path": "/ä?x=",
                "route": None, "status": 403, "upstream_status": None, "duration_ms": 12.346, "client": "::1",
                "user": None, "refusal": "allow_rules"}
    assert line == json.dumps(expected) + "\n"
