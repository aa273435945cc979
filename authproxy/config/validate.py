"""Rules across sections of a configuration the schema accepted: every problem, in one pass.

The schema (schema.py) checks each key and each section on its own; what one section
needs of another (an auth mode and the sections it relies on, a cookie name and the
URL scheme) is checked here, on the typed ``Config``. Each problem names the key to
change (its dotted path, which the loader turns into a line), so a file with three such
mistakes gets three messages, not the first one.
"""

from __future__ import annotations

import ipaddress

from authproxy.config.schema import (
    BEARER_MODES,
    OIDC_ISSUER,
    SESSION_MODES,
    BearerIssuer,
    Config,
    OidcConfig,
    Route,
    route_issuers,
    serves_own_endpoints,
)
from authproxy.errors import ConfigIssue
from authproxy.oidc import cognito


def validate(config: Config) -> list[ConfigIssue]:
    """Every cross-section problem of ``config`` (empty: none)."""
    issues: list[ConfigIssue] = []
    for index, route in enumerate(config.routes):
        issues += _route_rules(route, f"routes[{index}]")
        issues += _route(config, route, f"routes[{index}]")
    if config.oidc is not None:
        issues += provider_issues(config.oidc, "oidc")
    issues += _audiences(config)
    issues += _sessions(config)
    issues += bearer_issuer_issues(config)
    return issues


def _route_rules(route: Route, where: str) -> list[ConfigIssue]:
    """What a route's own keys need of its auth mode and of each other."""
    issues = []
    uses = {name: template.uses for name, template in route.inject.items()}
    used = frozenset().union(*uses.values())
    if route.auth == "public":
        for name, placeholders in uses.items():
            if placeholders - {"service_token"}:
                issues.append(ConfigIssue(f"{where}.inject.{name}",
                                          f"inject.{name} needs an identity, which a public route has none of"))
        if route.assertion:
            issues.append(ConfigIssue(f"{where}.assertion", "assertion needs an identity: a public route has none"))
    if route.allow is not None and route.auth in ("public", "optional"):
        issues.append(ConfigIssue(f"{where}.allow", f"allow needs an identity, and an {route.auth} route admits "
                                  "anonymous callers: use auth: login"))
    if route.pass_authorization and route.auth not in ("bearer", "public"):
        issues.append(ConfigIssue(f"{where}.pass_authorization", "pass_authorization is for bearer and public routes: "
                                  "on a route with sessions the client's own Authorization would reach the upstream "
                                  "unverified, next to the identity the proxy injects"))
    if route.allow is not None and route.allow.scopes is not None and route.auth != "bearer":
        issues.append(ConfigIssue(f"{where}.allow.scopes", "allow.scopes applies to bearer tokens: use it on auth: "
                                  "bearer routes"))
    if route.service_token is None and "service_token" in used:
        issues.append(ConfigIssue(f"{where}.inject", "inject uses {service_token}: configure service_token on this route"))
    if (route.service_token is not None and "service_token" not in used
            and any(name.lower() == "authorization" for name in uses)):
        issues.append(ConfigIssue(f"{where}.service_token", "service_token is sent as Authorization unless a template "
                                  "names {service_token}, but inject already sets Authorization: use {service_token} "
                                  "in one of the templates"))
    return issues


def provider_issues(oidc: OidcConfig, where: str = "oidc") -> list[ConfigIssue]:
    """The provider's keys against each other: client authentication, and issuers that fit
    the provider (a Cognito pool's issuers are derived from ``issuer``)."""
    issues = []
    if oidc.provider == "cognito" and oidc.cognito_domain is None:
        issues.append(ConfigIssue(f"{where}.cognito_domain", "provider cognito needs cognito_domain (the hosted UI domain)"))
    if "openid" not in oidc.scopes:
        issues.append(ConfigIssue(f"{where}.scopes", "scopes must include openid"))
    if oidc.client_auth == "none" and oidc.client_secret is not None:
        issues.append(ConfigIssue(f"{where}.client_secret", "client_auth none is for public clients: remove client_secret"))
    if oidc.client_auth != "none" and oidc.client_secret is None:
        issues.append(ConfigIssue(f"{where}.client_secret", f"client_auth {oidc.client_auth} needs client_secret"))
    issues += _issuers_fit(oidc, where, "write provider: cognito and cognito_domain (the pool's hosted UI "
                           "domain), not provider: generic")
    return issues


