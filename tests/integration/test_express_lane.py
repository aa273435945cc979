"""The express lane (web/express.py): plain requests on the proxy's own HTTP/1.1 server,
and every other request on aiohttp's, with the connection handed over whole.

A raw socket client keeps one connection per test, so which lane served what is known
from ``authproxy_express_requests_total`` and ``authproxy_express_handoffs_total``; the
same requests through a proxy with ``express_lane: false`` give the answers the express
lane must give too."""

from __future__ import annotations

import asyncio
import json
import re
import socket

import httptools
import pytest

from tests.support.processes import ProxyProcess, UpstreamProcess, http_get

DEAD_UPSTREAM = "http://127.0.0.1:9"  # discard port: nothing listens


class Answer:
    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.body = b""
        self.complete = False

    def header(self, name: str) -> str | None:
        found = [value for key, value in self.headers if key.lower() == name.lower()]
        return found[0] if found else None

    def json(self) -> dict:
        return json.loads(self.body)


class _HeadDone(Exception):
    pass


class Client:
    """One HTTP/1.1 connection, bytes written as given, answers parsed as they come."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.answers: list[Answer] = []
        self._heads: list[bool] = []  # per request sent: was it a HEAD (the parser must be told)
        self._parser = httptools.HttpResponseParser(self)

    @classmethod
    async def open(cls, port: int) -> Client:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.answers.append(Answer())

    def on_header(self, name: bytes, value: bytes) -> None:
        self.answers[-1].headers.append((name.decode(), value.decode()))

    def on_headers_complete(self) -> None:
        answer = self.answers[-1]
        answer.status = self._parser.get_status_code()
        if self._heads[len(self.answers) - 1]:  # a HEAD's answer: no body follows, whatever it says
            answer.complete = True
            raise _HeadDone()

    def on_body(self, body: bytes) -> None:
        self.answers[-1].body += body

    def on_message_complete(self) -> None:
        self.answers[-1].complete = True

    async def send(self, data: bytes, heads: int = 0, requests: int = 1) -> None:
        self._heads += [True] * heads + [False] * (requests - heads)
        self.writer.write(data)
        await self.writer.drain()

    async def answers_until(self, count: int) -> list[Answer]:
        async with asyncio.timeout(10):
            while sum(answer.complete for answer in self.answers) < count:
                data = await self.reader.read(65536)
                if not data:
                    break
                try:
                    self._parser.feed_data(data)
                except httptools.HttpParserCallbackError as exc:
                    if not isinstance(exc.__context__, _HeadDone):
                        raise
                    self._parser = httptools.HttpResponseParser(self)  # the next answer starts afresh
        return self.answers

    async def request(self, method: str, path: str, headers: str = "", body: bytes = b"") -> Answer:
        await self.send(f"{method} {path} HTTP/1.1\r\nHost: app.test\r\n{headers}\r\n".encode() + body,
                        heads=1 if method == "HEAD" else 0)
        return (await self.answers_until(len(self._heads)))[-1]

    async def closed_by_server(self) -> bool:
        async with asyncio.timeout(10):
            return await self.reader.read(65536) == b""

    def close(self) -> None:
        self.writer.close()


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: app.test\r\n{extra}\r\n".encode()


def express_counts(proxy: ProxyProcess) -> tuple[float, dict[str, float]]:
    status, body = http_get(proxy.admin_url + "/metrics")
    assert status == 200
    text = body.decode()
    served = re.search(r"^authproxy_express_requests_total (\S+)$", text, re.M)
    handoffs = {m.group(1): float(m.group(2))
                for m in re.finditer(r'^authproxy_express_handoffs_total\{reason="(\w+)"\} (\S+)$', text, re.M)}
    return (float(served.group(1)) if served else 0.0), handoffs


async def in_flight(proxy: ProxyProcess) -> None:
    async with asyncio.timeout(5):
        while True:
            _, body = await asyncio.to_thread(http_get, proxy.admin_url + "/metrics")
            if re.search(r"^authproxy_requests_in_flight [1-9]", body.decode(), re.M):
                return


class Lanes:
    """What a test did to the counters."""

    def __init__(self, proxy: ProxyProcess):
        self.proxy = proxy
        self.served, self.handoffs = express_counts(proxy)

    def since(self) -> tuple[float, dict[str, float]]:
        served, handoffs = express_counts(self.proxy)
        return served - self.served, {reason: count - self.handoffs.get(reason, 0)
                                      for reason, count in handoffs.items() if count != self.handoffs.get(reason, 0)}


@pytest.fixture(scope="module")
def upstream():
    server = UpstreamProcess()
    yield server
    server.stop()


def settings(upstream: UpstreamProcess, express: bool) -> dict:
    return {
        "express_lane": express,
        "log": {"access": True},
        "limits": {"client_idle_timeout": "1s"},
        "routes": [
            {"name": "dead", "match": {"path_prefix": "/dead"}, "upstream": DEAD_UPSTREAM, "auth": "public"},
            {"name": "app", "upstream": upstream.url, "auth": "public"},
        ],
    }


@pytest.fixture(scope="module")
def proxy(upstream, tmp_path_factory):
    process = ProxyProcess(settings(upstream, True), tmp_path_factory.mktemp("express"))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def aiohttp_proxy(upstream, tmp_path_factory):
    process = ProxyProcess(settings(upstream, False), tmp_path_factory.mktemp("aiohttp-lane"))
    yield process
    process.stop()


async def test_plain_requests_share_one_connection_in_the_express_lane(proxy):
    lanes = Lanes(proxy)
    client = await Client.open(proxy.port)
    try:
        for i in range(20):
            answer = await client.request("GET", f"/echo/{i}?q={i}", "X-Client: yes\r\nConnection: keep-alive, X-Hop\r\n"
                                          "X-Hop: secret\r\nX-Forwarded-For: 203.0.113.9\r\n")
            assert answer.status == 200
            seen = dict((name.lower(), value) for name, value in answer.json()["headers"])
            assert answer.json()["raw_path"] == f"/echo/{i}?q={i}"
            assert seen["x-client"] == "yes" and "x-hop" not in seen and seen["x-forwarded-for"] == "127.0.0.1"
            assert seen["x-request-id"] == answer.header("X-Request-Id")
            assert answer.header("Server") and answer.header("Date") and answer.header("Connection") is None
    finally:
        client.close()
    assert lanes.since() == (20, {})


async def test_a_request_with_a_body_moves_the_connection_to_aiohttps_server(proxy):
    lanes = Lanes(proxy)
    client = await Client.open(proxy.port)
    try:
        first = await client.request("GET", "/echo/first")
        upload = await client.request("POST", "/upload", "Content-Length: 5\r\n", b"hello")
        after = await client.request("GET", "/echo/after")
    finally:
        client.close()
    assert first.status == 200 and after.status == 200
    assert upload.status == 200 and upload.json()["received"] == 5
    assert lanes.since() == (1, {"body": 1})  # the GET after the upload was aiohttp's too


async def test_pipelined_requests_are_answered_in_order(proxy):
    lanes = Lanes(proxy)
    client = await Client.open(proxy.port)
    try:
        await client.send(get("/echo/a") + get("/echo/b") + get("/echo/c"), requests=3)
        answers = await client.answers_until(3)
    finally:
        client.close()
    assert [answer.json()["path"] for answer in answers] == ["/echo/a", "/echo/b", "/echo/c"]
    assert lanes.since() == (0, {"pipelined": 1})  # all three from the first byte, by aiohttp


async def test_a_request_sent_while_one_is_served_waits_its_turn(proxy):
    lanes = Lanes(proxy)
    client = await Client.open(proxy.port)
    try:
        await client.send(get("/slow/500"))
        await in_flight(proxy)  # the first is being served (else both come in one read: pipelined)
        await client.send(get("/echo/next"))  # before the slow answer: the lane holds it
        answers = await client.answers_until(2)
    finally:
        client.close()
    assert answers[0].body == b"slow done" and answers[1].json()["path"] == "/echo/next"
    assert lanes.since() == (2, {})


async def test_bytes_the_parser_refuses_get_aiohttps_refusal(proxy, aiohttp_proxy):
    answers = []
    for port in (proxy.port, aiohttp_proxy.port):
        client = await Client.open(port)
        try:
            assert (await client.request("GET", "/echo/ok")).status == 200
            await client.send(b"GET /x HTTP/1.1\r\nHost: app.test\r\nBad Header: 1\r\n\r\n")
            answer = (await client.answers_until(2))[-1]
            assert await client.closed_by_server()
            answers.append(answer)
        finally:
            client.close()
    express, plain = answers
    assert express.status == plain.status == 400
    assert b"could not be parsed" in express.body  # listener.py's fixed text, the bytes never quoted
    assert express.body.replace(express.header("X-Request-Id").encode(), b"") == \
        plain.body.replace(plain.header("X-Request-Id").encode(), b"")


@pytest.mark.parametrize("request_bytes, reason", [
    (b"GET /echo/x HTTP/1.0\r\nHost: app.test\r\n\r\n", "http_version"),
    (b"GET /echo/x HTTP/1.1\r\n\r\n", "host"),
    (b"GET /echo/x HTTP/1.1\r\nHost: app.test\r\nExpect: 100-continue\r\n\r\n", "expect"),
    (b"POST /echo/x HTTP/1.1\r\nHost: app.test\r\nContent-Length: 2\r\n\r\nab", "body"),
    (b"POST /echo/x HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n", "body"),
    (b"POST /echo/x HTTP/1.1\r\nHost: app.test\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n", "malformed"),
    (b"GET /echo/x HTTP/1.1\r\nHost: app.test\r\nX-Pad: " + b"p" * 8300 + b"\r\n\r\n", "limits"),
    (b"GET /echo/x HTTP/1.1\r\nHost: app.test\r\nUser-Agent: a\r\nUser-Agent: b\r\n\r\n", "duplicate"),
    (b"GET /echo/x HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n", "duplicate"),
])
async def test_what_the_lane_does_not_serve_is_answered_as_aiohttp_answers_it(proxy, aiohttp_proxy, request_bytes,
                                                                                reason):
    lanes = Lanes(proxy)
    statuses = []
    for port in (proxy.port, aiohttp_proxy.port):
        client = await Client.open(port)
        try:
            await client.send(request_bytes)
            statuses.append((await client.answers_until(1))[0].status)
        finally:
            client.close()
    assert statuses[0] == statuses[1]
    assert lanes.since() == (0, {reason: 1})


async def test_an_unfinished_head_beyond_64_kib_goes_to_aiohttps_lane(proxy):
    lanes = Lanes(proxy)
    head = b"GET /echo/big HTTP/1.1\r\nHost: app.test\r\n" + b"".join(
        b"X-Pad-%d: %s\r\n" % (i, b"p" * 1000) for i in range(70))  # within aiohttp's limits: 70 lines of 1 KB
    client = await Client.open(proxy.port)
    try:
        await client.send(head)  # not finished: the lane would hold it all
        async with asyncio.timeout(5):
            while lanes.since()[1] != {"limits": 1}:
                await asyncio.sleep(0.02)
        await client.send(b"\r\n", requests=0)
        answer = (await client.answers_until(1))[0]
    finally:
        client.close()
    assert answer.status == 200 and answer.json()["path"] == "/echo/big"
    assert lanes.since() == (0, {"limits": 1})


async def test_a_length_of_zero_is_no_body_and_stays_in_the_lane(proxy):
    lanes = Lanes(proxy)
    client = await Client.open(proxy.port)
    try:
        answer = await client.request("POST", "/echo/empty", "Content-Length: 0\r\n")
    finally:
        client.close()
    assert answer.status == 200 and answer.json()["method"] == "POST" and answer.json()["body_length"] == 0
    assert ["Content-Length", "0"] in answer.json()["headers"]
    assert lanes.since() == (1, {})


async def test_streamed_chunked_and_bodiless_answers_match_aiohttps_lane(proxy, aiohttp_proxy):
    requests = [("GET", "/download/200000"), ("GET", "/download/100000?chunked=1"), ("HEAD", "/download/100"),
                ("GET", "/status/204"), ("GET", "/status/304"), ("GET", "/status/418"), ("GET", "/hop"),
                ("GET", "/dead/x"), ("HEAD", "/dead/x")]
    lanes = Lanes(proxy)
    results = []
    for port in (proxy.port, aiohttp_proxy.port):
        client = await Client.open(port)
        try:
            results.append([await client.request(method, path, "Accept: application/json\r\n")
                            for method, path in requests])
        finally:
            client.close()
    for (method, path), express, plain in zip(requests, *results, strict=True):
        assert express.status == plain.status, path
        assert len(express.body) == len(plain.body), path
        if not path.startswith("/dead"):  # the error page names its own request id
            assert express.body == plain.body, path
        # The same headers, whatever their order; Date differs by the second, the ids always.
        names = {name.lower() for name, _ in express.headers} - {"date"}
        assert names == {name.lower() for name, _ in plain.headers} - {"date"}, path
        for name in ("Content-Length", "Transfer-Encoding", "Content-Type", "ETag", "Server", "Cache-Control"):
            assert express.header(name) == plain.header(name), (path, name)
    statuses = [answer.status for answer in results[0]]
    assert statuses == [200, 200, 200, 204, 304, 418, 200, 502, 502]
    assert len(results[0][0].body) == 200000 and len(results[0][1].body) == 100000
    assert results[0][1].header("Transfer-Encoding") == "chunked"
    assert results[0][2].header("Content-Length") == "100" and results[0][2].body == b""
    assert results[0][6].header("X-Secret-Hop") is None and results[0][6].header("X-Kept") == "1"
    assert lanes.since() == (len(requests), {})


def unread_connection(port: int) -> socket.socket:
    """A client that never reads: a small receive buffer, so the proxy's writes back up."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return sock


