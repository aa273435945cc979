"""The cookie codec on hostile Cookie headers: it never raises, the first of two cookies
of one name wins, the proxy's own cookies never survive ``without_own_cookies``, a ticket
parses only from its exact shape, and the transaction slots stay within their bound."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from authproxy.session.cookies import (
    TRANSACTION_SLOTS,
    CookiePolicy,
    SessionTicket,
    choose_slot,
    request_cookies,
    without_own_cookies,
)

POLICIES = [CookiePolicy.build(https=https, cookie_name=name, cookie_domain=None)
            for https in (True, False) for name in (None, "sid")]
token = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~", min_size=1,
                max_size=12)
value = st.text(alphabet=st.characters(blacklist_characters=";", blacklist_categories=("Cs",)), max_size=30).map(str.strip)
own_names = st.sampled_from(["authproxy", "__Host-authproxy", "sid", "__Host-sid-txn-0", "authproxy-txn-1",
                             "authproxy-txn-9", "__Host-authproxy-txn-2", "sid-txn-0123456789abcdef"])
pairs = st.lists(st.tuples(token | own_names, value), max_size=10)
junk = st.text(max_size=200)


@given(pairs, st.sampled_from(["; ", ";", " ; "]))
def test_the_first_of_each_name_wins(cookies, separator):
    header = separator.join(f"{name}={val}" for name, val in cookies)
    parsed = request_cookies(header)
    expected: dict[str, str] = {}
    for name, val in cookies:
        expected.setdefault(name, val)
    assert parsed == expected


@given(pairs | st.just([]), junk, st.sampled_from(POLICIES))
def test_own_cookies_never_reach_an_upstream(cookies, noise, policy):
    header = "; ".join(f"{name}={val}" for name, val in cookies) + noise
    kept = without_own_cookies(header, policy)
    if kept is not None:
        for name in request_cookies(kept):
            assert not policy.is_ours(name)
        assert kept.strip() == kept and kept != ""


@given(junk | st.from_regex(r"[A-Za-z0-9_-]{32}\.[A-Za-z0-9_-]{43}", fullmatch=True))
def test_a_ticket_parses_only_from_its_exact_shape(text):
    ticket = SessionTicket.parse(text)
    if ticket is not None:
        assert ticket.encode() == text and "***" in repr(ticket) and ticket.secret not in repr(ticket)


@given(st.lists(st.none() | st.integers(0, 2**63), min_size=TRANSACTION_SLOTS, max_size=TRANSACTION_SLOTS))
def test_a_new_sign_in_takes_a_free_slot_else_the_oldest(started):
    slot = choose_slot(started)
    assert 0 <= slot < TRANSACTION_SLOTS
    if None in started:
        assert started[slot] is None
    else:
        assert started[slot] == min(started)  # type: ignore[type-var]


@given(junk, st.sampled_from(POLICIES))
def test_slot_names_are_recognised_exactly(name, policy):
    slot = policy.slot_of(name)
    if slot is not None:
        assert policy.slot_name(slot) == name
