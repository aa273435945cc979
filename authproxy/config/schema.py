"""The typed, strict configuration schema: every key, its type and its default.

Unknown keys are errors everywhere (``extra="forbid"``). Values are parsed here
(durations, sizes, addresses, networks, URLs, header templates) so the rest of the
program never re-parses text. Rules within one section are validators here; rules across
sections (an auth mode and the sections it needs, say) live in ``validate.py``, which
reports every problem at once, after this schema.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, NamedTuple

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from yarl import URL

from authproxy.config.templates import Template, parse_template, valid_header_name
from authproxy.config.units import parse_duration, parse_size
from authproxy.oidc import cognito

Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
Size = Annotated[int, BeforeValidator(parse_size)]

_ROUTE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_HOST_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_METHOD = re.compile(r"[A-Z]{1,20}")
# Headers that frame a request or its connection: never injected (a wrong value desyncs the upstream).
_FRAMING_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive", "te",
                              "trailer", "upgrade", "expect", "proxy-connection", "content-encoding"})


class ListenAddress(NamedTuple):
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(value: object) -> ListenAddress:
    """"0.0.0.0:8080", "[::]:8080", "127.0.0.1:9090" or ":8080" (all interfaces)."""
    if isinstance(value, ListenAddress):
        return value
    if not isinstance(value, str):
        raise ValueError("expected 'host:port', e.g. '0.0.0.0:8080'")
    text = value.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"invalid listen address {value!r}: expected 'host:port', e.g. '0.0.0.0:8080'")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"invalid listen address {value!r}: write IPv6 addresses in brackets, e.g. '[::]:8080'")
    host = host or "0.0.0.0"
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"invalid listen address {value!r}: host must be an IP address or 'localhost'") from None
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"invalid listen address {value!r}: port must be 1-65535")
    return ListenAddress(host, port)


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(value: object) -> IPNetwork:
    if not isinstance(value, str):
        raise ValueError("expected a CIDR such as '10.0.0.0/8' or an IP address")
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ValueError(f"invalid network {value!r}: expected a CIDR such as '10.0.0.0/8' or an IP address") from None


_URL_HOST = re.compile(r"[A-Za-z0-9_.-]+")


def _valid_url_host(host: str | None) -> bool:
    if not host:
        return False
    if ":" in host:  # IPv6 literal (yarl gives it without brackets)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    return _URL_HOST.fullmatch(host) is not None


def parse_http_url(value: object) -> URL:
    if not isinstance(value, str):
        raise ValueError("expected an http:// or https:// URL")
    try:
        url = URL(value.strip())
    except ValueError:
        raise ValueError("invalid URL: expected an absolute http:// or https:// URL") from None
    if url.user is not None or url.password is not None:
        # Checked first, and the value is not echoed: it holds a password.
        raise ValueError("URL must not carry credentials (user:password@)")
    shown = repr(value.strip())
    if url.scheme not in ("http", "https") or not _valid_url_host(url.raw_host):
        raise ValueError(f"invalid URL {shown}: expected an absolute http:// or https:// URL with a valid host")
    if url.raw_query_string or url.raw_fragment:
        raise ValueError(f"invalid URL {shown}: must not have a query or fragment")
    return url


def parse_workers(value: object) -> int | str:
    if value == "auto":
        return "auto"
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 256:
        raise ValueError("workers must be a number from 1 to 256, or 'auto'")
    return value


def parse_exact_url(value: object) -> str:
    """An http(s) URL kept exactly as written (issuers are compared as strings)."""
    parse_http_url(value)
    return str(value).strip()


def config_relative(path: str, info: ValidationInfo) -> Path:
    """``path`` as written, or relative to the configuration file's directory."""
    resolved = Path(path)
    base = (info.context or {}).get("base_dir")
    if not resolved.is_absolute() and base:
        resolved = Path(base) / resolved
    return resolved


