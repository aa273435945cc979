"""Open-redirect table for the rd parameter."""

import pytest

from authproxy.oidc.redirects import RedirectPolicy

POLICY = RedirectPolicy(["app.example.com", "*.tenants.example.com"], ["docs.example.org", "*.partner.example"])


@pytest.mark.parametrize(
    "target",
    [
        "/",
        "/dashboard?tab=1",
        "/a/b%20c",
        "https://app.example.com/x",
        "http://app.example.com:8080/x",
        "https://acme.tenants.example.com/",
        "https://docs.example.org/guide",
        "https://a.b.partner.example/",
        "https://APP.example.com/x",
    ],
)
def test_accepted(target):
    assert POLICY.safe_target(target) == target


@pytest.mark.parametrize(
    "target",
    [
        None,
        "",
        "//evil.example",
        "///evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "/%2Fevil.example",
        "/%2fevil.example",
        "%2F%2Fevil.example",
        "/%5Cevil.example",
        "/%252F%252Fevil.example",  # double encoded
        "https://evil.example/",
        "https://app.example.com.evil.example/",
        "https://evil.example/app.example.com",
        "https://app.example.com@evil.example/",
        "https://user:pw@app.example.com/",
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "data:text/html,<script>",
        "ftp://app.example.com/",
        "evil.example",
        "app.example.com/x",
        "/ok\r\nSet-Cookie: x=1",
        "/ok%0d%0aSet-Cookie:x",
        "/tab\there",
        "https://tenants.example.com/",  # the wildcard needs a label before the suffix
        "https://partner.example/",
        "https://app.example.com:99999/",
        "http:///evil.example",
        "/" + "a" * 5000,
        "/" + "a" * 512,  # longer than MAX_TARGET_LENGTH
        "/" + "\u00e9" * 200,  # short, but long once percent-encoded
        "https://app.example.com/" + "a" * 500,
    ],
)
def test_rejected_becomes_root(target):
    assert POLICY.safe_target(target) == "/"


@pytest.mark.parametrize(
    ("target", "kept"),
    [
        ("/dashboard?tab=1#top", "/dashboard?tab=1"),  # path and query only: a browser never sends a fragment
        ("https://app.example.com/x?y=1#frag", "https://app.example.com/x?y=1"),
        ("/a b", "/a%20b"),
        ("/caf\u00e9", "/caf%C3%A9"),
        ('/q?x="<y>"', "/q?x=%22%3Cy%3E%22"),
        ("/" + "a" * 511, "/" + "a" * 511),
        ("/#only-a-fragment", "/"),
    ],
)
def test_kept_short_and_encoded(target, kept):
    assert POLICY.safe_target(target) == kept
