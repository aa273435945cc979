"""Allow rules: who may pass a route, once the auth mode has established who it is (pure).

Kinds are ANDed and values within a kind ORed, as in oauth2-proxy's allowed_groups /
email_domains and Pomerium's policy; ``scopes`` are all required (RFC 6750 3.1
``insufficient_scope``). Email rules admit only a verified email unless the route opts
out (``require_verified_email: false``). A denial names what was missing, never a token or a claim
value the user did not choose.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from authproxy.config.schema import OIDC_ISSUER, Allow
from authproxy.policy.inject import groups_of


@dataclass(frozen=True, slots=True)
class Denial:
    reason: str  # shown on the 403 page / JSON, e.g. "requires membership in one of: admins"
    missing_scopes: tuple[str, ...] = ()  # for WWW-Authenticate: Bearer error="insufficient_scope"


@dataclass(frozen=True, slots=True)
class AllowRule:
    groups: frozenset[str] | None
    emails: frozenset[str] | None
    email_domains: frozenset[str] | None
    claims: tuple[tuple[str, frozenset[str]], ...]
    scopes: tuple[str, ...]
    groups_claim: str
    require_verified_email: bool = True
    issuers: frozenset[str] | None = None  # names of the issuers whose identities pass (``allow.issuers``)

    @classmethod
    def compile(cls, allow: Allow, groups_claim: str) -> AllowRule:
        return cls(
            groups=frozenset(allow.groups) if allow.groups else None,
            emails=frozenset(email.lower() for email in allow.emails) if allow.emails else None,
            email_domains=frozenset(domain.lower().lstrip("@") for domain in allow.email_domains)
            if allow.email_domains
            else None,
            claims=tuple((name, frozenset(_text(value) for value in values)) for name, values in (allow.claims or {}).items()),
            scopes=tuple(allow.scopes or ()),
            groups_claim=groups_claim,
            require_verified_email=allow.require_verified_email,
            issuers=frozenset(allow.issuers) if allow.issuers else None,
        )

    def check(self, claims: Mapping[str, Any], issuer: str = OIDC_ISSUER, groups_claim: str | None = None) -> Denial | None:
        """None when ``claims`` satisfy every kind, else what was missing. ``issuer``: the name
        of the issuer that vouched for them; ``groups_claim``: where that issuer puts groups
        (None: the rule's own, the oidc provider's)."""
        if self.issuers is not None and issuer not in self.issuers:
            return Denial("requires an identity from: " + ", ".join(sorted(self.issuers)))
        if self.groups is not None and not self.groups.intersection(groups_of(claims, groups_claim or self.groups_claim)):
            return Denial("requires membership in one of: " + ", ".join(sorted(self.groups)))
        email = claims.get("email")
        email = email.lower() if isinstance(email, str) else ""
        if self.emails is not None and email not in self.emails:
            return Denial("requires one of the allowed email addresses")
        if self.email_domains is not None and email.rpartition("@")[2] not in self.email_domains:
            return Denial("requires an email address in: " + ", ".join(sorted(self.email_domains)))
        if (
            self.require_verified_email
            and (self.emails is not None or self.email_domains is not None)
            and not email_verified(claims)
        ):
            return Denial("requires a verified email address")
        for name, accepted in self.claims:
            if not accepted.intersection(_values(claims.get(name))):
                return Denial(f"requires claim {name} to be one of: " + ", ".join(sorted(accepted)))
        if self.scopes:
            granted = claims.get("scope")
            granted_set = set(granted.split()) if isinstance(granted, str) else set()
            missing = tuple(scope for scope in self.scopes if scope not in granted_set)
            if missing:
                return Denial("requires scope: " + " ".join(missing), missing)
        return None


def email_verified(claims: Mapping[str, Any]) -> bool:
    """Whether the provider vouches for the ``email`` claim: ``email_verified`` true, as a
    boolean (OIDC Core 5.1) or the string "true" (Cognito sends strings at times). Absent
    is not verified: anyone can type an address they do not own, Cognito marks emails
    mapped from a federated identity provider unverified by default and may leave the
    claim out, and app clients may write ``email`` by default (Developer Guide, "Mapping
    IdP attributes to profiles and tokens", "Working with user attributes")."""
    verified = claims.get("email_verified")
    return verified is True or (isinstance(verified, str) and verified.lower() == "true")


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _values(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [_text(item) for item in value]
    return [_text(value)]


# Issuers (by host) of providers whose ID tokens never carry email_verified: an email rule
# there admits nobody unless the route opts out. Microsoft Entra ID documents no such claim.
NO_EMAIL_VERIFIED_HOSTS = ("login.microsoftonline.com", "sts.windows.net", "login.microsoftonline.us")


def email_rule_warnings(config: Any) -> list[str]:
    """What ``check-config`` says about email rules: where one meets a provider that never
    sends ``email_verified`` (every user would be refused), and, for Cognito, that federated
    users' emails are unverified unless the identity provider's mapping sets it."""
    from urllib.parse import urlsplit

    oidc = config.oidc
    if oidc is None:
        return []
    strict = [route.name for route in config.routes
              if route.allow is not None and route.allow.require_verified_email
              and (route.allow.emails is not None or route.allow.email_domains is not None)]
    if not strict:
        return []
    host = (urlsplit(oidc.issuer).hostname or "").lower()
    if host in NO_EMAIL_VERIFIED_HOSTS:
        return [f"route {name}: an email rule needs email_verified, which {host} never sends, so nobody passes; "
                "use groups or claims, or set require_verified_email: false if its addresses are verified"
                for name in strict]
    if oidc.provider == "cognito":
        return [f"route {name}: an email rule admits only email_verified true; Cognito leaves it out or false for "
                "users of a federated identity provider unless the attribute mapping sets it" for name in strict]
    return []