def read_secret(value: object, info: ValidationInfo) -> object:
    """A secret is a string, or ``{file: PATH}``: the file's text without its final line
    break (Kubernetes mounts Secrets as files, and scanners flag secrets in environment
    variables). Read once, at load. Only secret-typed keys accept the mapping, so nothing
    else in the config can name a file whose content would be sent anywhere (a template or
    URL naming a mounted service-account token, say). Errors name the path, never content."""
    if not isinstance(value, Mapping):
        return value
    if set(value) != {"file"} or not isinstance(value["file"], str) or not value["file"].strip():
        raise ValueError("a secret is a string or {file: PATH}")
    path = config_relative(value["file"].strip(), info)
    try:
        text = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"cannot read secret file {str(path)!r}: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise ValueError(f"secret file {str(path)!r} is not UTF-8 text") from None
    if not text:
        raise ValueError(f"secret file {str(path)!r} is empty")
    return text


def readable_file(value: object, info: ValidationInfo) -> object:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a file path")
    path = config_relative(value.strip(), info)
    if not path.is_file() or not os.access(path, os.R_OK):
        raise ValueError(f"cannot read file {str(path)!r}")
    return str(path)


ListenAddr = Annotated[ListenAddress, BeforeValidator(parse_listen)]
Secret = Annotated[SecretStr, BeforeValidator(read_secret)]  # a string or {file: PATH}
FilePath = Annotated[str, BeforeValidator(readable_file)]  # relative to the config file's directory


def pem_ca_bundle(value: str) -> str:
    try:
        ssl.create_default_context(cafile=value)
    except (ssl.SSLError, ValueError):
        raise ValueError(f"{value!r} holds no PEM CA certificate") from None
    return value


CaBundle = Annotated[FilePath, AfterValidator(pem_ca_bundle)]  # a readable PEM file of CA certificates
ExactUrl = Annotated[str, BeforeValidator(parse_exact_url)]
Network = Annotated[IPNetwork, BeforeValidator(parse_network)]
HttpUrl = Annotated[URL, BeforeValidator(parse_http_url)]


def parse_template_value(value: object) -> Template:
    """An ``inject`` value: a template string, parsed once here."""
    if not isinstance(value, str):
        raise PydanticCustomError("string_type", "Input should be a valid string")
    return parse_template(value)


def check_injected_names(value: dict[str, Template]) -> dict[str, Template]:
    for name in value:
        if not valid_header_name(name):
            raise ValueError(f"inject: {name!r} is not a valid header name")
        if name.lower() in _FRAMING_HEADERS:
            raise ValueError(f"inject: {name} frames the request or its connection; the proxy sets it itself")
    return value


