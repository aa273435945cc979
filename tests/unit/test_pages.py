"""The proxy's own error pages (authproxy.proxy.pages): a way out, nothing secret, all escaped."""

from __future__ import annotations

import json

from authproxy.proxy.pages import error_response

HOSTILE = '<script>alert("x")</script>'


def page(status: int, **kwargs) -> str:
    response = error_response(status, "e", kwargs.pop("message", "m"), "req-1", accept="text/html", **kwargs)
    assert response.content_type == "text/html" and response.status == status
    return response.text


def test_403_names_the_user_and_offers_sign_out_and_home():
    text = page(403, message="access denied: requires membership in one of: admins",
                signed_in_as="bob@example.com", links=[("Sign out, to use another account", "/oauth2/sign_out")])
    assert "You are signed in as <b>bob@example.com</b>." in text
    assert '<a href="/oauth2/sign_out">Sign out, to use another account</a>' in text
    assert '<a href="/">Go to the home page</a>' in text
    assert text.index("sign_out") < text.index('href="/"')  # the way out first
    assert "Request id: <code>req-1</code>" in text


def test_retry_on_5xx_only():
    assert '<a href="">Try again</a>' in page(503)
    assert '<a href="">Try again</a>' in page(502) and '<a href="">Try again</a>' in page(504)
    assert "Try again" not in page(403) and "Try again" not in page(404)
    assert "signed in as" not in page(503)


def test_everything_shown_is_escaped():
    text = page(403, message=HOSTILE, signed_in_as=HOSTILE, links=[(HOSTILE, '/x?a=1&b="2"')])
    assert "<script" not in text
    assert text.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;") == 3
    assert 'href="/x?a=1&amp;b=&quot;2&quot;"' in text


def test_json_carries_no_page_extras():
    response = error_response(403, "forbidden", "m", "req-1", accept="application/json", signed_in_as="bob", links=[("a", "/b")])
    assert json.loads(response.text) == {"error": "forbidden", "message": "m", "request_id": "req-1"}
