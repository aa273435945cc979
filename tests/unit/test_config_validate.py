"""Rules across sections: every problem in one pass, each with its path and line."""

import pytest

from authproxy.config import parse_config
from authproxy.config.validate import validate
from authproxy.errors import ConfigError

THREE_MISTAKES = """\
listen: "0.0.0.0:8080"
workers: 2
public_url: "http://app.example.com"
oidc: {issuer: "https://idp.example.com", client_id: c, client_secret: s}
session:
  cookie_name: "__Host-s"
  secrets: ["zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"]
routes:
  - name: api
    upstream: "http://127.0.0.1:1"
    auth: bearer
  - name: web
    upstream: "http://127.0.0.1:2"
    auth: login
"""


def issues_of(text, env=None):
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "test.yaml", env or {})
    return caught.value.issues


def test_three_cross_field_mistakes_are_three_errors_with_lines():
    issues = issues_of(THREE_MISTAKES)
    found = {(issue.path, issue.line) for issue in issues}
    assert found == {("workers", 2), ("session.cookie_name", 6), ("routes[0].auth", 11)}, issues
    assert any("oidc.audiences" in issue.message for issue in issues)
    assert any("https public_url" in issue.message for issue in issues)
    assert any("store backend memory" in issue.message for issue in issues)


def test_every_route_is_checked_not_only_the_first():
    text = """\
routes:
  - {name: a, upstream: "http://127.0.0.1:1", auth: login}
  - {name: b, upstream: "http://127.0.0.1:1", auth: bearer}
  - {name: c, upstream: "http://127.0.0.1:1", auth: public, assertion: false, service_token: {scopes: [x]}}
"""
    paths = {issue.path for issue in issues_of(text)}
    assert paths == {"routes[0].auth", "routes[1].auth", "routes[2].service_token"}


def test_an_environment_value_is_not_echoed_by_a_cross_field_rule():
    text = THREE_MISTAKES.replace("auth: login", "auth: login\n    match: {path_prefix: '${P}'}")
    issues = issues_of(text, {"P": "/oauth2/secretish"})
    assert any(issue.path == "routes[1].match.path_prefix" for issue in issues)
    assert "secretish" not in "\n".join(issue.message for issue in issues)


def test_a_valid_configuration_has_no_problems():
    text = THREE_MISTAKES.replace("workers: 2", "workers: 1").replace("__Host-s", "s").replace(
        "auth: bearer", "auth: login")
    assert validate(parse_config(text, "test.yaml", {})) == []


def test_a_routes_own_rules_and_the_providers_come_all_at_once_with_lines():
    # These were model validators that stopped at the first problem of their section.
    text = """\
public_url: "http://app.example.com"
oidc: {issuer: "https://idp.example.com", client_id: c, client_auth: none, client_secret: s, scopes: [email]}
session: {secrets: ["zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"]}
routes:
  - name: open
    upstream: "http://127.0.0.1:1"
    auth: public
    assertion: true
    inject: {X-User: "{sub}"}
    allow: {groups: [a]}
"""
    found = {(issue.path, issue.line) for issue in issues_of(text)}
    assert {("oidc.client_secret", 2), ("oidc.scopes", 2), ("routes[0].assertion", 8),
            ("routes[0].inject.X-User", 9), ("routes[0].allow", 10)} <= found, found
