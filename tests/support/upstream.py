"""A test upstream service with endpoints for every proxy behaviour under test.

Run as ``python -m tests.support.upstream --port N``; it binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json

from aiohttp import WSMsgType, web

_CHUNK = b"x" * (1 << 16)


async def echo(request: web.Request) -> web.Response:
    """The request as the upstream saw it: method, raw path, query, headers, body digest."""
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.raw_path.partition("?")[0],
            "raw_path": request.raw_path,
            "query": request.query_string,
            "headers": [[name, value] for name, value in request.headers.items()],
            "body_length": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }
    )


async def download(request: web.Request) -> web.StreamResponse:
    """GET /download/{size}?chunked=1 streams size bytes of 'x'."""
    size = int(request.match_info["size"])
    response = web.StreamResponse()
    response.content_type = "application/octet-stream"
    if request.query.get("chunked") != "1":
        response.content_length = size
    await response.prepare(request)
    # aiohttp would send these bytes even for HEAD (RFC 9110 9.3.2 forbids it)
    remaining = 0 if request.method == "HEAD" else size
    while remaining > 0:
        piece = _CHUNK if remaining >= len(_CHUNK) else _CHUNK[:remaining]
        await response.write(piece)
        remaining -= len(piece)
    await response.write_eof()
    return response


async def upload(request: web.Request) -> web.Response:
    """POST /upload counts and hashes the body as it streams in, never holding it."""
    digest = hashlib.sha256()
    total = 0
    async for chunk in request.content.iter_any():
        total += len(chunk)
        digest.update(chunk)
    return web.json_response({"received": total, "sha256": digest.hexdigest()})


async def status(request: web.Request) -> web.Response:
    code = int(request.match_info["code"])
    if code in (204, 304):
        return web.Response(status=code, headers={"ETag": '"v1"', "X-Upstream": "yes"})
    return web.Response(status=code, text=f"status {code}", headers={"X-Upstream": "yes"})


async def slow(request: web.Request) -> web.Response:
    """GET /slow/{ms} answers after a delay."""
    await asyncio.sleep(int(request.match_info["ms"]) / 1000)
    return web.Response(text="slow done")


async def hop(request: web.Request) -> web.Response:
    """A response carrying hop-by-hop headers the proxy must remove."""
    return web.Response(
        text="hop",
        headers={"Connection": "X-Secret-Hop", "X-Secret-Hop": "1", "Keep-Alive": "timeout=5", "X-Kept": "1"},
    )


async def truncated(request: web.Request) -> web.StreamResponse:
    """Promises 1 MiB, sends 64 KiB, then drops the connection."""
    response = web.StreamResponse(headers={"Content-Length": str(1 << 20)})
    await response.prepare(request)
    await response.write(_CHUNK)
    assert request.transport is not None
    request.transport.close()
    return response


async def ws_echo(request: web.Request) -> web.WebSocketResponse:
    """Echoes text, binary and close codes; 'close:<code>' closes with that code; reports pings."""
    ws = web.WebSocketResponse(protocols=("chat", "superchat"), autoping=False, autoclose=False)
    await ws.prepare(request)
    while True:
        message = await ws.receive()
        if message.type is WSMsgType.CLOSE:
            await ws.close(code=message.data, message=b"echo")  # echo the code, as RFC 6455 5.5.1 suggests
            break
        if message.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            break
        if message.type is WSMsgType.TEXT:
            if message.data.startswith("close:"):
                await ws.close(code=int(message.data[6:]), message=b"bye")
                break
            if message.data == "headers":
                await ws.send_str(json.dumps(dict(request.headers)))
                continue
            await ws.send_str(message.data)
        elif message.type is WSMsgType.BINARY:
            await ws.send_bytes(message.data)
        elif message.type is WSMsgType.PING:
            await ws.pong(message.data)
            await ws.send_str("got-ping:" + message.data.decode())
    return ws


async def ws_forbidden(request: web.Request) -> web.Response:
    return web.Response(status=403, text="no websockets for you")


def make_app() -> web.Application:
    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/download/{size}", download)
    app.router.add_post("/upload", upload)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_get("/slow/{ms}", slow)
    app.router.add_get("/hop", hop)
    app.router.add_get("/truncated", truncated)
    app.router.add_get("/ws", ws_echo)
    app.router.add_get("/ws-forbidden", ws_forbidden)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(make_app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
