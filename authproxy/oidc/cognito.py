"""An AWS Cognito user pool as an issuer of tokens (pure).

A pool's tokens carry one of several issuers, all of the same pool (Amazon Cognito API
Reference, ``IssuerConfigurationType``; Developer Guide, "Multi-Region replication for
user pools"):

- the original form ``https://cognito-idp.{region}.amazonaws.com/{pool id}``, hosted in
  the pool's region; a pool replicated to other regions issues this form with each
  replica's own region;
- the updated form ``https://issuer-cognito-idp.{region}.amazonaws.com/{pool id}``, where
  region is the primary region everywhere ("Updated issuers host the same JWKS content in
  multiple regions").

A pool can be switched from one form to the other, so tokens of both forms are alive at
once (sessions from before the switch, sign-ins after it). The pool id names the primary
region (``eu-west-1_AbC123``). Each issuer serves its keys at
``{issuer}/.well-known/jwks.json``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# Pool ids: "{region}_{id}" (CreateUserPool; pattern [\w-]+_[0-9a-zA-Z]+).
POOL_ID = re.compile(r"(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)_[0-9A-Za-z]+")
REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d+")
_AWS_ISSUER = re.compile(
    r"https://(?P<updated>issuer-)?cognito-idp\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?P<cn>\.cn)?"
    r"/(?P<pool>[\w-]+_[0-9A-Za-z]+)"
)


@dataclass(frozen=True, slots=True)
class AwsIssuer:
    """An issuer URL of a Cognito user pool on AWS, taken apart."""

    pool_id: str
    region: str  # the region in the host name
    updated: bool  # issuer-cognito-idp (the updated form)

    @classmethod
    def parse(cls, url: str) -> AwsIssuer | None:
        """The parts of ``url`` when it is a Cognito issuer on AWS (either form), else None."""
        found = _AWS_ISSUER.fullmatch(url)
        if found is None:
            return None
        return cls(found["pool"], found["region"], found["updated"] is not None)


def original_issuer(region: str, pool_id: str) -> str:
    return f"https://cognito-idp.{region}.{_domain(region)}/{pool_id}"


def updated_issuer(region: str, pool_id: str) -> str:
    return f"https://issuer-cognito-idp.{region}.{_domain(region)}/{pool_id}"


def pool_issuers(pool_id: str, replica_regions: Iterable[str] = (), also: Iterable[str] = ()) -> tuple[str, ...]:
    """Every issuer the pool ``pool_id`` can put in its tokens, the primary's original
    form first: both forms in the primary region (named by the id), and the original
    form in each replica region. ``also``: further regions seen in a configured issuer."""
    found = POOL_ID.fullmatch(pool_id)
    if found is None:
        raise ValueError(f"{pool_id!r} is not a user pool id (like eu-west-1_AbC123)")
    primary = found["region"]
    issuers = [original_issuer(primary, pool_id), updated_issuer(primary, pool_id)]
    for region in (*replica_regions, *also):
        issuer = original_issuer(region, pool_id)
        if issuer not in issuers:
            issuers.append(issuer)
    return tuple(issuers)


def jwks_uri(issuer: str) -> str:
    """Where an issuer of a pool serves its keys (the OpenID configuration's jwks_uri)."""
    return f"{issuer.rstrip('/')}/.well-known/jwks.json"


def last_segment(url: str) -> str:
    """The issuer's last path segment: a pool id for Cognito and the development provider."""
    return url.rstrip("/").rpartition("/")[2]


def _domain(region: str) -> str:
    return "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