async def cut_by_server(sock: socket.socket) -> bool:
    """Whether the proxy ends the connection within 10 s, found without reading from it:
    once it has, a send fails (a byte more of a next request changes nothing before)."""
    async with asyncio.timeout(10):
        while True:
            try:
                sock.send(b" ", socket.MSG_NOSIGNAL)
            except OSError:
                return True
            await asyncio.sleep(0.05)


async def test_answers_the_client_does_not_read_do_not_pile_up(proxy):
    sock = unread_connection(proxy.port)
    served = 0
    try:
        for n in range(400):  # 60 KB answers, each written in one go, until the socket's buffers are full
            sock.sendall(get("/download/60000", f"X-Request-Id: unread-{n}\r\n"))
            try:
                await proxy.access_record(f"unread-{n}", timeout=4)
            except AssertionError:
                break  # held: the answer before it has not left the proxy's buffer
            served += 1
        assert served < 400  # (24 MB would otherwise sit in the proxy's memory by now)
        assert await cut_by_server(sock)  # not read for client_idle_timeout (1s): cut
    finally:
        sock.close()
    assert not [r for r in proxy.access_records() if r["request_id"] == f"unread-{served}"]  # never served


async def test_a_cut_connection_serves_nothing_it_had_queued(proxy):
    sock = unread_connection(proxy.port)
    try:
        sock.sendall(get("/download/20000000", "X-Request-Id: cut-1\r\n"))
        await in_flight(proxy)
        sock.sendall(get("/echo/after-cut", "X-Request-Id: cut-2\r\n"))  # waits while the first is served
        first = await proxy.access_record("cut-1", timeout=10)  # the client stopped reading: cut
        assert first["status"] == 499
    finally:
        sock.close()
    # A request on another connection: anything the cut one had queued would be logged before it.
    other = await Client.open(proxy.port)
    try:
        await other.request("GET", "/echo/marker", "X-Request-Id: cut-marker\r\n")
    finally:
        other.close()
    await proxy.access_record("cut-marker")
    assert not [r for r in proxy.access_records() if r["request_id"] == "cut-2"]


