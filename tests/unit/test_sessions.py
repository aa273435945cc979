"""Session tickets, cookie names and attributes, the interim store, refresh merging."""

import pytest

from authproxy.oidc.client import TokenResponse
from authproxy.session.cookies import CookiePolicy, SessionTicket, request_cookies, without_own_cookies
from authproxy.session.crypto import SecretBox
from authproxy.session.store import MemorySessionStore, Session

BOX = SecretBox(["k" * 40], b"authproxy session")


def session(**changes):
    values = dict(sub="alice", claims={"sub": "alice"}, access_token="AT-1", id_token="IT-1", refresh_token="RT-1",
                  access_expires_at=1300, created_at=1000, expires_at=5000, last_seen_at=1000)
    values.update(changes)
    return Session(**values)


def test_ticket_round_trip_and_strength():
    ticket = SessionTicket.new()
    assert SessionTicket.parse(ticket.encode()) == ticket
    assert len(ticket.session_id) == 32 and len(ticket.secret) == 43  # 192 and 256 random bits
    assert ticket.session_id not in ticket.key and ticket.secret not in repr(ticket)
    for bad in (None, "", "abc.def", ticket.encode() + "x", ticket.session_id):
        assert SessionTicket.parse(bad) is None


@pytest.mark.parametrize(
    ("https", "name", "domain", "session_name", "transaction_prefix", "secure"),
    [
        (True, None, None, "__Host-authproxy", "__Host-authproxy-txn-", True),
        (True, None, "example.com", "__Secure-authproxy", "__Host-authproxy-txn-", True),
        (False, None, None, "authproxy", "authproxy-txn-", False),
        (True, "sid", None, "sid", "__Host-sid-txn-", True),
    ],
)
def test_cookie_names(https, name, domain, session_name, transaction_prefix, secure):
    policy = CookiePolicy.build(https=https, cookie_name=name, cookie_domain=domain)
    assert (policy.session_name, policy.transaction_prefix, policy.secure) == (session_name, transaction_prefix, secure)


def test_cookie_attributes():
    policy = CookiePolicy.build(https=True, cookie_name=None, cookie_domain=None)
    header = policy.set_session("v", 3600)
    assert header == "__Host-authproxy=v; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax; Secure"
    shared = CookiePolicy.build(https=True, cookie_name=None, cookie_domain="example.com").set_session("v", 60)
    assert "Domain=example.com" in shared and shared.startswith("__Secure-authproxy=")
    assert policy.clear_session().startswith("__Host-authproxy=; Path=/; Max-Age=0")
    assert policy.transaction_name("state-a") != policy.transaction_name("state-b")


def test_own_cookies_removed_from_the_upstream_cookie_header():
    policy = CookiePolicy.build(https=False, cookie_name=None, cookie_domain=None)
    header = f"a=1; authproxy=TICKET; {policy.transaction_name('s')}=TXN; b=2"
    assert without_own_cookies(header, policy) == "a=1; b=2"
    assert without_own_cookies("authproxy=x", policy) is None
    assert request_cookies(header)["authproxy"] == "TICKET"
    # someone else's malformed cookie does not hide ours; the first of two same names wins
    assert request_cookies('prefs={"a":1}; theme=dark mode; authproxy=T1; authproxy=T2')["authproxy"] == "T1"
    assert request_cookies("=x; ;novalue") == {}


def test_store_seals_and_expires():
    store = MemorySessionStore(BOX)
    ticket = SessionTicket.new()
    store.put(ticket, session())
    assert store.get(ticket, 1500).access_token == "AT-1"
    assert store.get(SessionTicket(ticket.session_id, SessionTicket.new().secret), 1500) is None  # wrong secret
    assert len(store) == 1  # and the item was not deleted because of it
    assert store.get(ticket, 5000) is None and len(store) == 0  # past expires_at


def test_store_is_bounded():
    store = MemorySessionStore(BOX, max_entries=2)
    tickets = [SessionTicket.new() for _ in range(3)]
    for ticket in tickets:
        store.put(ticket, session())
    assert store.get(tickets[0], 1500) is None and store.get(tickets[2], 1500) is not None


@pytest.mark.parametrize(
    ("refresh_token", "expected"),
    [(None, "RT-1"), ("RT-2", "RT-2")],  # no refresh token in the response: keep the old one
)
def test_refresh_merge(refresh_token, expected):
    tokens = TokenResponse(access_token="AT-2", id_token=None, refresh_token=refresh_token, expires_in=60,
                           token_type="Bearer", scope=None)
    refreshed = session().refreshed(tokens, now=2000)
    assert refreshed.access_token == "AT-2" and refreshed.refresh_token == expected
    assert refreshed.id_token == "IT-1" and refreshed.access_expires_at == 2060
    assert "AT-2" not in repr(refreshed)
