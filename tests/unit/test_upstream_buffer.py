"""A response body waiting to be read (proxy/upstream/buffer.py): its watermarks, its
read timeout and how its ending is reported, with a fake connection."""

from __future__ import annotations

import asyncio

import pytest

from authproxy.errors import UpstreamTimeout, UpstreamUnavailable
from authproxy.proxy.upstream.buffer import HIGH_WATER, LOW_WATER, BodyBuffer


class Source:
    def __init__(self):
        self.calls: list[str] = []
        self.paused = False

    def pause_reading(self):
        self.calls.append("pause")
        self.paused = True

    def resume_reading(self):
        self.calls.append("resume")
        self.paused = False

    def abort(self):
        self.calls.append("abort")


async def test_reading_pauses_above_the_high_watermark_and_resumes_once_read():
    source = Source()
    body = BodyBuffer(source, read_timeout=5)
    body.feed(b"x" * HIGH_WATER)
    assert not source.paused  # at the mark: still reading
    body.feed(b"y")
    assert source.paused and body.buffered == HIGH_WATER + 1
    data = await body.readany()  # all that arrived, in one piece
    assert data == b"x" * HIGH_WATER + b"y" and body.buffered == 0 <= LOW_WATER and not source.paused


@pytest.mark.parametrize(("chunks", "expected"), [([b"a"], [b"a"]), ([b"a", b"b", b"c"], [b"abc"])])
async def test_a_read_takes_everything_that_arrived(chunks, expected):
    body = BodyBuffer(Source(), read_timeout=5)
    for chunk in chunks:
        body.feed(chunk)
    body.finish()
    assert [await body.readany(), await body.readany()] == [*expected, b""]
    assert body.drained


async def test_a_reader_waits_for_bytes_and_the_end():
    body = BodyBuffer(Source(), read_timeout=5)
    reading = asyncio.create_task(body.read())
    await asyncio.sleep(0)
    body.feed(b"he")
    await asyncio.sleep(0)
    body.feed(b"llo")
    body.finish()
    assert await reading == b"hello"


async def test_no_bytes_within_the_read_timeout_cuts_the_connection():
    source = Source()
    body = BodyBuffer(source, read_timeout=0.05)
    with pytest.raises(UpstreamTimeout):
        await body.readany()
    assert source.calls == ["abort"]


async def test_an_untimed_wait_ends_only_when_woken():
    body = BodyBuffer(Source(), read_timeout=0.01)
    waiting = asyncio.create_task(body.wait(timed=False))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    body.wake()
    await waiting
    assert body.error is None


async def test_bytes_that_arrived_are_read_before_the_failure_after_them():
    body = BodyBuffer(Source(), read_timeout=5)
    body.feed(b"partial")
    first = UpstreamUnavailable("reset", "closed")
    body.fail(first)
    body.fail(UpstreamUnavailable("invalid_response", "later"))  # the first reason stands
    assert await body.readany() == b"partial"
    with pytest.raises(UpstreamUnavailable) as caught:
        await body.readany()
    assert caught.value is first and not body.drained


async def test_a_complete_body_stays_complete():
    body = BodyBuffer(Source(), read_timeout=5)
    body.feed(b"all")
    body.finish()
    body.fail(UpstreamUnavailable("reset", "the connection closed after the answer"))
    assert body.error is None and await body.read() == b"all"
