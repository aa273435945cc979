"""Where a provider's endpoints are, per profile (pure).

- generic: from the discovery document (OpenID Connect Discovery 1.0), each endpoint
  overridable; the document's issuer must equal the configured one exactly (4.3).
- cognito: the issuer is configured (it lives on cognito-idp.<region>.amazonaws.com);
  the hosted UI's authorize/token/revoke/logout live on ``cognito_domain``. A user pool
  issues under several issuers (``oidc.cognito``), each with its JWKS at
  ``{issuer}/.well-known/jwks.json``; a token's keys are chosen by its ``iss``.
  Cognito sends no RFC 9207 ``iss`` parameter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

from authproxy.errors import AuthproxyError
from authproxy.oidc import cognito


class DiscoveryInvalid(AuthproxyError):
    """The discovery document cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Endpoints:
    issuer: str
    authorization: str
    token: str
    jwks_uri: str
    revocation: str | None = None
    end_session: str | None = None
    userinfo: str | None = None
    cognito_logout: str | None = None  # {cognito_domain}/logout: not RP-initiated logout
    iss_parameter_supported: bool = False  # RFC 9207: then the callback must carry iss
    # Every issuer of this provider with the JWKS URL of its keys, ``issuer`` first
    # (empty: just ``issuer`` at ``jwks_uri``).
    issuer_keys: tuple[tuple[str, str], ...] = ()

    @property
    def issuers(self) -> tuple[str, ...]:
        return tuple(issuer for issuer, _ in self.issuer_keys) or (self.issuer,)

    def jwks_uri_for(self, issuer: str) -> str | None:
        """The JWKS URL of ``issuer``, or None when it is not an issuer of this provider."""
        if not self.issuer_keys:
            return self.jwks_uri if issuer == self.issuer else None
        return dict(self.issuer_keys).get(issuer)

    def with_overrides(self, overrides: Mapping[str, str | None]) -> Endpoints:
        chosen = {name: value for name, value in overrides.items() if value}
        return replace(self, **chosen) if chosen else self


OVERRIDABLE = ("authorization", "token", "jwks_uri", "revocation", "end_session", "userinfo")


def from_discovery(document: Mapping[str, Any], issuer: str, overrides: Mapping[str, str | None]) -> Endpoints:
    if document.get("issuer") != issuer:
        raise DiscoveryInvalid(f"discovery names issuer {document.get('issuer')!r}, configured is {issuer!r}")
    found = {
        "authorization": document.get("authorization_endpoint"),
        "token": document.get("token_endpoint"),
        "jwks_uri": document.get("jwks_uri"),
    }
    found.update({name: value for name, value in overrides.items() if value})
    missing = [name for name, value in found.items() if not isinstance(value, str) or not value]
    if missing:
        raise DiscoveryInvalid(f"discovery lacks {', '.join(missing)} and no override is configured")
    methods = document.get("code_challenge_methods_supported")
    if isinstance(methods, list) and "S256" not in methods:
        raise DiscoveryInvalid("the provider does not support PKCE S256")
    endpoints = Endpoints(
        issuer=issuer,
        authorization=found["authorization"],  # type: ignore[arg-type]
        token=found["token"],  # type: ignore[arg-type]
        jwks_uri=found["jwks_uri"],  # type: ignore[arg-type]
        revocation=_optional_url(document.get("revocation_endpoint")),
        end_session=_optional_url(document.get("end_session_endpoint")),
        userinfo=_optional_url(document.get("userinfo_endpoint")),
        iss_parameter_supported=document.get("authorization_response_iss_parameter_supported") is True,
    )
    return endpoints.with_overrides({name: overrides.get(name) for name in OVERRIDABLE})


def for_cognito(
    issuer: str, cognito_domain: str, overrides: Mapping[str, str | None], issuers: Sequence[str] = ()
) -> Endpoints:
    """``issuers``: the pool's other issuers besides ``issuer``. A ``jwks_uri`` override
    serves every issuer's keys (one key set for the pool, as the updated form's hosts do)."""
    domain = cognito_domain.rstrip("/")
    every = tuple(dict.fromkeys((issuer, *issuers)))
    override = overrides.get("jwks_uri")
    endpoints = Endpoints(
        issuer=issuer,
        authorization=f"{domain}/oauth2/authorize",
        token=f"{domain}/oauth2/token",
        jwks_uri=override or cognito.jwks_uri(issuer),
        revocation=f"{domain}/oauth2/revoke",
        userinfo=f"{domain}/oauth2/userInfo",
        cognito_logout=f"{domain}/logout",
        issuer_keys=tuple((each, override or cognito.jwks_uri(each)) for each in every),
    )
    return endpoints.with_overrides({name: overrides.get(name) for name in OVERRIDABLE})


def logout_url(endpoints: Endpoints, *, client_id: str, after: str, id_token: str | None, fallback: str) -> str:
    """Where the browser goes after our sign-out, to end the provider's session too.

    Cognito: ``/logout?client_id=&logout_uri=`` (it clears Cognito's own cookie; it is not
    RP-initiated logout and takes no id_token_hint). Generic: RP-Initiated Logout 1.0
    with ``id_token_hint``. A provider with neither: ``fallback`` (the validated rd).
    """
    if endpoints.cognito_logout:
        return endpoints.cognito_logout + "?" + urlencode({"client_id": client_id, "logout_uri": after})
    if endpoints.end_session:
        params = {"post_logout_redirect_uri": after, "client_id": client_id}
        if id_token:
            params["id_token_hint"] = id_token
        separator = "&" if "?" in endpoints.end_session else "?"
        return endpoints.end_session + separator + urlencode(params)
    return fallback


def _optional_url(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
