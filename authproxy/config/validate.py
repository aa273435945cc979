"""Rules across sections of a configuration the schema accepted: every problem, in one pass.

The schema (schema.py) checks each key and each section on its own; what one section
needs of another (an auth mode and the sections it relies on, a cookie name and the
URL scheme) is checked here, on the typed ``Config``. Each problem names the key to
change (its dotted path, which the loader turns into a line), so a file with three such
mistakes gets three messages, not the first one.
"""

from __future__ import annotations

import ipaddress

from authproxy.config.schema import BEARER_MODES, SESSION_MODES, Config, Route
from authproxy.errors import ConfigIssue


def validate(config: Config) -> list[ConfigIssue]:
    """Every cross-section problem of ``config`` (empty: none)."""
    issues: list[ConfigIssue] = []
    for index, route in enumerate(config.routes):
        issues += _route(config, route, f"routes[{index}]")
    issues += _audiences(config)
    issues += _sessions(config)
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
            if route.auth not in SESSION_MODES:  # login_or_bearer: already said above
                issues.append(ConfigIssue(f"{where}.auth", f"auth {route.auth} needs oidc (the provider whose tokens to accept)"))
        elif oidc.provider == "generic" and not oidc.audiences:
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
    if (oidc is not None and config.session is not None and prefix
            and (prefix.rstrip("/") + "/").startswith(config.proxy_prefix + "/")):
        issues.append(ConfigIssue(f"{where}.match.path_prefix",
                                  f"path_prefix {prefix!r} lies under proxy_prefix {config.proxy_prefix!r}, whose "
                                  "paths the proxy answers itself; change one of them"))
    return issues


def _audiences(config: Config) -> list[ConfigIssue]:
    oidc = config.oidc
    if oidc is None or oidc.provider != "generic" or oidc.require_at_jwt or oidc.client_id not in oidc.audiences:
        return []
    if not any(route.auth in BEARER_MODES for route in config.routes):
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
