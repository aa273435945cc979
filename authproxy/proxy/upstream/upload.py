"""The request body, written to the upstream as the client sends it: with backpressure,
as announced (Content-Length, matched exactly) or chunked (RFC 9112 7.1)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from authproxy.errors import ClientGone, RequestRejected
from authproxy.proxy.upstream.buffer import BodyBuffer, timeout_error
from authproxy.proxy.upstream.protocol import _Connection, reset_error


class ClientBodyFailed(ClientGone):
    """Reading the client's request body failed (the client left); the caller answers 499."""


async def _send_body(
    connection: _Connection, response_body: BodyBuffer, body: AsyncIterator[bytes], length: int | None,
    send_timeout: float,
) -> None:
    """Write the request body with backpressure: as sent (``length``, which it must
    match exactly) or chunked. If the client's side fails (limits, the client leaving,
    a body longer or shorter than announced) the upstream connection is aborted and the
    failure raised here for the request to report. If the upstream side fails, the
    response (``response_body``) reports it."""
    sent = 0
    chunks = None
    try:
        chunks = body.__aiter__()
        while True:
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                break
            except RequestRejected:
                _abandon(connection, response_body)
                raise
            except Exception as exc:  # the client's body stream broke: the client left
                _abandon(connection, response_body)
                raise ClientBodyFailed() from exc
            if not chunk:
                continue  # an empty chunk would end a chunked body (RFC 9112 7.1)
            sent += len(chunk)
            if length is not None and sent > length:
                # Never more than announced: the surplus would be the upstream's next request.
                _abandon(connection, response_body)
                raise ClientBodyFailed()
            connection.write(chunk if length is not None else b"%x\r\n%b\r\n" % (len(chunk), chunk))
            await connection.drain(send_timeout)
        if length is not None and sent != length:
            _abandon(connection, response_body)
            raise ClientBodyFailed()
        if length is None:
            connection.write(b"0\r\n\r\n")
    except TimeoutError:  # the upstream stopped taking the body: nginx's proxy_send_timeout
        connection.abort()
        response_body.fail(timeout_error())
    except ConnectionError:  # the upstream went away mid-upload; the response side reports it
        connection.abort()
    except BaseException:  # cancelled (stop_upload) or anything unforeseen: a partial body never stays
        connection.abort()
        raise
    finally:
        response_body.wake()  # the read timeout starts now
        closer = getattr(chunks, "aclose", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer()


def upload_done(task: asyncio.Task[None]) -> None:
    """A body writer's failure is reported through the request (or ends with the
    response); marking it retrieved keeps asyncio from logging it again."""
    if not task.cancelled():
        task.exception()


def _abandon(connection: _Connection, response_body: BodyBuffer) -> None:
    connection.abort()
    response_body.fail(reset_error())
