"""The one description of the original request a forward-auth caller sends (policy/original.py)."""

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from authproxy.errors import BadRequest
from authproxy.policy.original import describe


def headers(*pairs):
    return CIMultiDictProxy(CIMultiDict(pairs))


@pytest.mark.parametrize(
    ("pairs", "method", "target", "host"),
    [
        ([("X-Original-URI", "/a?x=1"), ("X-Original-Method", "post"), ("Host", "h")], "POST", "/a?x=1", "h"),
        ([("X-Forwarded-Uri", "/a"), ("X-Forwarded-Method", "PUT"), ("X-Forwarded-Host", "app:8443")], "PUT", "/a", "app:8443"),
        # both conventions at once, agreeing (the shipped nginx example sets both)
        ([("X-Forwarded-Uri", "/a"), ("X-Original-URI", "/a"), ("X-Forwarded-Method", "GET"),
          ("X-Original-Method", "get")], "GET", "/a", ""),
        ([("X-Original-URI", "/a")], "GET", "/a", ""),  # no method named: GET
        ([("X-Forwarded-Uri", "/a"), ("X-Forwarded-Host", "app, app")], "GET", "/a", "app"),
    ],
)
def test_one_description(pairs, method, target, host):
    original = describe(headers(*pairs))
    assert (original.method, original.target, original.host) == (method, target, host)


@pytest.mark.parametrize(
    "pairs",
    [
        # the bypass through nginx: the caller set X-Original-*, the client added X-Forwarded-*
        [("X-Original-URI", "/admin/secret"), ("X-Forwarded-Uri", "/open/x")],
        [("X-Original-URI", "/ro/write"), ("X-Original-Method", "POST"), ("X-Forwarded-Method", "GET")],
        # the same the other way round (a caller that sets X-Forwarded-*, the client X-Original-*)
        [("X-Forwarded-Uri", "/admin"), ("X-Original-URI", "/open")],
        [("X-Forwarded-Uri", "/a"), ("X-Forwarded-Method", "DELETE"), ("X-Original-Method", "GET")],
        # one header sent twice, or a host list naming two hosts
        [("X-Original-URI", "/admin"), ("X-Original-URI", "/open")],
        [("X-Forwarded-Uri", "/a"), ("X-Forwarded-Host", "admin.example.com, open.example.com")],
        [("X-Forwarded-Uri", "/a"), ("X-Forwarded-Host", "a"), ("X-Forwarded-Host", "b")],
        # nothing to check
        [("X-Forwarded-Method", "GET")],
        [("X-Forwarded-Uri", "")],
    ],
)
def test_two_descriptions_that_disagree_or_none_are_refused(pairs):
    with pytest.raises(BadRequest) as raised:
        describe(headers(*pairs))
    assert raised.value.status == 400
