"""A signed-in request's identity without an await (``SignIn.known_identity``): given while
the session cache still holds the very entry it came from, fresh, with nothing to do for it
(no touch, no refresh, no ID token to verify); otherwise None, and the usual way decides."""

from __future__ import annotations

import base64
import itertools
import json
import random
from dataclasses import replace

import pytest

from authproxy import metrics
from authproxy.config.load import parse_config
from authproxy.session.cookies import SessionTicket
from authproxy.session.store import Session
from authproxy.store.memory import MemoryStore

NOW = 1_800_000_000
CONFIG = """
public_url: https://app.example.com
oidc: {issuer: "https://idp.example.com", client_id: c, client_secret: s}
session: {secrets: ["0123456789abcdef0123456789abcdef"], refresh_before_expiry: 60s}
store: {cache: {ttl: 30s}}
routes: [{name: app, upstream: "http://127.0.0.1:9", auth: login}]
"""


class Clocks:
    def __init__(self):
        self.wall, self.monotonic = float(NOW), 1000.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.monotonic += seconds


class Request:
    def __init__(self, cookie: str):
        self.headers = {"Cookie": cookie}


def signed_in_service(clocks: Clocks):
    from authproxy.web.signin import SignIn

    class NoProvider:
        client = None

    sign_in = SignIn(parse_config(CONFIG, "test.yaml", {}), NoProvider(), MemoryStore(),  # type: ignore[arg-type]
                     clock=lambda: clocks.wall)
    sign_in.sessions._cache._clock = lambda: clocks.monotonic  # the cache's TTL runs on it
    return sign_in


def id_token(claims: dict) -> str:
    """An unsigned compact JWT carrying ``claims`` (the session's claims are then read from it)."""
    def b64(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'RS256', 'kid': 'k'})}.{b64(claims)}.c2ln"


def a_session(**changes) -> Session:
    claims = changes.pop("claims", {"sub": "alice", "exp": NOW + 3600, "iat": NOW})
    fields = dict(sub="alice", claims=claims, access_token=f"AT-{next(_serial)}", id_token=id_token(claims),
                  refresh_token=None, access_expires_at=NOW + 600, created_at=NOW,
                  expires_at=NOW + 8 * 3600, last_seen_at=NOW, access_issued_at=NOW)
    fields.update(changes)
    return Session(**fields)


_serial = itertools.count()


async def start(clocks: Clocks, **changes):
    sign_in = signed_in_service(clocks)
    ticket = SessionTicket.new()
    await sign_in.sessions.create(ticket, a_session(**changes))
    cookie = f"other=1; {sign_in.cookies.session_name}={ticket.encode()}"
    return sign_in, ticket, cookie


async def test_a_session_found_with_nothing_to_do_is_known_until_its_entry_changes():
    clocks = Clocks()
    sign_in, ticket, cookie = await start(clocks)
    assert sign_in.known_identity(cookie, False) is None  # not looked up the usual way yet
    session = await sign_in.session_for_route(Request(cookie), NOW)
    hits = metrics.SESSION_CACHE.hits
    known = sign_in.known_identity(cookie, False)
    assert known is not None and known.sub == "alice" and known.access_token == session.access_token
    assert known.claims is session.claims and known.id_token == session.id_token
    assert sign_in.known_identity(cookie, False) is known  # built once
    assert metrics.SESSION_CACHE.hits == hits + 2  # each counted as the cache hit it is
    assert sign_in.known_identity(cookie.replace("other=1; ", ""), False) is None  # another header: the usual way
    await sign_in.sessions.end(ticket)  # signed out: the entry is gone
    assert sign_in.known_identity(cookie, False) is None
    assert cookie not in sign_in._known  # nor its tokens held here
    assert await sign_in.session_for_route(Request(cookie), NOW) is None


async def test_the_cache_ttl_a_touch_a_refresh_margin_and_an_unverified_id_token_end_it():
    clocks = Clocks()
    sign_in, ticket, cookie = await start(clocks, refresh_token="RT")
    await sign_in.session_for_route(Request(cookie), NOW)
    assert sign_in.known_identity(cookie, False) is not None
    assert sign_in._known[cookie].until == NOW + 60  # the touch comes before the refresh margin here
    clocks.wall += 60  # the touch interval (60 s): the store must hear of the activity
    assert sign_in.known_identity(cookie, False) is None
    clocks.wall -= 60
    assert sign_in.known_identity(cookie, False) is not None

    clocks.monotonic += 30  # the cache's TTL, on its own clock
    assert sign_in.known_identity(cookie, False) is None
    assert cookie not in sign_in._known  # a stale entry is not held on to
    assert sign_in.refresher.ready_until(a_session(refresh_token="RT")) == NOW + 540  # 600 s token, 60 s margin
    assert sign_in.refresher.ready_until(a_session(refresh_token=None)) == float("inf")  # nothing to refresh with

    sign_in.refresher._verify_id_token = lambda *args, **kwargs: None  # a verifier, and an ID token waiting for it
    assert sign_in.refresher.ready_until(a_session(unverified_id_token="IT-2")) == float("-inf")


