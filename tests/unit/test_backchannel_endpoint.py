"""The back-channel logout endpoint (web/backchannel.py) over the memory store: the order of
the replay check, the sessions' ending and the token's record under store failures,
cancellation and concurrent deliveries; the provider's issuer as the hashes' namespace; a
body that is slow or cut off, against an in-process aiohttp server and a raw socket."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from joserfc import jws
from joserfc.jwk import KeySet, RSAKey

from authproxy.config.schema import OidcConfig
from authproxy.errors import ClientGone
from authproxy.oidc.logout import BACKCHANNEL_LOGOUT_EVENT
from authproxy.oidc.verify import verify_token
from authproxy.session.cache import SessionCache
from authproxy.session.cookies import SessionTicket
from authproxy.session.crypto import SecretBox
from authproxy.session.store import Session, Sessions
from authproxy.store.base import StoreUnavailable
from authproxy.store.memory import MemoryStore
from authproxy.web.backchannel import BackChannelLogout

ISSUER = "https://op.example.test"
ALIAS = "https://alias.example.test"  # the same provider's other issuer (a Cognito replica region, say)
CLIENT = "authproxy"
NOW = 1_800_000_000
KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True)
KEYS = KeySet.import_key_set({"keys": [KEY.as_dict(private=False)]})
OIDC = OidcConfig(provider="cognito", issuer=ISSUER, issuer_aliases=[ALIAS], client_id=CLIENT)
BOX = SecretBox(["k" * 40], b"authproxy session")


class Provider:
    """What the endpoint asks of the provider's client: the signature and registered claims."""

    async def verify(self, token, rules, now):
        return verify_token(token, KEYS, rules, now)


class Outage:
    """The memory store, with the named operations failing while ``down`` holds them."""

    def __init__(self, store):
        self.store = store
        self.down: set[str] = set()

    def __getattr__(self, name):
        operation = getattr(self.store, name)
        if not callable(operation):
            return operation

        async def call(*args, **kwargs):
            if name in self.down:
                raise StoreUnavailable(f"{name}: throttled")
            return await operation(*args, **kwargs)

        return call


class FakeRequest:
    """Just what ``handle`` reads of a request."""

    method = "POST"
    content_type = "application/x-www-form-urlencoded"

    def __init__(self, token):
        self.body = f"logout_token={token}".encode()
        self.content_length = len(self.body)
        self.content = self

    async def iter_any(self):
        yield self.body


def logout_token(sid="s-1", sub="alice", iss=ISSUER, jti="j-1"):
    claims = {"iss": iss, "aud": CLIENT, "iat": NOW, "exp": NOW + 120, "jti": jti,
              "events": {BACKCHANNEL_LOGOUT_EVENT: {}}, **({"sid": sid} if sid else {}), **({"sub": sub} if sub else {})}
    return jws.serialize_compact({"alg": "RS256", "kid": "k1", "typ": "logout+jwt"}, json.dumps(claims).encode(), KEY)


def site(store=None, body_timeout=10.0):
    store = store if store is not None else MemoryStore()
    sessions = Sessions(store, BOX, SessionCache(100, ttl=3600), idle_timeout=7200, provider=OIDC.issuer)  # as SignIn does
    endpoint = BackChannelLogout(OIDC, sessions, Provider, lambda: NOW, body_timeout=body_timeout)
    return endpoint, sessions


async def signed_in(sessions, sid="s-1", sub="alice", iss=ISSUER):
    ticket = SessionTicket.new()
    claims = {"iss": iss, "sub": sub, "sid": sid}
    await sessions.create(ticket, Session(sub=sub, claims=claims, access_token="AT", id_token=None, refresh_token="RT",
                                          access_expires_at=NOW + 300, created_at=NOW, expires_at=NOW + 3600,
                                          last_seen_at=NOW))
    return ticket


async def post(endpoint, token):
    response = await endpoint.handle(FakeRequest(token), "rid")
    return response.status, json.loads(response.text) if response.text else None


