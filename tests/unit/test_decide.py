"""decide(): every auth mode x identity state x allow rule, in-process, without sockets."""

import pytest

from authproxy import metrics
from authproxy.config.schema import Route as RouteConfig
from authproxy.policy import decide as d
from authproxy.policy.decide import Facts, Identity, decide
from authproxy.policy.routes import Route

MODES = ("public", "optional", "login", "bearer", "login_or_bearer")
ADMIN = {"sub": "u1", "email": "a@example.com", "email_verified": True, "groups": ["admins"], "scope": "read write"}
OTHER = {"sub": "u2", "email": "b@example.com", "email_verified": True, "groups": ["staff"], "scope": "read"}


def route(mode, allow=None):
    return Route(RouteConfig.model_validate({"name": "r", "upstream": "http://127.0.0.1:1", "auth": mode,
                                             **({"allow": allow} if allow else {})}))


def session(claims):
    return Identity(claims["sub"], claims, "at", "it", d.SESSION)


def bearer(claims):
    return Identity(claims["sub"], claims, "at", None, d.BEARER)


NAVIGATION = Facts(navigation=True)
API_CALL = Facts(navigation=False)
NGINX_NAVIGATION = Facts(navigation=True, redirect=False)

# (identity state, identity, facts, which modes can produce it)
STATES = [
    ("no credentials, browser", None, NAVIGATION, MODES),
    ("no credentials, API client", None, API_CALL, MODES),
    ("no credentials, nginx auth_request", None, NGINX_NAVIGATION, MODES),
    ("session", session(ADMIN), d.NOTHING_ELSE, ("optional", "login", "login_or_bearer")),
    ("bearer", bearer(ADMIN), d.NOTHING_ELSE, ("bearer", "login_or_bearer")),
    ("invalid token", None, Facts(problem=d.INVALID, detail="expired"), ("bearer", "login_or_bearer")),
    ("two Authorization headers", None, Facts(problem=d.AMBIGUOUS), ("bearer", "login_or_bearer")),
    ("keys not loaded", None, Facts(problem=d.NOT_READY), ("bearer", "login_or_bearer")),
    ("keys unavailable", None, Facts(problem=d.KEYS_UNAVAILABLE), ("bearer", "login_or_bearer")),
    ("preflight", None, d.PREFLIGHT, MODES),
]


def expected(mode, state, identity, facts):
    """The contract, written out case by case (guide.md, "Route rules")."""
    if mode == "public":
        return d.ALLOW_PUBLIC
    if state == "preflight":
        return d.ALLOW_PREFLIGHT
    if state == "two Authorization headers":
        return d.SEVERAL_AUTHORIZATIONS
    if state == "invalid token":
        return d.Unauthorized('Bearer realm="authproxy", error="invalid_token", error_description="expired"',
                              "the access token is not valid (expired)", "expired", api=True)
    if state == "keys not loaded":
        return d.Unavailable("not_ready", "token checks are not available yet", "not_ready")
    if state == "keys unavailable":
        return d.Unavailable("idp_unavailable", "token checks are not available right now", "jwks")
    if identity is not None:
        return d.ALLOW_SESSION if identity.via == d.SESSION else d.ALLOW_BEARER
    if mode == "optional":
        return d.ALLOW_PUBLIC
    if mode == "bearer":
        return d.NO_TOKEN
    if state == "no credentials, browser":
        return d.SIGN_IN
    return d.Unauthorized('Bearer realm="authproxy"', "sign-in required", "no_session", api=False,
                          sign_in_link=state != "no credentials, nginx auth_request")


CASES = [(mode, state, identity, facts) for state, identity, facts, modes in STATES for mode in modes]


