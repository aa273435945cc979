"""The token and revocation endpoints, and the minting of Cognito-shaped tokens.

``_TokenEndpoint`` holds ``DevIdp``'s handlers for ``/oauth2/token`` (authorization_code
with PKCE, refresh_token, client_credentials; client_secret_basic or client_secret_post)
and ``/oauth2/revoke`` (RFC 7009), and makes the RS256 ID and access tokens. The helpers
below it make signing keys, sign claims and compute the PKCE (S256) and at_hash digests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web
from joserfc import jwt
from joserfc.jwk import RSAKey
from multidict import MultiMapping

from authproxy.demo.idp.clients import CODE_LIFETIME, Client, MachineClient, WebClient
from authproxy.demo.idp.params import _single
from authproxy.demo.idp.state import _Authentication, _Code, _Expiring

LOGGER = logging.getLogger("authproxy.demo.idp")  # the same name in every module: one logger for the provider

_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")  # RFC 7636 4.1
_TOKEN_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}  # RFC 6749 5.1


class _TokenError(Exception):
    """An error response of the token or revocation endpoint (RFC 6749 5.2)."""

    def __init__(self, error: str, description: str, status: int = 400, basic_challenge: bool = False):
        super().__init__(error)
        self.error, self.description, self.status, self.basic_challenge = error, description, status, basic_challenge

    def response(self) -> web.Response:
        headers = dict(_TOKEN_HEADERS)
        if self.basic_challenge:
            headers["WWW-Authenticate"] = 'Basic realm="authproxy dev-idp"'
        return web.json_response(
            {"error": self.error, "error_description": self.description}, status=self.status, headers=headers
        )


class _TokenEndpoint:
    """The token and revocation endpoints' handlers, mixed into ``DevIdp``, whose ``__init__`` sets what they use."""

    issuer: str
    clients: dict[str, Client]
    access_token_lifetime: int
    id_token_lifetime: int
    refresh_token_lifetime: int
    _id_key: RSAKey
    _access_key: RSAKey
    _codes: _Expiring[_Code]
    _spent_codes: _Expiring[str]
    _refresh_tokens: _Expiring[_Authentication]
    _retired_refresh_tokens: _Expiring[_Authentication]
    _revoked: _Expiring[bool]
    _now: Callable[[], int]
    pool_id: str | None
    public_keys: Any
    accepts_issuer: Callable[[object], bool]

    # ---- token endpoint (RFC 6749 3.2, 4.1.3, 4.4, 6; RFC 7636 4.5-4.6; OIDC Core 3.1.3, 12)

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        try:
            client = self._authenticate_client(request, form)
            grant_type = _single(form, "grant_type")
            if grant_type == "authorization_code":
                body = self._code_grant(client, form)
            elif grant_type == "refresh_token":
                body = self._refresh_grant(client, form)
            elif grant_type == "client_credentials":
                body = self._client_credentials_grant(client, form)
            elif grant_type is None:
                raise _TokenError("invalid_request", "grant_type is required")
            else:
                raise _TokenError("unsupported_grant_type", "supported: authorization_code, refresh_token, client_credentials")
        except _TokenError as exc:
            LOGGER.info("dev_idp_token_error", extra={"fields": {"error": exc.error}})
            return exc.response()
        return web.json_response(body, headers=_TOKEN_HEADERS)

    def _authenticate_client(self, request: web.Request, form: MultiMapping[Any]) -> Client:
        """client_secret_basic or client_secret_post, never both (RFC 6749 2.3.1)."""
        header = request.headers.get("Authorization")
        posted_id, posted_secret = _single(form, "client_id"), _single(form, "client_secret")
        if header is not None:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "basic":
                raise _TokenError("invalid_client", "unsupported authentication scheme")
            try:
                pair = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except ValueError:
                raise _TokenError("invalid_client", "malformed Basic credentials") from None
            client_id, separator, secret = pair.partition(":")
            if not separator:
                raise _TokenError("invalid_client", "malformed Basic credentials")
            # Cognito documents Basic Base64Encode(client_id:client_secret) and decodes
            # nothing further (Developer Guide, "Token endpoint"): a secret sent
            # form-urlencoded as RFC 6749 2.3.1 asks ("+" as "%2B") does not match.
            if posted_secret is not None:
                raise _TokenError("invalid_request", "more than one client authentication method")
            if posted_id is not None and posted_id != client_id:
                raise _TokenError("invalid_request", "client_id differs from the authenticated client")
        elif posted_id is not None and posted_secret is not None:
            client_id, secret = posted_id, posted_secret
        else:
            raise _TokenError("invalid_client", "client authentication required")
        client = self.clients.get(client_id)
        if client is None or not hmac.compare_digest(client.client_secret.encode(), secret.encode()):
            # Cognito answers 400 invalid_client with no WWW-Authenticate challenge, where
            # RFC 6749 5.2 would want 401 for a client that authenticated with Basic.
            raise _TokenError("invalid_client", "client authentication failed")
        return client

    def _code_grant(self, client: Client, form: MultiMapping[Any]) -> dict[str, Any]:
        if not isinstance(client, WebClient):
            raise _TokenError("unauthorized_client", "this client may not use the authorization_code grant")
        code = _single(form, "code")
        if not code:
            raise _TokenError("invalid_request", "code is required")
        now = self._now()
        entry = self._codes.pop(code, now)
        if entry is None:
            spent = self._spent_codes.pop(code, now)
            if spent:  # RFC 6749 4.1.2: a reused code SHOULD revoke what it was exchanged for
                self._revoke_refresh_token(spent, now)
            raise _TokenError("invalid_grant", "unknown, expired or already used code")
        self._spent_codes.put(code, "", now + CODE_LIFETIME, now)  # single use, whatever happens next
        if entry.authentication.client_id != client.client_id:
            raise _TokenError("invalid_grant", "the code was issued to another client")
        if _single(form, "redirect_uri") != entry.redirect_uri:  # RFC 6749 4.1.3
            raise _TokenError("invalid_grant", "redirect_uri differs from the authorization request")
        verifier = _single(form, "code_verifier") or ""
        if not _VERIFIER.fullmatch(verifier) or not hmac.compare_digest(_s256(verifier), entry.code_challenge):
            raise _TokenError("invalid_grant", "PKCE verification failed")  # RFC 7636 4.6
        refresh_token = secrets.token_urlsafe(48)
        self._refresh_tokens.put(refresh_token, entry.authentication, now + self.refresh_token_lifetime, now)
        self._spent_codes.put(code, refresh_token, now + CODE_LIFETIME, now)
        return {**self._user_tokens(entry.authentication, entry.nonce, now), "refresh_token": refresh_token}

    def _refresh_grant(self, client: Client, form: MultiMapping[Any]) -> dict[str, Any]:
        """New access and ID tokens. The ID token keeps auth_time, has no nonce (OIDC Core 12.2).

        Without rotation the refresh token stays the same and is not returned. With the
        client's refresh token rotation, a new one is returned every time and the one
        used dies after the grace period (0: at once); within it, the old one still works
        (a retry after a lost response), and each use returns yet another new one.
        """
        if not isinstance(client, WebClient):
            raise _TokenError("unauthorized_client", "this client may not use the refresh_token grant")
        token = _single(form, "refresh_token")
        if not token:
            raise _TokenError("invalid_request", "refresh_token is required")
        now = self._now()
        authentication = self._refresh_tokens.get(token, now) or self._retired_refresh_tokens.get(token, now)
        if (
            authentication is None
            or authentication.client_id != client.client_id
            or self._revoked.get(authentication.origin_jti, now)
        ):
            raise _TokenError("invalid_grant", "invalid, expired or revoked refresh token")
        tokens = self._user_tokens(authentication, None, now)
        if client.refresh_token_rotation:
            if self._refresh_tokens.pop(token, now) is not None and client.rotation_grace_period > 0:
                self._retired_refresh_tokens.put(token, authentication, now + client.rotation_grace_period, now)
            rotated = secrets.token_urlsafe(48)
            self._refresh_tokens.put(rotated, authentication, now + self.refresh_token_lifetime, now)
            tokens["refresh_token"] = rotated
        return tokens

    def _client_credentials_grant(self, client: Client, form: MultiMapping[Any]) -> dict[str, Any]:
        """RFC 6749 4.4 for a machine client; scope defaults to all it may have (3.3)."""
        if not isinstance(client, MachineClient):
            raise _TokenError("unauthorized_client", "this client may not use the client_credentials grant")
        requested = (_single(form, "scope") or "").split() or list(client.scopes)
        unknown = sorted(set(requested) - set(client.scopes))
        if unknown:
            raise _TokenError("invalid_scope", f"scope not allowed for this client: {' '.join(unknown)}")
        now = self._now()
        claims = {
            "sub": client.client_id,
            "token_use": "access",
            "scope": " ".join(dict.fromkeys(requested)),
            "auth_time": now,
            "iss": self.issuer,
            "exp": now + self.access_token_lifetime,
            "iat": now,
            "version": 2,
            "jti": str(uuid.uuid4()),
            "client_id": client.client_id,
        }
        return {
            "access_token": _sign(self._access_key, claims),
            "token_type": "Bearer",
            "expires_in": self.access_token_lifetime,
        }

    def _user_tokens(self, authentication: _Authentication, nonce: str | None, now: int) -> dict[str, Any]:
        """Tokens shaped like Cognito's (Developer Guide, "Understanding the identity (ID)
        token" and "Understanding the access token"): ``event_id``, ``version: 2`` and
        ``username`` in the access token; ``cognito:username``, attributes (``custom:``
        values as strings), ``identities`` for a federated user, in the ID token."""
        user = authentication.user
        username = self.username_of(user)
        group_names = list(user.groups)
        if user.federated:  # Cognito puts federated users in a group named after the provider
            group_names.append(f"{self.pool_id or 'dev'}_{user.federated}")
        groups = {"cognito:groups": group_names} if group_names else {}
        event = {"event_id": authentication.event_id} if authentication.event_id else {}
        access_claims = {
            "sub": user.sub,
            **groups,
            "iss": self.issuer,
            "version": 2,
            "client_id": authentication.client_id,
            "origin_jti": authentication.origin_jti,
            **event,
            "token_use": "access",
            "scope": authentication.scope,
            "auth_time": authentication.auth_time,
            "exp": now + self.access_token_lifetime,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "username": username,
        }
        access_token = _sign(self._access_key, access_claims)
        verified = {"email_verified": user.email_verified} if user.email_verified is not None else {}
        id_claims = {
            "sub": user.sub,
            **groups,
            **verified,
            "iss": self.issuer,
            "cognito:username": username,
            **({"nonce": nonce} if nonce is not None else {}),
            "origin_jti": authentication.origin_jti,
            "aud": authentication.client_id,
            **event,
            "token_use": "id",
            "auth_time": authentication.auth_time,
            "exp": now + self.id_token_lifetime,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "email": user.email,
            **{name: str(value) for name, value in user.attributes},
            **({"identities": [self.identity_of(user)]} if user.federated else {}),
            "at_hash": _at_hash(access_token),  # OIDC Core 3.1.3.6
        }
        return {
            "access_token": access_token,
            "id_token": _sign(self._id_key, id_claims),
            "token_type": "Bearer",
            "expires_in": self.access_token_lifetime,
        }

    # ---- revocation (RFC 7009)

    async def _revoke(self, request: web.Request) -> web.Response:
        """Revoke a refresh token and, as Cognito does, the tokens made from it (for userInfo).

        An unknown or already revoked token also gets 200 (RFC 7009 2.2); a token of
        another client is refused (2.1).
        """
        form = await request.post()
        now = self._now()
        try:
            client = self._authenticate_client(request, form)
            if "Authorization" not in request.headers:  # a secret in the body: not documented for /oauth2/revoke
                raise _TokenError("invalid_client", "clients with a secret authenticate with HTTP Basic here")
            token = _single(form, "token")
            # Cognito (Developer Guide, "Revoke endpoint"): 400 invalid_request without a
            # token or when the app client has token revocation disabled; 400
            # unsupported_token_type for anything but a refresh token.
            if not token:
                raise _TokenError("invalid_request", "token is required")
            if isinstance(client, WebClient) and not client.revocation_enabled:
                raise _TokenError("invalid_request", "token revocation is disabled for this app client")
            if self._is_access_token(token, now):
                raise _TokenError("unsupported_token_type", "only refresh tokens can be revoked")
            authentication = self._refresh_tokens.get(token, now) or self._retired_refresh_tokens.get(token, now)
            if authentication is not None and authentication.client_id != client.client_id:
                raise _TokenError("unauthorized_client", "the token was issued to another client")
        except _TokenError as exc:
            return exc.response()
        self._revoke_refresh_token(token, now)
        return web.Response(status=200, headers=_TOKEN_HEADERS)

    def _is_access_token(self, token: str, now: int) -> bool:
        """One of our live access tokens (signed by us, token_use access, any issuer form)."""
        from authproxy.oidc.verify import TokenInvalid, TokenRules, unverified_issuer, verify_token

        iss = unverified_issuer(token)
        if iss is None or not self.accepts_issuer(iss):
            return False
        try:
            verify_token(token, self.public_keys, TokenRules(issuer=iss, token_use="access", leeway=0), now)
        except TokenInvalid:
            return False
        return True

    def _revoke_refresh_token(self, token: str, now: int) -> None:
        authentication = self._refresh_tokens.pop(token, now) or self._retired_refresh_tokens.pop(token, now)
        if authentication is not None:
            self._revoked.put(authentication.origin_jti, True, now + max(self.access_token_lifetime, self.id_token_lifetime), now)
            LOGGER.info("dev_idp_refresh_token_revoked", extra={"fields": {"client_id": authentication.client_id}})


def _signing_key() -> RSAKey:
    return RSAKey.generate_key(
        2048, parameters={"kid": secrets.token_urlsafe(16), "alg": "RS256", "use": "sig"}, private=True
    )


def _sign(key: RSAKey, claims: Mapping[str, Any]) -> str:
    return jwt.encode({"alg": "RS256", "kid": key.kid, "typ": "JWT"}, dict(claims), key)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _s256(verifier: str) -> str:
    """RFC 7636 4.2: BASE64URL(SHA256(ASCII(code_verifier)))."""
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def _at_hash(access_token: str) -> str:
    """OIDC Core 3.1.3.6: the left half of the SHA-256 of the access token, base64url."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return _b64url(digest[: len(digest) // 2])
