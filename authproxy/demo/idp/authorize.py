"""The authorization endpoint (RFC 6749 4.1.1-4.1.2, RFC 7636 4.3-4.4, OIDC Core 3.1.2).

``_AuthorizeEndpoint`` holds ``DevIdp``'s handlers for ``/oauth2/authorize``: validate the
request, show the sign-in page (a one-click button per demo user, or username and
password), and on sign-in redirect to the client with a single-use code. A bad client or
redirect_uri is refused on a page (``_Refused``); other errors go back to the client at
its redirect_uri (``_RedirectedError``).
"""

from __future__ import annotations

import logging
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from authproxy.demo.idp.clients import CODE_LIFETIME, Client, DemoUser, WebClient
from authproxy.demo.idp.pages import _e, _page, _redirect
from authproxy.demo.idp.params import _form_str, _single, _with_query
from authproxy.demo.idp.state import _Authentication, _Code, _Expiring

LOGGER = logging.getLogger("authproxy.demo.idp")  # the same name in every module: one logger for the provider

# What an authorize request carries; the sign-in forms carry these as hidden fields.
AUTHORIZE_PARAMS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
)
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")  # BASE64URL(SHA-256) without padding (RFC 7636 4.2)
# The hosted UI remembers a sign-in in its own cookie, so a later authorize request (a
# session of the app ended, or another app) signs in without a page, until /logout clears
# it. Scoped to the authorize path: on a shared 127.0.0.1 host it never reaches the app.
MANAGED_LOGIN_COOKIE = "cognito"
MANAGED_LOGIN_PATH = "/oauth2/authorize"
MANAGED_LOGIN_LIFETIME = 3600  # Cognito's managed login session: 1 hour


@dataclass(frozen=True, slots=True)
class _AuthorizeRequest:
    """An authorize request that passed validation (RFC 6749 4.1.1, RFC 7636 4.3, OIDC Core 3.1.2.1)."""

    client: WebClient
    redirect_uri: str
    scope: str
    state: str | None
    nonce: str | None
    code_challenge: str
    params: dict[str, str]  # to carry through the sign-in forms


class _Refused(Exception):
    """An authorize request with an unknown client or redirect_uri: show an error page and
    never redirect (RFC 6749 4.1.2.1, 10.15 open redirector)."""


class _RedirectedError(Exception):
    """An authorize error reported to the client at its redirect_uri (RFC 6749 4.1.2.1)."""

    def __init__(self, redirect_uri: str, state: str | None, error: str, description: str):
        super().__init__(error)
        # Cognito leaves state out of some error redirects (here: scope errors), which
        # RFC 6749 4.1.2.1 requires; a client must still show what went wrong.
        carried = {"state": state} if state is not None and error != "invalid_scope" else {}
        self.location = _with_query(redirect_uri, {"error": error, "error_description": description, **carried})