def _route(config: Config, route: Route, where: str) -> list[ConfigIssue]:
    issues = []
    oidc = config.oidc
    if route.auth in SESSION_MODES:
        missing = [name for name in ("public_url", "oidc", "session") if getattr(config, name) is None]
        if missing:
            issues.append(ConfigIssue(f"{where}.auth", f"auth {route.auth} needs {', '.join(missing)}"))
    if route.auth in BEARER_MODES:
        if oidc is None:
            # login_or_bearer: already said above; bearer issuers alone need no provider
            if route.auth not in SESSION_MODES and OIDC_ISSUER in route_issuers(route):
                issues.append(ConfigIssue(f"{where}.auth", f"auth {route.auth} needs oidc (the provider whose tokens to "
                                          "accept), or bearer_issuers naming issuers of the bearer_issuers section"))
        elif oidc.provider == "generic" and not oidc.audiences and OIDC_ISSUER in route_issuers(route):
            issues.append(ConfigIssue(f"{where}.auth", f"auth {route.auth} needs oidc.audiences (the API's audience; it "
                                      "never defaults to client_id, so an ID token cannot pass as an access token)"))
    if route.service_token is not None:
        if oidc is None:
            issues.append(ConfigIssue(f"{where}.service_token", "service_token needs oidc (the provider's token endpoint)"))
        elif route.service_token.client_id is None and oidc.client_secret is None:
            issues.append(ConfigIssue(f"{where}.service_token",
                                      "service_token needs a confidential client: set its client_id and client_secret"))
        if route.auth in ("public", "optional") and not _loopback(config.listen.host):
            issues.append(ConfigIssue(f"{where}.service_token", f"service_token on a {route.auth} route would lend the "
                                      "proxy's machine identity to anonymous callers; allowed only when listen is a "
                                      "loopback address"))
    if route.assertion and (config.assertion is None or config.public_url is None):
        issues.append(ConfigIssue(f"{where}.assertion",
                                  "assertion: true needs the assertion section (signing_keys) and public_url"))
    prefix = route.match.path_prefix
    if (serves_own_endpoints(config) and prefix
            and (prefix.rstrip("/") + "/").startswith(config.proxy_prefix + "/")):
        issues.append(ConfigIssue(f"{where}.match.path_prefix",
                                  f"path_prefix {prefix!r} lies under proxy_prefix {config.proxy_prefix!r}, whose "
                                  "paths the proxy answers itself; change one of them"))
    return issues


def _audiences(config: Config) -> list[ConfigIssue]:
    oidc = config.oidc
    if oidc is None or oidc.provider != "generic" or oidc.require_at_jwt or oidc.client_id not in oidc.audiences:
        return []
    if not any(route.auth in BEARER_MODES and OIDC_ISSUER in route_issuers(route) for route in config.routes):
        return []
    return [ConfigIssue("oidc.audiences", "oidc.audiences holds client_id while require_at_jwt is false: ID tokens "
                        "(aud = client_id) would pass as access tokens; use the API's own audience")]


def _sessions(config: Config) -> list[ConfigIssue]:
    issues = []
    if config.oidc is not None and config.session is not None:
        # Only matters where sessions exist: a public-only proxy stores nothing.
        if config.store.backend == "memory" and config.workers != 1:
            issues.append(ConfigIssue("workers", "store backend memory keeps sessions in one process: with workers "
                                      "other than 1 a user would be signed in on one worker only; use workers: 1 or "
                                      "store backend dynamodb"))
    session = config.session
    if session is not None and session.cookie_name and config.public_url is not None:
        name = session.cookie_name
        if name.startswith(("__Host-", "__Secure-")) and config.public_url.scheme != "https":
            issues.append(ConfigIssue("session.cookie_name", "__Host- and __Secure- cookies need an https public_url"))
        if name.startswith("__Host-") and session.cookie_domain:
            issues.append(ConfigIssue("session.cookie_name", "a __Host- cookie cannot have a cookie_domain (use __Secure-)"))
    return issues


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- bearer issuers (issue 14 item 3) ---------------------------------------------------