async def test_a_logout_whose_sessions_could_not_be_ended_is_carried_out_when_sent_again():
    """The sessions cannot be deleted (throttling), and in the same outage no other write
    lands either: nothing may stay recorded, or the provider's retry is refused as a replay
    while the sessions live on."""
    store = Outage(MemoryStore())
    endpoint, sessions = site(store)
    ticket = await signed_in(sessions)
    store.down = {"delete", "forget_logout_token"}  # (the latter: what the endpoint once undid its record with)
    status, body = await post(endpoint, logout_token())
    assert (status, body["error"]) == (503, "temporarily_unavailable")
    assert await sessions.load(ticket, NOW) is not None
    store.down = set()
    assert await post(endpoint, logout_token()) == (200, None)  # the provider's retry
    assert await sessions.load(ticket, NOW) is None
    assert (await post(endpoint, logout_token()))[0] == 400  # now it is recorded: a replay


async def test_a_logout_cancelled_before_its_record_is_carried_out_when_sent_again():
    store = Outage(MemoryStore())
    endpoint, sessions = site(store)
    ticket = await signed_in(sessions)
    deleting, never = asyncio.Event(), asyncio.Event()
    real_delete = store.store.delete

    async def stalled_delete(key):
        deleting.set()
        await never.wait()  # the handler is cancelled here (the process stops, the provider hangs up)
        return await real_delete(key)

    store.store.delete = stalled_delete
    first = asyncio.create_task(post(endpoint, logout_token()))
    await deleting.wait()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    store.store.delete = real_delete
    assert await post(endpoint, logout_token()) == (200, None)  # not refused as a replay
    assert await sessions.load(ticket, NOW) is None


async def test_a_failed_record_is_answered_503_and_the_retry_records_it():
    store = Outage(MemoryStore())
    endpoint, sessions = site(store)
    ticket = await signed_in(sessions)
    store.down = {"remember_logout_token"}
    status, body = await post(endpoint, logout_token())
    assert (status, body["error"]) == (503, "temporarily_unavailable")
    assert await sessions.load(ticket, NOW) is None  # the sessions are ended all the same
    store.down = set()
    assert await post(endpoint, logout_token()) == (200, None)  # ends nothing new, and records
    status, body = await post(endpoint, logout_token())
    assert (status, body) == (400, {"error": "invalid_request", "error_description": "this logout token was already used"})


async def test_concurrent_deliveries_of_one_token_both_succeed():
    """The provider (or two of its nodes) delivers the same token twice at once: the second
    finds the record the first wrote when it tries to write its own; still a success."""
    store = Outage(MemoryStore())
    endpoint, sessions = site(store)
    ticket = await signed_in(sessions)
    both_checked = asyncio.Event()
    real_seen = store.store.logout_token_seen
    checks = 0

    async def seen(*args):
        nonlocal checks
        answer = await real_seen(*args)
        checks += 1
        if checks == 2:
            both_checked.set()
        await both_checked.wait()  # neither goes on until both have checked
        return answer

    store.store.logout_token_seen = seen
    async with asyncio.timeout(10):  # a guard: with the record written first, the second is refused and this hangs
        results = await asyncio.gather(post(endpoint, logout_token()), post(endpoint, logout_token()))
    assert results == [(200, None), (200, None)]
    assert await sessions.load(ticket, NOW) is None
    assert await store.store.logout_token_seen(logout_token_hash(), NOW)


def logout_token_hash():
    from authproxy.oidc.logout import logout_token_hash as hashed

    return hashed(ISSUER, "j-1")


async def test_a_replayed_token_after_a_new_sign_in_leaves_the_new_session():
    endpoint, sessions = site()
    old = await signed_in(sessions)
    assert await post(endpoint, logout_token()) == (200, None)
    new = await signed_in(sessions)  # the same provider session id, signed in again
    status, body = await post(endpoint, logout_token())
    assert (status, body["error"]) == (400, "invalid_request")
    assert await sessions.load(old, NOW) is None and await sessions.load(new, NOW) is not None