async def test_routes_that_inject_the_id_token_stop_at_its_margin_too():
    clocks = Clocks()
    sign_in, ticket, cookie = await start(clocks, refresh_token="RT", claims={"sub": "alice", "exp": NOW + 40, "iat": NOW})
    await sign_in.session_for_route(Request(cookie), NOW)
    assert sign_in.known_identity(cookie, True) is not None
    clocks.wall += 20  # half of the ID token's 40 s lifetime: its margin, not the access token's
    assert sign_in.known_identity(cookie, True) is None
    assert sign_in.known_identity(cookie, False) is not None


async def test_newer_unsaved_tokens_are_never_hidden_by_a_known_identity():
    from authproxy.session.pending import PendingWrite

    clocks = Clocks()
    sign_in, ticket, cookie = await start(clocks)
    await sign_in.session_for_route(Request(cookie), NOW)
    key = sign_in.cookie_memo.ticket(cookie)[1]
    sign_in.sessions.pending.hold(key, PendingWrite(ticket, replace(a_session(), access_token="AT-2"), 1, b"", "w"))
    assert sign_in.known_identity(cookie, False) is None
    assert (await sign_in.session_for_route(Request(cookie), NOW)).access_token == "AT-2"


@pytest.mark.parametrize("seed", range(5))
async def test_a_known_identity_is_always_what_the_usual_way_gives(seed):
    """A random walk through time, touches, sign-outs and sign-ins: whenever an identity is
    known, the usual way (which writes what it must) gives the same session."""
    from authproxy.session.pending import PendingWrite

    rng = random.Random(seed)
    clocks = Clocks()
    sign_in, ticket, cookie = await start(clocks)
    sessions = sign_in.sessions
    answered = 0
    for _ in range(400):
        clocks.advance(rng.choice([0, 0, 0, 0, 1, 1, 5, 20, 31, 61]))
        key = sign_in.cookie_memo.ticket(cookie)[1]
        event = rng.random()
        if event < 0.02:
            await sessions.end(ticket)
        elif event < 0.05:  # newer tokens this process could not save yet, then saved
            current = await sessions.load(ticket, int(clocks.wall))
            if current is not None:
                sessions.pending.hold(key, PendingWrite(ticket, replace(current[0], access_token=f"AT-{next(_serial)}"),
                                                        current[1], b"", "w"))
        elif event < 0.08:
            sessions.pending.release(key)
        elif event < 0.10:
            sessions.forget(ticket)  # evicted from this process's cache (LRU, bytes, another replica's news)
        elif event < 0.13:
            now = int(clocks.wall)
            ticket = SessionTicket.new()
            await sessions.create(ticket, a_session(last_seen_at=now, created_at=now, expires_at=now + 8 * 3600,
                                                    claims={"sub": "alice", "exp": now + 3600, "iat": now}))
            cookie = f"other=1; {sign_in.cookies.session_name}={ticket.encode()}"
        known = sign_in.known_identity(cookie, False)
        usual = await sign_in.session_for_route(Request(cookie), int(clocks.wall))
        if known is not None:
            answered += 1
            assert usual is not None and known.claims is usual.claims
            assert (known.access_token, known.id_token) == (usual.access_token, usual.id_token)
    assert answered > 60  # the walk exercised the known path, not only the usual one


async def test_the_access_tokens_refresh_margin_ends_it_before_a_touch_would():
    clocks = Clocks()
    sign_in, ticket, cookie = await start(clocks, refresh_token="RT", access_expires_at=NOW + 40)
    await sign_in.session_for_route(Request(cookie), NOW)
    clocks.wall += 19
    assert sign_in.known_identity(cookie, False) is not None
    clocks.wall += 1  # half the token's 40 s lifetime: due for a refresh, which only the usual way does
    assert sign_in.known_identity(cookie, False) is None