def bearer_issuer_issues(config: Config) -> list[ConfigIssue]:
    """The bearer issuers each on their own and against each other (names and ``iss`` values
    unique, so a token's ``iss`` chooses exactly one issuer), and what routes and allow rules
    name of them."""
    issues = []
    owners: dict[str, str] = {}  # every iss value -> the key of the issuer it belongs to
    if config.oidc is not None:
        for iss in config.oidc.issuers:
            owners[iss] = "oidc"
    names = {OIDC_ISSUER} if config.oidc is not None else set()
    for index, issuer in enumerate(config.bearer_issuers):
        where = f"bearer_issuers[{index}]"
        if issuer.name == OIDC_ISSUER:
            issues.append(ConfigIssue(f"{where}.name", "the name oidc is the oidc section's provider; choose another"))
        elif issuer.name in names:
            issues.append(ConfigIssue(f"{where}.name", f"another bearer issuer is named {issuer.name!r} already"))
        names.add(issuer.name)
        issues += _bearer_issuer(issuer, where)
        for iss in issuer.issuers:
            if iss in owners:
                # A token's issuer is chosen by its iss: two owners of one iss would make that choice ambiguous.
                issues.append(ConfigIssue(f"{where}.issuer", f"tokens with iss {iss} already belong to {owners[iss]}: "
                                          "one issuer per iss (list several audiences or client ids instead)"))
            else:
                owners[iss] = where
    known = ", ".join(sorted(names)) or "none: configure oidc or bearer_issuers"
    for index, route in enumerate(config.routes):
        where = f"routes[{index}]"
        if route.bearer_issuers is not None:
            if route.auth not in BEARER_MODES:
                issues.append(ConfigIssue(f"{where}.bearer_issuers", "bearer_issuers applies to bearer and "
                                          f"login_or_bearer routes, not auth {route.auth}"))
            if not route.bearer_issuers:
                issues.append(ConfigIssue(f"{where}.bearer_issuers", "bearer_issuers is empty, so no token could pass; "
                                          "leave it out for [oidc]"))
            for position, name in enumerate(route.bearer_issuers):
                if name not in names:
                    issues.append(ConfigIssue(f"{where}.bearer_issuers[{position}]",
                                              f"no bearer issuer is named {name!r} (known: {known})"))
        allowed = route.allow.issuers if route.allow is not None else None
        if allowed is None:
            continue
        for position, name in enumerate(allowed):
            if name not in names:
                issues.append(ConfigIssue(f"{where}.allow.issuers[{position}]",
                                          f"no bearer issuer is named {name!r} (known: {known})"))
        reaching = set(route_issuers(route)) if route.auth in BEARER_MODES else set()
        if route.auth in SESSION_MODES:
            reaching.add(OIDC_ISSUER)  # sessions come from the oidc provider's sign-in
        if names.issuperset(allowed) and not reaching.intersection(allowed):
            issues.append(ConfigIssue(f"{where}.allow.issuers", "none of these issuers' identities can reach this "
                                      f"route (it accepts {', '.join(sorted(reaching)) or 'none'}), so nobody passes"))
    return issues


def _bearer_issuer(issuer: BearerIssuer, where: str) -> list[ConfigIssue]:
    issues = []
    if issuer.provider == "generic":
        if not issuer.audiences:
            issues.append(ConfigIssue(f"{where}.audiences", "a generic issuer needs audiences (the API's audience, "
                                      "RFC 9068 4), so no token meant for another API passes"))
    else:
        if not issuer.allowed_client_ids:
            issues.append(ConfigIssue(f"{where}.allowed_client_ids", "a cognito issuer needs allowed_client_ids (its "
                                      "access tokens carry client_id, not aud)"))
        if issuer.audiences:
            issues.append(ConfigIssue(f"{where}.audiences", "Cognito access tokens carry no aud: use allowed_client_ids"))
    return issues + _issuers_fit(issuer, where, "write provider: cognito (its access tokens carry client_id, never aud)")


def _issuers_fit(provider: OidcConfig | BearerIssuer, where: str, generic_pool_hint: str) -> list[ConfigIssue]:
    """The issuer keys of a provider (the oidc section, or a bearer issuer) against its kind:
    a Cognito pool's issuers are derived from ``issuer`` (the replica regions' and the
    updated form), aliases only where it is not on AWS, and never for a generic provider."""
    issues = []
    aws = cognito.AwsIssuer.parse(provider.issuer)
    if provider.provider == "generic":
        if aws is not None:
            # Cognito access tokens carry client_id and never aud, which generic bearer rules require.
            issues.append(ConfigIssue(f"{where}.provider", f"issuer is an AWS Cognito user pool: {generic_pool_hint}"))
        for key in ("cognito_replica_regions", "issuer_aliases"):
            if getattr(provider, key):
                issues.append(ConfigIssue(f"{where}.{key}", f"{key} is for provider: cognito"))
        return issues
    for index, region in enumerate(provider.cognito_replica_regions):
        if not cognito.REGION.fullmatch(region):
            issues.append(ConfigIssue(f"{where}.cognito_replica_regions[{index}]",
                                      f"{region!r} is not an AWS region like eu-west-1"))
    if aws is not None:
        if not cognito.POOL_ID.fullmatch(aws.pool_id):
            issues.append(ConfigIssue(f"{where}.issuer", f"issuer names {aws.pool_id!r}, which is not a user pool id "
                                      "like eu-west-1_AbC123"))
        if provider.issuer_aliases:
            issues.append(ConfigIssue(f"{where}.issuer_aliases", "an AWS user pool's issuers are derived from issuer; "
                                      "remove issuer_aliases"))
    elif provider.cognito_replica_regions:
        issues.append(ConfigIssue(f"{where}.cognito_replica_regions", "cognito_replica_regions needs issuer to be the "
                                  "pool's https://cognito-idp.REGION.amazonaws.com/POOL_ID"))
    pool = cognito.last_segment(provider.issuer)
    for index, alias in enumerate(provider.issuer_aliases):
        if cognito.last_segment(alias) != pool:
            issues.append(ConfigIssue(f"{where}.issuer_aliases[{index}]",
                                      f"{alias} does not end in the pool of issuer ({pool!r})"))
    return issues