async def test_a_logout_from_another_issuer_of_the_provider_ends_the_session():
    """Sessions and logouts are hashed with the provider's configured issuer, so an ID token
    from one of its issuers and a logout token from another meet."""
    endpoint, sessions = site()
    from_alias = await signed_in(sessions, sid="s-1", iss=ALIAS)
    canonical = await signed_in(sessions, sid="s-2", iss=ISSUER)
    assert await post(endpoint, logout_token(sid="s-1", iss=ISSUER)) == (200, None)
    assert await post(endpoint, logout_token(sid="s-2", iss=ALIAS, jti="j-2")) == (200, None)
    assert await sessions.load(from_alias, NOW) is None and await sessions.load(canonical, NOW) is None
    status, body = await post(endpoint, logout_token(iss="https://other.example.test", jti="j-3"))
    assert (status, body["error_description"]) == (400, "the logout token is not acceptable (wrong_issuer)")


async def test_a_sid_with_another_users_sub_ends_nothing():
    endpoint, sessions = site()
    ticket = await signed_in(sessions)
    assert await post(endpoint, logout_token(sid="s-1", sub="mallory")) == (200, None)  # "already logged out"
    assert await sessions.load(ticket, NOW) is not None
    assert await post(endpoint, logout_token(sid="s-1", sub="alice", jti="j-2")) == (200, None)
    assert await sessions.load(ticket, NOW) is None


# --- the body, from a real client over a real connection -------------------------------

@pytest.fixture
async def served():
    """An in-process aiohttp server (the low-level one, as the proxy's listener: handlers are
    not cancelled when a client leaves) whose one route is the endpoint; what ``handle``
    raised, if anything."""
    endpoint, _ = site(body_timeout=0.3)
    raised: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def route(request):
        try:
            return await endpoint.handle(request, "rid")
        except BaseException as exc:
            if not raised.done():
                raised.set_result(exc)
            return web.Response(status=499)  # as the proxy's handler does for ClientGone: never sent

    runner = web.ServerRunner(web.Server(route, handler_cancellation=False, access_log=None))
    await runner.setup()
    listener = web.TCPSite(runner, "127.0.0.1", 0)
    await listener.start()
    try:
        yield runner.addresses[0][:2], raised
    finally:
        await runner.cleanup()


def head(address, length):
    return (f"POST /oauth2/backchannel_logout HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {length}\r\n\r\n").encode()


async def test_a_body_that_does_not_arrive_in_time_is_answered_408_and_the_connection_closed(served):
    address, raised = served
    reader, writer = await asyncio.open_connection(*address)
    try:
        sent = b"logout_token=eyJ"
        writer.write(head(address, 400) + sent)  # and then nothing more
        await writer.drain()
        async with asyncio.timeout(10):  # a guard; the endpoint gives up after 0.3 s
            status_line, _, headers = (await reader.readuntil(b"\r\n\r\n")).partition(b"\r\n")
            fields = {name.lower(): value for name, _, value in
                      (line.partition(b": ") for line in headers.strip().split(b"\r\n"))}
            body = await reader.readexactly(int(fields[b"content-length"]))
            # aiohttp closes after a lingering read of the rest of the body (RFC 9112 9.6):
            # once it is sent, the connection ends.
            writer.write(b"x" * (400 - len(sent)))
            await writer.drain()
            assert await reader.read() == b""
    finally:
        writer.close()
    assert status_line == b"HTTP/1.1 408 Request Timeout"
    assert fields[b"connection"] == b"close" and fields[b"cache-control"] == b"no-store"
    assert fields[b"content-type"].startswith(b"application/json")
    assert json.loads(body) == {"error": "invalid_request", "error_description": "the body did not arrive in time"}
    assert not raised.done()  # answered; nothing escaped


async def test_a_client_that_leaves_mid_body_is_gone_not_an_error(served):
    address, raised = served
    _, writer = await asyncio.open_connection(*address)
    writer.write(head(address, 400) + b"logout_token=eyJ")
    await writer.drain()
    writer.transport.abort()  # a reset, mid-body
    async with asyncio.timeout(10):
        exc = await raised
    assert isinstance(exc, ClientGone)  # the request edge's "client left": never rendered, logged as 499