@pytest.mark.parametrize(("mode", "state", "identity", "facts"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_every_mode_and_identity_state_without_allow_rules(mode, state, identity, facts):
    assert decide(route(mode), identity, facts) == expected(mode, state, identity, facts)


ALLOW_RULES = [
    ({"groups": ["admins"]}, "requires membership in one of: admins", ()),
    ({"emails": ["a@example.com"]}, "requires one of the allowed email addresses", ()),
    ({"email_domains": ["example.com"], "groups": ["admins"]}, "requires membership in one of: admins", ()),
    ({"claims": {"sub": ["u1"]}}, None, ()),
]


@pytest.mark.parametrize("mode", ["login", "bearer", "login_or_bearer"])
@pytest.mark.parametrize(("allow", "reason", "_scopes"), ALLOW_RULES)
def test_allow_rules_admit_or_forbid_with_what_was_missing(mode, allow, reason, _scopes):
    via = bearer if mode == "bearer" else session
    admitted = decide(route(mode, allow), via(ADMIN), d.NOTHING_ELSE)
    assert admitted == (d.ALLOW_BEARER if mode == "bearer" else d.ALLOW_SESSION)
    refused = decide(route(mode, allow), via(OTHER), d.NOTHING_ELSE)
    assert isinstance(refused, d.Forbidden) and refused.outcome == d.FORBIDDEN and refused.reason == "allow_rules"
    assert refused.identity.sub == "u2" and refused.challenge is None
    if reason is not None:
        assert refused.denial.reason == reason


def test_missing_scopes_are_an_insufficient_scope_challenge():
    refused = decide(route("bearer", {"scopes": ["write"]}), bearer(OTHER), d.NOTHING_ELSE)
    assert isinstance(refused, d.Forbidden)
    assert refused.challenge == 'Bearer realm="authproxy", error="insufficient_scope", scope="write"'
    assert decide(route("bearer", {"scopes": ["write"]}), bearer(ADMIN), d.NOTHING_ELSE) == d.ALLOW_BEARER


@pytest.mark.parametrize("mode", ["login", "bearer", "login_or_bearer"])
def test_allow_rules_never_admit_an_absent_identity(mode):
    decision = decide(route(mode, {"groups": ["admins"]}), None, NAVIGATION)
    assert not isinstance(decision, d.Allow)


def test_an_unverified_email_is_not_an_email():
    claims = {**ADMIN, "email_verified": False}
    refused = decide(route("login", {"email_domains": ["example.com"]}), session(claims), d.NOTHING_ELSE)
    assert isinstance(refused, d.Forbidden)


def test_passing_decisions_are_shared_values():
    # The hot path allocates nothing in decide(): a pass is one of a few constants.
    first = decide(route("login"), session(ADMIN), d.NOTHING_ELSE)
    assert first is decide(route("login"), session(OTHER), d.NOTHING_ELSE) is d.ALLOW_SESSION
    assert decide(route("public"), None) is d.ALLOW_PUBLIC


def test_outcomes_are_the_metric_label_values():
    assert (d.PUBLIC, d.SESSION, d.BEARER, d.REDIRECTED, d.UNAUTHORIZED, d.FORBIDDEN) == (
        metrics.AUTH_PUBLIC, metrics.AUTH_SESSION, metrics.AUTH_BEARER, metrics.AUTH_REDIRECTED,
        metrics.AUTH_UNAUTHORIZED, metrics.AUTH_FORBIDDEN)


@pytest.mark.parametrize(("mode", "has_token", "uses"), [
    ("bearer", False, True), ("bearer", True, True), ("login_or_bearer", True, True),
    ("login_or_bearer", False, False), ("login", True, False), ("optional", True, False),
])
def test_which_requests_are_checked_by_their_bearer_token(mode, has_token, uses):
    assert d.uses_bearer(mode, has_token) is uses


@pytest.mark.parametrize("mode", ["public", "login", "bearer", "login_or_bearer", "optional"])
@pytest.mark.parametrize("origin_allowed", [True, False])
def test_a_cross_site_websocket_is_refused_only_where_cookies_are_the_credential(mode, origin_allowed):
    refusal = d.decide_upgrade(route(mode), origin_allowed)
    if origin_allowed or mode in ("public", "bearer"):
        assert refusal is None
    else:
        assert refusal is d.CROSS_SITE_WEBSOCKET
        assert (refusal.status, refusal.error, refusal.reason, refusal.outcome) == (403, "websocket_origin",
                                                                                  "websocket_origin", None)
