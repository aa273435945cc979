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