InjectTemplate = Annotated[Template, BeforeValidator(parse_template_value)]
Injections = Annotated[dict[str, InjectTemplate], AfterValidator(check_injected_names)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class LogConfig(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"
    access: bool = True  # one line per request on stdout
    # Access lines wait in batches of up to this many bytes while other requests are in flight (nginx's
    # access_log buffer=); a quiet proxy writes each line at once; 0: every line written at once (a syscall each)
    access_buffer: Annotated[int, BeforeValidator(parse_size), Field(ge=0, le=1024**2)] = 32 * 1024
    access_flush: PositiveDuration = 1.0  # longest a batched access line waits (nginx's flush=); all leave at exit


class Limits(_Strict):
    """Protection against oversized or idle clients; defaults follow nginx's."""

    header_size: Annotated[int, BeforeValidator(parse_size), Field(ge=1024, le=1024**2)] = 8 * 1024
    """Longest request line or header field (aiohttp's parser limit); 1KiB to 1MiB."""
    max_headers: int = Field(default=100, ge=1, le=10000)
    client_idle_timeout: PositiveDuration = 75.0
    """Keep-alive idle time, and silence allowed while a body uploads or downloads."""


class Timeouts(_Strict):
    connect: PositiveDuration = 5.0  # TCP (and TLS) connect to the upstream
    read: PositiveDuration = 60.0  # longest silence while waiting for upstream bytes, like nginx proxy_read_timeout


class Match(_Strict):
    """Conditions a request must meet for the route; all given ones must hold."""

    host: str | None = None  # "app.example.com" or "*.example.com"; compared without port, case-insensitively
    path_prefix: str | None = None  # segment-wise: "/api/a" matches "/api/a" and "/api/a/x", not "/api/ab"
    path_regex: str | None = None  # Python regex matched at the start of the normalised path
    methods: list[str] | None = None  # GET also admits HEAD

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host = value.strip().lower().rstrip(".")
        labels = host[2:].split(".") if host.startswith("*.") else host.split(".")
        if not all(_HOST_LABEL.fullmatch(label) for label in labels):
            raise ValueError(f"invalid host {value!r}: expected a name like 'app.example.com' or '*.example.com'")
        return host

    @field_validator("path_prefix")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith("/") or any(ch in value for ch in "?#%\\ ") or "//" in value:
            raise ValueError(f"invalid path_prefix {value!r}: must start with '/' and hold a plain path")
        if any(segment in (".", "..") for segment in value.split("/")):
            raise ValueError(f"invalid path_prefix {value!r}: dot segments never match a normalised path")
        return value

    @field_validator("path_regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid path_regex: {exc}") from None
        return value

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("methods must not be empty; leave it out to match every method")
        methods = [method.upper() for method in value]
        for method in methods:
            if not _METHOD.fullmatch(method):
                raise ValueError(f"invalid method {method!r}")
        return methods

    @model_validator(mode="after")
    def _one_path_rule(self) -> Match:
        if self.path_prefix is not None and self.path_regex is not None:
            raise ValueError("set path_prefix or path_regex, not both")
        return self


AuthMode = Literal["public", "login", "bearer", "login_or_bearer", "optional"]
SESSION_MODES = frozenset({"login", "login_or_bearer", "optional"})  # need sign-in (oidc, session, public_url)
BEARER_MODES = frozenset({"bearer", "login_or_bearer"})  # need the provider's JWKS


class Allow(_Strict):
    """Who may pass: kinds are ANDed, values within a kind ORed (scopes: all required)."""

    groups: list[str] | None = None  # any of these, from the groups_claim of the identity's issuer (oidc's by default)
    emails: list[str] | None = None  # compared case-insensitively
    email_domains: list[str] | None = None  # the part after "@", case-insensitively
    claims: dict[str, list[str | int | bool]] | None = None  # claim -> accepted values (any)
    scopes: list[str] | None = None  # bearer: every one must be in the token's scope
    # emails and email_domains admit only an email_verified of true (or "true"); false admits an address
    # nobody verified (a federated user's, or one the user may write), for providers that never send the claim
    require_verified_email: bool = True
    # names of the bearer issuers (bearer_issuers[].name, or oidc: the oidc provider, sessions included) whose
    # identities may pass
    issuers: list[str] | None = None

    @field_validator("issuers")
    @classmethod
    def _issuers(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("issuers is empty, which nobody could satisfy; leave it out instead")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> Allow:
        for name in ("groups", "emails", "email_domains", "claims", "scopes"):
            value = getattr(self, name)
            if value is not None and not value:
                raise ValueError(f"{name} is empty, which nobody could satisfy; leave it out instead")
        if not self.require_verified_email and self.emails is None and self.email_domains is None:
            raise ValueError("require_verified_email: false applies to emails and email_domains, and this rule has neither")
        for claim, values in (self.claims or {}).items():
            if not values:
                raise ValueError(f"claims.{claim} is empty, which nobody could satisfy")
        return self


class ServiceToken(_Strict):
    """A machine token (client_credentials, RFC 6749 4.4) sent upstream for this route."""

    scopes: list[str] = []  # Cognito resource-server scopes, e.g. ["orders/write"]
    client_id: str | None = None  # default: oidc.client_id (Cognito code-grant clients cannot also do this)
    client_secret: Secret | None = None
    resource: str | None = None  # RFC 8707 resource indicator, for providers that use one

    @model_validator(mode="after")
    def _pair(self) -> ServiceToken:
        if (self.client_id is None) != (self.client_secret is None):
            raise ValueError("service_token: give client_id and client_secret together")
        return self


class Route(_Strict):
    name: str
    match: Match = Match()
    upstream: HttpUrl  # base URL; a path in it is prepended to the forwarded path
    auth: AuthMode  # no default: nobody is public by accident
    strip_prefix: bool = False  # remove the matched path_prefix (or regex match) before forwarding
    preserve_host: bool = False  # send the client's Host instead of the upstream's
    allow_encoded_slashes: bool = False  # let %2F and %5C through (otherwise 400)
    timeouts: Timeouts = Timeouts()
    max_body: Size = 10 * 1024**2  # request body limit; 0 means no limit
    inject: Injections = {}  # header -> template, e.g. {Authorization: "Bearer {access_token}"}
    pass_authorization: bool = False  # bearer/public routes: forward the client's own Authorization header
    skip_auth_preflight: bool = False  # let CORS preflights (OPTIONS) through unauthenticated, as oauth2-proxy's option
    # pass X-HTTP-Method-Override / X-HTTP-Method / X-Method-Override: frameworks that honour them
    # would run a DELETE on a route whose rules only admitted the POST it arrived as
    allow_method_override: bool = False
    # origins whose pages may open WebSockets on a session route, e.g. "https://app.example.com" or
    # "https://*.example.com" (cross-site WebSocket hijacking); default: the request's own host,
    # public_url's and the routes' hosts. A handshake without Origin (not a browser) is not checked
    websocket_origins: list[str] | None = None
    allow: Allow | None = None  # who may pass; default: anyone the auth mode admits
    assertion: bool = False  # add X-Authproxy-Assertion, a short-lived ES256 JWT of the identity
    service_token: ServiceToken | None = None  # a client_credentials token for {service_token}
    # bearer and login_or_bearer: the issuers whose access tokens pass (names of bearer_issuers, and oidc for the
    # oidc provider); default [oidc]. A token of any other issuer is refused before its signature is looked at
    bearer_issuers: list[str] | None = None

    @field_validator("websocket_origins")
    @classmethod
    def _websocket_origins(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        origins = []
        for entry in value:
            scheme, sep, rest = entry.strip().lower().rstrip("/").partition("://")
            host, _, port = rest.partition(":")
            labels = host[2:].split(".") if host.startswith("*.") else host.split(".")
            if (scheme not in ("http", "https") or not sep or not all(_HOST_LABEL.fullmatch(label) for label in labels)
                    or (port and not (port.isdigit() and 0 < int(port) < 65536))):
                raise ValueError(f"websocket_origins: {entry!r} is not an origin like 'https://app.example.com' "
                                 "or 'https://*.example.com'")
            origins.append(f"{scheme}://{rest}")
        return origins

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _ROUTE_NAME.fullmatch(value):
            raise ValueError(
                f"invalid route name {value!r}: 1-63 characters of letters, digits, '_', '.', '-' "
                "(it labels metrics and logs)"
            )
        return value

    @model_validator(mode="after")
    def _strip_needs_path(self) -> Route:
        if self.strip_prefix and self.match.path_prefix is None and self.match.path_regex is None:
            raise ValueError("strip_prefix needs match.path_prefix or match.path_regex")
        return self


class _TokenSource:
    """What the oidc section and a bearer issuer derive alike from their keys (provider,
    issuer, issuer_aliases, cognito_replica_regions, groups_claim)."""

    if TYPE_CHECKING:  # the fields of the models that use this; declared there, in their order
        provider: str
        issuer: str
        issuer_aliases: list[str]
        cognito_replica_regions: list[str]
        groups_claim: str | None

    @property
    def issuers(self) -> tuple[str, ...]:
        """Every ``iss`` this provider's tokens may carry, ``issuer`` first."""
        return provider_issuers(self.provider, self.issuer, self.issuer_aliases, self.cognito_replica_regions)

    @property
    def effective_groups_claim(self) -> str:
        if self.groups_claim:
            return self.groups_claim
        return "cognito:groups" if self.provider == "cognito" else "groups"


def provider_issuers(provider: str, issuer: str, aliases: list[str], replica_regions: list[str]) -> tuple[str, ...]:
    """Every ``iss`` a provider's tokens may carry, ``issuer`` first: a Cognito pool's other
    forms and replica regions (derived from an AWS issuer), or its aliases elsewhere. A
    malformed pool id (reported by config/validate.py) counts as not on AWS."""
    if provider != "cognito":
        return (issuer,)
    aws = cognito.AwsIssuer.parse(issuer)
    if aws is None or not cognito.POOL_ID.fullmatch(aws.pool_id):
        return tuple(dict.fromkeys((issuer, *aliases)))
    regions = [] if aws.updated else [aws.region]  # an original-form issuer may name a replica's region
    return tuple(dict.fromkeys((issuer, *cognito.pool_issuers(aws.pool_id, replica_regions, regions))))


class OidcConfig(_TokenSource, _Strict):
    """The identity provider and this proxy's client registration at it."""

    provider: Literal["cognito", "generic"] = "generic"
    # compared exactly with tokens' "iss"; cognito: the user pool's, https://cognito-idp.REGION.amazonaws.com/POOL_ID
    # (the pool's other issuers are accepted too: the updated form and the replica regions')
    issuer: ExactUrl
    cognito_domain: HttpUrl | None = None  # hosted UI / managed login domain (cognito only)
    # cognito: the regions a multi-Region replicated pool also issues tokens from (original issuer form)
    cognito_replica_regions: list[str] = []
    # cognito: further issuers of the same pool when it is not on AWS (the development provider's other form)
    issuer_aliases: list[ExactUrl] = []
    client_id: str = Field(min_length=1)
    client_secret: Secret | None = None  # omit for a public client (client_auth: none); a string or {file: PATH}
    client_auth: Literal["client_secret_basic", "client_secret_post", "none"] = "client_secret_basic"
    scopes: list[str] = ["openid", "email", "profile"]
    groups_claim: str | None = None  # default: "cognito:groups" (cognito), "groups" (generic)
    # Overrides of discovered (or, for cognito, derived) endpoints.
    jwks_uri: ExactUrl | None = None
    authorization_endpoint: ExactUrl | None = None
    token_endpoint: ExactUrl | None = None
    revocation_endpoint: ExactUrl | None = None
    end_session_endpoint: ExactUrl | None = None
    userinfo_endpoint: ExactUrl | None = None
    allowed_redirect_hosts: list[str] = []  # absolute rd targets allowed besides our own hosts
    post_logout_redirect_uri: ExactUrl | None = None  # default {public_url}/
    authorize_params: dict[str, str] = {}  # extra authorize parameters, e.g. {identity_provider: Google}
    # Bearer routes (API clients' access tokens).
    allowed_client_ids: list[str] = []  # cognito: the token's client_id must be one of these (default: [client_id])
    audiences: list[str] = []  # generic: "aud" must hold one of these; required for bearer routes
    require_at_jwt: bool = True  # generic: JOSE typ must be at+jwt (RFC 9068 2.1), so no ID token passes
    # PEM CA bundle that replaces the system's for calls to the provider (a private Keycloak, say);
    # bearer issuers use it too unless they set a ca_file of their own
    ca_file: CaBundle | None = None



class BearerIssuer(_TokenSource, _Strict):
    """A further issuer of access tokens for bearer routes (a second user pool, a machines'
    provider), each with its own keys, audience or client rules and groups claim. The oidc
    provider is the issuer named oidc; a route lists the issuers it accepts (bearer_issuers),
    and a token's issuer is chosen by its iss before any signature work."""

    name: str  # what routes' bearer_issuers and allow.issuers call it (oidc is taken by the oidc section)
    provider: Literal["cognito", "generic"] = "generic"  # cognito: a user pool's access tokens (client_id, token_use)
    # compared exactly with tokens' "iss"; cognito: the user pool's (its other issuers are accepted too)
    issuer: ExactUrl
    cognito_replica_regions: list[str] = []  # cognito: regions a replicated pool also issues tokens from
    issuer_aliases: list[ExactUrl] = []  # cognito: further issuers of the same pool when it is not on AWS
    # default: generic, the jwks_uri of {issuer}/.well-known/openid-configuration; cognito, {iss}/.well-known/jwks.json
    jwks_uri: ExactUrl | None = None
    audiences: list[str] = []  # generic: "aud" must hold one of these (required)
    # cognito: the access token's client_id must be one of these (required); generic: when given, the RFC 9068
    # client_id must be one of these too
    allowed_client_ids: list[str] = []
    require_at_jwt: bool = True  # generic: JOSE typ must be at+jwt (RFC 9068 2.1), so no ID token passes
    groups_claim: str | None = None  # default: "cognito:groups" (cognito), "groups" (generic)
    # PEM CA bundle that alone is trusted for this issuer's discovery and keys (default: the provider's
    # trust, oidc.ca_file or else the system's; /etc/ssl/certs/ca-certificates.crt is the system's on Debian)
    ca_file: CaBundle | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _ROUTE_NAME.fullmatch(value):
            raise ValueError(f"invalid issuer name {value!r}: 1-63 characters of letters, digits, '_', '.', '-'")
        return value



OIDC_ISSUER = "oidc"  # the oidc section's provider, as a bearer issuer and in allow.issuers


def route_issuers(route: Route) -> tuple[str, ...]:
    """The names of the issuers whose access tokens ``route`` accepts (default: the oidc provider's)."""
    return tuple(route.bearer_issuers) if route.bearer_issuers is not None else (OIDC_ISSUER,)


class VerifiedTokens(_Strict):
    """Bearer tokens already verified, remembered by the SHA-256 of the token (never the token
    itself), so a token's signature is checked once, not at every request. An entry lasts
    until the token expires and at most max_age, and only while the key that signed it is
    still in the issuer's published keys; exp and nbf are checked at every use."""

    max_entries: int = Field(default=10_000, ge=0)  # least recently used go first; 0 turns the cache off
    max_age: Annotated[float, BeforeValidator(parse_duration), Field(ge=0, le=3600)] = 300.0  # longest an entry answers (never past exp)


class SessionConfig(_Strict):
    cookie_name: str | None = None  # default "__Host-authproxy" on https, else "authproxy"
    cookie_domain: str | None = None  # share one sign-in across subdomains (prefix becomes __Secure-)
    secrets: list[Secret] = Field(min_length=1)  # first encrypts, all decrypt; >= 32 characters each; strings or {file: PATH}
    lifetime: PositiveDuration = 12 * 3600.0  # absolute
    idle_timeout: PositiveDuration = 2 * 3600.0
    refresh_before_expiry: PositiveDuration = 60.0  # clamped to half the access token's lifetime
    # OpenID Connect Back-Channel Logout 1.0 at {proxy_prefix}/backchannel_logout: the provider posts signed
    # logout tokens there and the sessions they name end on every replica (register the URL at the provider).
    backchannel_logout: bool = True

    @field_validator("secrets")
    @classmethod
    def _long_enough(cls, value: list[SecretStr]) -> list[SecretStr]:
        for secret in value:
            if len(secret.get_secret_value()) < 32:
                raise ValueError("each secret needs at least 32 characters (e.g. `openssl rand -base64 32`)")
        return value

    @field_validator("cookie_name")
    @classmethod
    def _cookie_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", value.removeprefix("__Host-").removeprefix("__Secure-")):
            raise ValueError("cookie_name: letters, digits, '_', '.', '-' only")
        return value


class DynamoDBConfig(_Strict):
    table: str = Field(default="authproxy-sessions", pattern=r"^[A-Za-z0-9_.-]{3,255}$")
    region: str = Field(min_length=1)
    endpoint_url: ExactUrl | None = None  # e.g. a local DynamoDB-compatible server
    create_table: bool = False  # create it (and enable TTL) at start-up if missing


class CacheConfig(_Strict):
    max_entries: int = Field(default=10_000, ge=1)
    # Memory for cached sessions per worker, estimated per session (tokens and claims as
    # Python objects): about 3 KiB for a plain session, 20+ KiB with a hundred groups.
    max_bytes: Annotated[int, BeforeValidator(parse_size), Field(ge=1024**2)] = 64 * 1024**2
    ttl: PositiveDuration = 30.0  # bounds how long a sign-out on one replica stays unseen on another


class StoreConfig(_Strict):
    backend: Literal["memory", "dynamodb"] = "memory"  # memory: one process, no HA
    dynamodb: DynamoDBConfig | None = None
    cache: CacheConfig = CacheConfig()

    @model_validator(mode="after")
    def _backend_settings(self) -> StoreConfig:
        if self.backend == "dynamodb" and self.dynamodb is None:
            raise ValueError("backend dynamodb needs a dynamodb: section (table, region)")
        return self


class AssertionConfig(_Strict):
    """Keys for X-Authproxy-Assertion; shared by replicas. The first signs, all are published."""

    signing_keys: list[Secret] = Field(min_length=1)  # PEM EC P-256 private keys; strings or {file: PATH}
    lifetime: Annotated[float, BeforeValidator(parse_duration), Field(gt=0, le=60)] = 30.0

    @field_validator("signing_keys")
    @classmethod
    def _keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        # Imported here, not for a cycle: the key parser brings joserfc and cryptography,
        # which a proxy without assertions never loads.
        from authproxy.config.keys import load_signing_key

        for index, key in enumerate(value):
            try:
                load_signing_key(key.get_secret_value())
            except ValueError as exc:
                raise ValueError(f"signing_keys[{index}]: {exc}") from None
        return value


class TlsConfig(_Strict):
    """Serve ``listen`` over HTTPS (e.g. a compose front door serving __Host- cookies without
    another container). Both files are read at start and again on every reload, so a renewed
    certificate is taken up with SIGHUP (or reload: watch) without dropping connections."""

    cert_file: FilePath  # PEM certificate chain, leaf first
    key_file: FilePath  # PEM private key of the leaf

    @model_validator(mode="after")
    def _loadable(self) -> TlsConfig:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(self.cert_file, self.key_file)
        except (ssl.SSLError, ValueError, OSError):
            raise ValueError("cert_file and key_file are not a PEM certificate chain and its private key") from None
        return self


class ForwardAuthConfig(_Strict):
    """Who may ask ``/oauth2/auth`` about another request (nginx auth_request, Traefik
    forwardAuth) and receive the route's injected headers, tokens included. Narrower
    than trusted_proxies on purpose: an ingress that forwards browsers' requests must not
    let a page's own JavaScript ask for its tokens. Anyone else learns only whether
    they are signed in."""

    callers: list[Network] = []


class TracingConfig(_Strict):
    """OpenTelemetry traces over OTLP/HTTP (docs/tracing.md); needs the tracing extra,
    ``pip install 'authproxy[tracing]'``. Keys set here win over the standard OTEL_*
    environment variables; a key left out falls back to them, then to the default."""

    # The OTLP/HTTP traces URL, e.g. http://collector:4318/v1/traces. Default:
    # OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces,
    # else http://localhost:4318/v1/traces.
    endpoint: ExactUrl | None = None
    # The share of new traces recorded, 0 to 1 (a trusted proxy's traceparent decides for
    # the traces it continues). Default: the sampler of OTEL_TRACES_SAMPLER and
    # OTEL_TRACES_SAMPLER_ARG, else every trace.
    sampling_ratio: float | None = Field(default=None, ge=0, le=1)
    # The resource's service.name. Default: OTEL_SERVICE_NAME (or service.name in
    # OTEL_RESOURCE_ATTRIBUTES), else "authproxy".
    service_name: str | None = Field(default=None, min_length=1)
    # Sent with each export (a collector's API key, say; strings or {file: PATH}), over
    # those of OTEL_EXPORTER_OTLP_TRACES_HEADERS.
    headers: dict[str, Secret] = {}

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name in value:
            if not valid_header_name(name):
                raise ValueError(f"headers: {name!r} is not a valid header name")
        return value

    @model_validator(mode="after")
    def _installed(self) -> TracingConfig:
        # The packages are an optional extra: say so at load (check-config too), not at the first span.
        from authproxy.tracing import EXTRA, missing_packages

        missing = missing_packages()
        if missing:
            raise ValueError(f"needs the OpenTelemetry packages (missing: {', '.join(missing)}): "
                             f"pip install '{EXTRA}'")
        return self


class Config(_Strict):
    listen: ListenAddr = ListenAddress("0.0.0.0", 8080)
    admin_listen: ListenAddr = ListenAddress("127.0.0.1", 9090)
    tls: TlsConfig | None = None  # serve listen over HTTPS (the admin listener stays plain HTTP)
    public_url: HttpUrl | None = None  # external base URL; required once a route signs users in
    workers: Annotated[int | str, BeforeValidator(parse_workers)] = 1  # "auto" = CPU count
    trusted_proxies: list[Network] = []  # peers whose X-Forwarded-* headers are believed
    shutdown_timeout: Annotated[float, BeforeValidator(parse_duration), Field(le=3600)] = 20.0
    log: LogConfig = LogConfig()
    limits: Limits = Limits()
    proxy_prefix: str = "/oauth2"  # where the proxy's own endpoints live
    oidc: OidcConfig | None = None  # required when a route signs users in
    session: SessionConfig | None = None  # required when a route signs users in
    store: StoreConfig = StoreConfig()  # where sessions live
    assertion: AssertionConfig | None = None  # required when a route sets assertion: true
    forward_auth: ForwardAuthConfig = ForwardAuthConfig()
    # issuers of access tokens besides the oidc provider's, for bearer routes that name them (routes[].bearer_issuers)
    bearer_issuers: list[BearerIssuer] = []
    verified_tokens: VerifiedTokens = VerifiedTokens()  # the bearer routes' cache of verified tokens
    tracing: TracingConfig | None = None  # OpenTelemetry traces (docs/tracing.md); off when absent
    express_lane: bool = True
    """Serve plain requests (HTTP/1.1, no body, no upgrade, not the proxy's own endpoints) on
    the proxy's own HTTP/1.1 server (llhttp), which hands a connection to aiohttp's server at
    its first other request; false: aiohttp's server for every request (docs/express-lane.md)."""
    reload: Literal["signal", "watch"] = "signal"  # SIGHUP reloads; watch also reloads when the file changes
    # The one directory authproxy writes to (with workers > 1: metrics snapshots and the last
    # good config copy). Default: $TMPDIR, else /tmp. With a read-only root filesystem, mount
    # an emptyDir/tmpfs here.
    runtime_dir: str | None = None
    routes: list[Route] = Field(min_length=1)

    @field_validator("proxy_prefix")
    @classmethod
    def _proxy_prefix(cls, value: str) -> str:
        if not re.fullmatch(r"(/[A-Za-z0-9_.~-]+)+", value):
            raise ValueError("proxy_prefix must be a plain path like '/oauth2' (no trailing slash)")
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: URL | None) -> URL | None:
        if value is not None and value.raw_path not in ("", "/"):
            raise ValueError("public_url must be a scheme and host only, e.g. 'https://app.example.com'")
        return value.with_path("") if value is not None else None


def serves_own_endpoints(config: Config) -> bool:
    """Whether the proxy answers ``{proxy_prefix}/`` itself: forward-auth and Envoy's checks
    wherever tokens can be checked (an oidc section, or bearer issuers alone), and sign-in
    when configured. No route may lie there (config/validate.py)."""
    return config.oidc is not None or bool(config.bearer_issuers)