async def test_connection_close_ends_the_connection_after_the_answer(proxy):
    client = await Client.open(proxy.port)
    try:
        answer = await client.request("GET", "/echo/x", "Connection: close\r\n")
        assert answer.status == 200 and answer.header("Connection") == "close"
        assert await client.closed_by_server()
    finally:
        client.close()


async def test_an_idle_connection_is_closed_after_the_idle_timeout(proxy):
    client = await Client.open(proxy.port)
    try:
        assert (await client.request("GET", "/echo/x")).status == 200
        assert await client.closed_by_server()  # client_idle_timeout: 1s (the read waits up to 10)
    finally:
        client.close()


async def test_a_client_that_leaves_mid_request_is_logged_499_and_the_lane_goes_on(proxy):
    client = await Client.open(proxy.port)
    await client.send(get("/slow/300", "X-Request-Id: express-gone-1\r\n"))
    client.writer.transport.abort()
    record = await proxy.access_record("express-gone-1")
    assert record["status"] == 499 and record["upstream_status"] == 200
    other = await Client.open(proxy.port)
    try:
        assert (await other.request("GET", "/echo/y")).status == 200
    finally:
        other.close()


# --- in-process: the lane's own edges, with a handler that misbehaves on purpose -------------

async def serve_in_process(handler) -> tuple[asyncio.base_events.Server, int]:
    from authproxy.config.schema import Config
    from authproxy.web.handler import server_options
    from authproxy.web.listener import SafeServer

    config = Config.model_validate({"routes": [{"name": "app", "upstream": "http://127.0.0.1:9", "auth": "public"}]})
    server = SafeServer(handler, express=True, **server_options(config))
    listener = await asyncio.get_running_loop().create_server(server, "127.0.0.1", 0)
    return listener, listener.sockets[0].getsockname()[1]


