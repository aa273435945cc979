"""Header templates and the spoofing guard."""

import pytest

from authproxy.policy.inject import UNSAFE, Placeholder, SpoofGuard, parse_template

VALUES = {"access_token": "AT", "id_token": "IT", "sub": "u1", "email": "a@example.com"}
CLAIMS = {"email": "a@example.com", "cognito:groups": ["admins", "ops"], "https://example.com/roles": "r1",
          "address": {"country": "NL"}, "n": 3}


@pytest.mark.parametrize(
    ("template", "rendered"),
    [
        ("Bearer {access_token}", "Bearer AT"),
        ("{id_token}", "IT"),
        ("{sub}/{email}", "u1/a@example.com"),
        ("{claims.email}", "a@example.com"),
        ("{claims.cognito:groups}", "admins,ops"),
        ('{claims["https://example.com/roles"]}', "r1"),
        ("{claims['https://example.com/roles']}", "r1"),
        ("{claims.address.country}", "NL"),
        ("{claims.n}", "3"),
        ("{{literal}} {sub}", "{literal} u1"),
        ("plain", "plain"),
        ("{claims.missing}", None),  # a missing claim leaves the header out
        ("x-{claims.address.city}", None),
    ],
)
def test_render(template, rendered):
    assert parse_template(template).render(VALUES, CLAIMS) == rendered


@pytest.mark.parametrize(
    "template", ["{token}", "{claims}", "{claims.}", "{__class__}", "{sub.__class__}", "{", "}", "a\r\nb", "{claims[x]}"]
)
def test_rejected_templates(template):
    with pytest.raises(ValueError):
        parse_template(template)


def test_unsafe_values_are_refused():
    for bad in ({"email": "a@x\r\nX-Evil: 1"}, {"email": "caf\u00e9\u4e2d"}):
        assert parse_template("{claims.email}").render(VALUES, bad) is UNSAFE
    assert parse_template("{claims.email}").render(VALUES, {"email": "caf\u00e9"}) == "caf\u00e9"  # Latin-1 is fine


def test_placeholders_used():
    assert parse_template("{sub} {claims.a}").uses == {"sub", "claims"}
    assert parse_template("{claims.a.b}").parts == (Placeholder("claims", ("a", "b")),)


@pytest.mark.parametrize(
    ("name", "pass_authorization", "stripped"),
    [
        ("Authorization", False, True),
        ("authorization", True, False),
        ("X-User-Email", False, True),  # injected by some route
        ("x_user_email", False, True),
        ("X-Auth-Request-User", False, True),
        ("X-Authproxy-Assertion", False, True),
        ("X-Amzn-Oidc-Data", False, True),
        ("X-Forwarded-User", False, True),
        ("X-Forwarded-Access-Token", False, True),
        ("Content-Type", False, False),
        ("X-User-Agent-Hint", False, False),
    ],
)
def test_spoof_guard(name, pass_authorization, stripped):
    assert SpoofGuard(["X-User-Email"]).strips(name, pass_authorization) is stripped


@pytest.mark.parametrize("name", ["X-HTTP-Method-Override", "x-http-method", "X_Method_Override"])
def test_method_overrides_are_stripped_unless_the_route_allows_them(name):
    guard = SpoofGuard([])
    assert guard.strips(name, False) is True
    assert guard.strips(name, False, allow_method_override=True) is False
