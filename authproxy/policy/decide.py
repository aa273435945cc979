"""Who passes a route, and as whom: the auth decision as a pure function of values.

    public           anyone; no identity
    optional         the session's identity when there is one; anyone otherwise
    login            a browser session (a navigation is sent to sign in, anything else gets 401)
    bearer           an access token in Authorization (RFC 6750 2.1), checked against the JWKS
    login_or_bearer  a bearer token when the request carries one, else a session

The edge (web/gate.py) gathers the facts: the session or the verified bearer token
(``Identity``), and what else the answer depends on (``Facts``). ``decide`` turns them
into a ``Decision``; the edge then carries out an ``Allow``'s injection plan (templates,
service token, assertion) or renders the refusal (web/render.py). Proxied requests,
forward-auth (``/oauth2/auth``) and Envoy's ext_authz get the same decisions.

Nothing here performs I/O or reads a clock; the common decisions are shared constants,
so a request that passes allocates nothing here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from authproxy.config.schema import SESSION_MODES
from authproxy.policy.allow import Denial
from authproxy.policy.routes import Route

if TYPE_CHECKING:
    from authproxy.session.store import Session

# authproxy_auth_total's outcome label values (metrics.AUTH_*), the same words.
PUBLIC, SESSION, BEARER = "public", "session", "bearer"
REDIRECTED, UNAUTHORIZED, FORBIDDEN = "redirected", "unauthorized", "forbidden"

REALM = 'realm="authproxy"'


@dataclass(slots=True)
class Identity:
    """Who the request is from, as the proxy verified it. A value, never changed once made
    (not frozen only because a frozen dataclass costs twice as much to build, and one is
    built per authenticated request)."""

    sub: str
    claims: Mapping[str, Any]  # the ID token's for sessions, the access token's for bearer requests
    access_token: str | None
    id_token: str | None
    via: str  # SESSION or BEARER
    issuer: str = "oidc"  # the bearer issuer's name (config.schema.OIDC_ISSUER for sessions), for allow.issuers
    groups_claim: str | None = None  # where the issuer puts groups; None: the oidc provider's groups_claim


def session_identity(session: Session) -> Identity:
    """The identity of a session (session/store.py's ``Session``)."""
    return Identity(session.sub, session.claims, session.access_token, session.id_token, SESSION)


# --- the facts the edge gathers besides the identity ---------------------------------

# What went wrong while looking for credentials, when something did.
AMBIGUOUS = "ambiguous"  # more than one Authorization header
INVALID = "invalid"  # a bearer token that must not be trusted (``detail``: TokenInvalid.reason)
NOT_READY = "not_ready"  # the provider's keys are not loaded yet
KEYS_UNAVAILABLE = "keys_unavailable"  # the provider's keys could not be fetched


class Facts(NamedTuple):
    """What the answer depends on besides the identity."""

    problem: str | None = None  # AMBIGUOUS | INVALID | NOT_READY | KEYS_UNAVAILABLE
    detail: str = ""  # INVALID: the token's short, safe reason code
    navigation: bool = False  # a browser navigation: GET or HEAD asking for text/html
    redirect: bool = True  # the caller passes a sign-in redirect on (nginx auth_request does not)
    preflight: bool = False  # a CORS preflight on a route that lets them through unauthenticated


NOTHING_ELSE = Facts()  # the common case: only the identity (or its absence) matters
PREFLIGHT = Facts(preflight=True)


# --- decisions -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Allow:
    """Forward (or, for forward-auth, answer 200). ``inject``: carry out the route's
    injection plan (its templates, service token and assertion); a preflight carries none."""

    outcome: str | None  # authproxy_auth_total's outcome; None for a preflight (no auth decision)
    inject: bool = True
    reason: None = None  # nothing refused (every decision has a reason for the access log)


@dataclass(frozen=True, slots=True)
class SignIn:
    """Send the browser to ``/oauth2/start`` with where it was going."""

    outcome: str = REDIRECTED
    reason: str = "no_session"


@dataclass(frozen=True, slots=True)
class Unauthorized:
    """401 with a ``WWW-Authenticate`` challenge (RFC 6750 3)."""

    challenge: str
    message: str
    reason: str  # for the access log
    api: bool  # JSON whatever the client accepts (bearer checks answer API clients)
    sign_in_link: bool = False  # the HTML page offers to sign in
    outcome: str = UNAUTHORIZED


@dataclass(frozen=True, slots=True)
class Forbidden:
    """403: signed in (or a valid token), but the allow rules say no; ``denial`` names what was missing."""

    denial: Denial
    identity: Identity
    outcome: str = FORBIDDEN
    reason: str = "allow_rules"

    @property
    def challenge(self) -> str | None:
        """RFC 6750 3.1: missing scopes are an ``insufficient_scope`` error."""
        scopes = self.denial.missing_scopes
        return f'Bearer {REALM}, error="insufficient_scope", scope="{" ".join(scopes)}"' if scopes else None


@dataclass(frozen=True, slots=True)
class Refused:
    """A request refused for what it is, not for who sent it: 400 when no check can be
    made of it, 403 for a WebSocket opened by a page of another site."""

    message: str
    reason: str
    outcome: str | None = UNAUTHORIZED
    status: int = 400
    error: str = "bad_request"


@dataclass(frozen=True, slots=True)
class Unavailable:
    """503: the checks cannot be made now; ``retry_after`` is filled in by the renderer."""

    error: str
    message: str
    reason: str
    outcome: None = None  # not an auth decision about the user


Decision = Allow | SignIn | Unauthorized | Forbidden | Refused | Unavailable

ALLOW_PUBLIC = Allow(PUBLIC)
ALLOW_SESSION = Allow(SESSION)
ALLOW_BEARER = Allow(BEARER)
ALLOW_PREFLIGHT = Allow(None, inject=False)
_ALLOW_VIA = {SESSION: ALLOW_SESSION, BEARER: ALLOW_BEARER}
SIGN_IN = SignIn()
NO_TOKEN = Unauthorized(f"Bearer {REALM}", "a bearer access token is required", "no_token", api=True)
SEVERAL_AUTHORIZATIONS = Refused("more than one Authorization header", "several_authorization_headers")
# Cross-site WebSocket hijacking: the cookie goes along from any page of any site, and no
# CORS check stands between a page and a socket (RFC 6455 10.2): the Origin must be ours.
CROSS_SITE_WEBSOCKET = Refused("pages of this origin may not open a WebSocket here", "websocket_origin",
                               outcome=None, status=403, error="websocket_origin")
_UNAVAILABLE = {
    NOT_READY: Unavailable("not_ready", "token checks are not available yet", "not_ready"),
    KEYS_UNAVAILABLE: Unavailable("idp_unavailable", "token checks are not available right now", "jwks"),
}


def decide_upgrade(route: Route, origin_allowed: bool) -> Refused | None:
    """The refusal of a WebSocket upgrade already allowed by ``decide``, if any: on routes
    with sessions, a page whose origin ``websocket_origins`` (default: our own hosts) does
    not admit may not open one. ``origin_allowed``: proxy/websocket.py's ``origin_allowed``."""
    if route.auth in SESSION_MODES and not origin_allowed:
        return CROSS_SITE_WEBSOCKET
    return None


def uses_bearer(mode: str, has_token: bool) -> bool:
    """Whether a request is checked by its bearer token: always on bearer routes, and on
    login_or_bearer routes when it carries one (else by its session)."""
    return mode == "bearer" or (has_token and mode == "login_or_bearer")


def decide(route: Route, identity: Identity | None, facts: Facts = NOTHING_ELSE) -> Decision:
    """The decision for a request on ``route`` from ``identity`` (None: none was found or
    none was sent) and ``facts``. No clock: time-bound checks (expiry, idle time) were made
    while gathering, with the edge's clock."""
    mode = route.auth
    if mode == "public":
        return ALLOW_PUBLIC
    if facts.preflight:
        return ALLOW_PREFLIGHT  # a CORS preflight carries no credentials (Fetch standard)
    problem = facts.problem
    if problem is not None:
        if problem == AMBIGUOUS:
            # Which one an upstream would read is anyone's guess: never forward a second, unchecked one.
            return SEVERAL_AUTHORIZATIONS
        if problem == INVALID:
            return Unauthorized(f'Bearer {REALM}, error="invalid_token", error_description="{facts.detail}"',
                                f"the access token is not valid ({facts.detail})", facts.detail, api=True)
        return _UNAVAILABLE[problem]
    if identity is None:
        if mode == "optional":
            return ALLOW_PUBLIC  # anonymous callers pass, without identity headers
        if mode == "bearer":
            return NO_TOKEN  # RFC 6750 3.1: no error code when the request had no authentication at all
        if facts.redirect and facts.navigation:
            return SIGN_IN
        # An API client, or forward-auth for nginx (which turns 401 into the sign-in redirect itself).
        return Unauthorized(f"Bearer {REALM}", "sign-in required", "no_session", api=False,
                            sign_in_link=facts.redirect)
    if route.allow is not None:
        denial = route.allow.check(identity.claims, identity.issuer, identity.groups_claim)
        if denial is not None:
            return Forbidden(denial, identity)
    return _ALLOW_VIA[identity.via]