async def test_a_bug_in_the_handler_is_answered_500_and_ends_the_connection(caplog):
    async def handler(request):
        raise RuntimeError("a bug")

    listener, port = await serve_in_process(handler)
    client = await Client.open(port)
    try:
        answer = await client.request("GET", "/x", "X-Request-Id: bug-1\r\n")
        assert answer.status == 500 and answer.header("Connection") == "close"
        assert b"a bug" not in answer.body and answer.header("X-Request-Id") == "bug-1"
        assert await client.closed_by_server()
    finally:
        client.close()
        listener.close()
    errors = [record for record in caplog.records if record.getMessage() == "unhandled_error"]
    assert len(errors) == 1 and errors[0].exc_info[0] is RuntimeError


async def test_an_answer_that_cannot_be_written_ends_the_connection(caplog):
    from aiohttp import web

    async def handler(request):
        return web.Response(text="x", headers={"X-Bad": "a\nb"})  # no answer may carry this

    listener, port = await serve_in_process(handler)
    client = await Client.open(port)
    try:
        await client.send(get("/x"))
        assert await client.closed_by_server()  # cut, not left open and busy
        assert client.answers == []
    finally:
        client.close()
        listener.close()
    assert [record for record in caplog.records if record.getMessage() == "unhandled_error"]