class _AuthorizeEndpoint:
    """The authorization endpoint's handlers, mixed into ``DevIdp``, whose ``__init__`` sets what they use."""

    clients: dict[str, Client]
    users: dict[str, DemoUser]
    _codes: _Expiring[_Code]
    _managed_logins: _Expiring[_Authentication]
    _now: Callable[[], int]

    # ---- authorization endpoint (RFC 6749 4.1.1-4.1.2, RFC 7636 4.3-4.4, OIDC Core 3.1.2)

    async def _authorize_page(self, request: web.Request) -> web.Response:
        try:
            authorize = self._parse_authorize(request.query)
        except _Refused as exc:
            return _page("Sign-in refused", f"<p class=error>{_e(str(exc))}</p>", status=400)
        except _RedirectedError as exc:
            return _redirect(exc.location)
        remembered = self._managed_logins.get(request.cookies.get(MANAGED_LOGIN_COOKIE, ""), self._now())
        if remembered is not None and "login" not in (_single(request.query, "prompt") or "").split():
            LOGGER.info("dev_idp_signed_in_silently", extra={"fields": {"user": remembered.user.username}})
            return self._issue_code(authorize, remembered.user, remembered.auth_time, None)
        return self._sign_in_page(request.path, authorize)

    async def _authorize_sign_in(self, request: web.Request) -> web.Response:
        form = await request.post()
        try:
            authorize = self._parse_authorize(form)
        except _Refused as exc:
            return _page("Sign-in refused", f"<p class=error>{_e(str(exc))}</p>", status=400)
        except _RedirectedError as exc:
            return _redirect(exc.location)
        picked = _form_str(form, "pick")
        if picked is not None:  # one click on a demo user's button: no password (development only)
            username = picked
            user = self.users.get(picked)
        else:
            username = (_form_str(form, "username") or "").strip()
            user = self.users.get(username)
            if user is not None and not user.password_matches(_form_str(form, "password") or ""):
                user = None
        if user is None:
            LOGGER.info("dev_idp_sign_in_failed")
            return self._sign_in_page(request.path, authorize, error="Incorrect username or password.", username=username)
        LOGGER.info("dev_idp_signed_in", extra={"fields": {"user": user.username, "client_id": authorize.client.client_id}})
        return self._issue_code(authorize, user, self._now(), secrets.token_urlsafe(32))

    def _issue_code(
        self, authorize: _AuthorizeRequest, user: DemoUser, auth_time: int, new_login: str | None
    ) -> web.Response:
        """Redirect with a single-use code; ``new_login``: remember the sign-in in the hosted
        UI's cookie under this value (a sign-in on the page, not a silent one)."""
        now = self._now()
        authentication = _Authentication(
            client_id=authorize.client.client_id,
            user=user,
            scope=authorize.scope,
            auth_time=auth_time,
            origin_jti=str(uuid.uuid4()),
            event_id=str(uuid.uuid4()),
        )
        code = secrets.token_urlsafe(32)
        self._codes.put(
            code,
            _Code(authentication, authorize.redirect_uri, authorize.code_challenge, authorize.nonce),
            now + CODE_LIFETIME,
            now,
        )
        params = {"code": code, **({"state": authorize.state} if authorize.state is not None else {})}
        response = _redirect(_with_query(authorize.redirect_uri, params))
        if new_login is not None:
            self._managed_logins.put(new_login, authentication, now + MANAGED_LOGIN_LIFETIME, now)
            response.set_cookie(MANAGED_LOGIN_COOKIE, new_login, path=MANAGED_LOGIN_PATH, httponly=True,
                                samesite="Lax", max_age=MANAGED_LOGIN_LIFETIME)
        return response

    def _parse_authorize(self, params: MultiMapping[Any]) -> _AuthorizeRequest:
        """Validate in the order RFC 6749 4.1.2.1 requires: client and redirect_uri first
        (refused without a redirect), then the rest (reported at the redirect_uri)."""
        client = self.clients.get(_single(params, "client_id") or "")
        if not isinstance(client, WebClient):
            raise _Refused("Unknown client_id, or a client that cannot use the authorization code grant.")
        redirect_uri = _single(params, "redirect_uri")
        if redirect_uri is None or redirect_uri not in client.redirect_uris:
            raise _Refused("redirect_uri is missing or is not registered for this client (exact match required).")
        state = _form_str(params, "state")

        def fail(error: str, description: str) -> _RedirectedError:
            return _RedirectedError(redirect_uri, state, error, description)

        repeated = [name for name in AUTHORIZE_PARAMS if len(params.getall(name, [])) > 1]
        if repeated:  # RFC 6749 3.1: parameters must not be repeated
            raise fail("invalid_request", f"repeated parameter: {', '.join(repeated)}")
        response_type = _single(params, "response_type")
        if response_type is None:
            raise fail("invalid_request", "response_type is required")
        if response_type != "code":
            raise fail("unsupported_response_type", "only response_type=code is supported")
        scopes = (_single(params, "scope") or "").split()
        if "openid" not in scopes:
            raise fail("invalid_scope", "scope must include openid")
        unknown = sorted(set(scopes) - set(client.scopes))
        if unknown:
            raise fail("invalid_scope", f"scope not allowed for this client: {' '.join(unknown)}")
        challenge = _single(params, "code_challenge")
        if not challenge:  # RFC 7636 4.4.1: PKCE is required here
            raise fail("invalid_request", "code_challenge is required")
        if _single(params, "code_challenge_method") != "S256":  # a missing method means "plain" (RFC 7636 4.3)
            raise fail("invalid_request", "transform algorithm not supported: code_challenge_method must be S256")
        if not _CHALLENGE.fullmatch(challenge):
            raise fail("invalid_request", "code_challenge is not a base64url SHA-256 digest")
        carried = {name: value for name in AUTHORIZE_PARAMS if (value := _single(params, name)) is not None}
        return _AuthorizeRequest(
            client=client,
            redirect_uri=redirect_uri,
            scope=" ".join(dict.fromkeys(scopes)),
            state=state,
            nonce=_single(params, "nonce"),
            code_challenge=challenge,
            params=carried,
        )

    def _sign_in_page(
        self, action: str, authorize: _AuthorizeRequest, *, error: str | None = None, username: str = ""
    ) -> web.Response:
        hidden = "".join(
            f'<input type="hidden" name="{_e(name)}" value="{_e(value)}">' for name, value in authorize.params.items()
        )
        buttons = "".join(
            f'<li><button type="submit" name="pick" value="{_e(user.username)}">Sign in as {_e(user.username)}</button> '
            f"<span>{_e(user.email)}; groups: {_e(', '.join(user.groups) or 'none')}</span></li>"
            for user in self.users.values()
        )
        body = (
            f"<p>Signing in to <b>{_e(authorize.client.client_id)}</b>, "
            f"which will receive you at <code>{_e(authorize.redirect_uri)}</code>.</p>"
            + (f'<p class=error role="alert">{_e(error)}</p>' if error else "")
            + f'<form method="post" action="{_e(action)}">{hidden}<h2>Demo users</h2><ul>{buttons}</ul></form>'
            + f'<form method="post" action="{_e(action)}">{hidden}<h2>Username and password</h2>'
            f'<p><label>Username <input name="username" value="{_e(username)}" autocomplete="username"></label></p>'
            '<p><label>Password <input name="password" type="password" autocomplete="current-password"></label></p>'
            '<p><button type="submit">Sign in</button></p>'
            "<p class=hint>Each demo user's password is its username.</p></form>"
        )
        return _page("Sign in", body, status=401 if error else 200)