def test_the_query_of_an_express_request_is_aiohttps():
    from types import SimpleNamespace

    from aiohttp.test_utils import make_mocked_request
    from multidict import CIMultiDict

    from authproxy.web.express import ExpressRequest

    connection = SimpleNamespace(remote="127.0.0.1", scheme="http", transport=None)
    for target in ("/oauth2/auth?redirect=1#x", "/a?x=1&x=2&y=%20z", "/a", "/a?#f", "/a?redirect=true&"):
        express = ExpressRequest("GET", target, CIMultiDict(), connection)  # type: ignore[arg-type]
        assert list(express.query.items()) == list(make_mocked_request("GET", target).query.items()), target


async def test_a_hand_off_serves_the_same_request_in_aiohttps_lane():
    from aiohttp import web

    from authproxy.metrics import EXPRESS
    from authproxy.web.express import ExpressRequest, HandOff

    lanes = []

    async def handler(request):
        lanes.append(type(request).__name__)
        if isinstance(request, ExpressRequest) and request.raw_path.startswith("/own"):
            raise HandOff()
        return web.Response(text=f"{request.method} {request.raw_path}")

    before = EXPRESS.handoffs.get("own_endpoint", 0)
    listener, port = await serve_in_process(handler)
    client = await Client.open(port)
    try:
        answers = [await client.request("GET", path) for path in ("/a", "/own/start", "/b")]
    finally:
        client.close()
        listener.close()
    assert [answer.body for answer in answers] == [b"GET /a", b"GET /own/start", b"GET /b"]
    assert lanes == ["ExpressRequest", "ExpressRequest", "_EdgeRequest", "_EdgeRequest"]
    assert EXPRESS.handoffs.get("own_endpoint", 0) == before + 1
