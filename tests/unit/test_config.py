"""Configuration loading: valid files, each kind of error, env substitution, masking."""

from pathlib import Path

import pytest

from authproxy.config import load_config, parse_config
from authproxy.config.schema import ListenAddress
from authproxy.errors import ConfigError
from authproxy.web.cpus import worker_count

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = """
routes:
  - name: web
    upstream: "http://127.0.0.1:8001"
    auth: public
"""


def parse(text, env=None):
    return parse_config(text, "test.yaml", env or {})


def errors(text, env=None):
    with pytest.raises(ConfigError) as caught:
        parse(text, env)
    return caught.value


def test_example_file_is_valid():
    config = load_config(ROOT / "config.example.yaml", {"UPSTREAM_HOST": "127.0.0.1"})
    assert config.routes


SIGN_IN = (
    "public_url: https://app.example.com\n"
    "oidc: {issuer: 'https://idp.example.com', client_id: c, client_secret: s}\n"
    "session: {secrets: ['" + "z" * 40 + "']}\n"
)


def test_sign_in_example_is_valid():
    from joserfc.jwk import ECKey

    key = ECKey.generate_key("P-256").as_pem(private=True).decode()
    env = {"OIDC_CLIENT_SECRET": "client-secret", "SESSION_SECRET": "s" * 44, "ASSERTION_KEY": key,
           "MACHINE_CLIENT_SECRET": "machine-secret"}
    config = load_config(ROOT / "config.signin.example.yaml", env)
    assert {route.auth for route in config.routes} == {"login", "bearer", "optional"}
    assert key not in repr(config)
    assert config.oidc.provider == "cognito" and config.oidc.effective_groups_claim == "cognito:groups"
    assert config.routes[0].auth == "login"
    assert "s" * 44 not in repr(config)  # secrets are masked


@pytest.mark.parametrize(
    ("snippet", "words"),
    [
        ("public_url: https://a.example\nroutes: [{name: a, upstream: 'http://u', auth: login}]", "needs oidc, session"),
        ("oidc: {issuer: 'https://i', client_id: c, provider: cognito, client_secret: s}\n" + MINIMAL, "cognito_domain"),
        ("oidc: {issuer: 'https://i', client_id: c}\n" + MINIMAL, "needs client_secret"),
        ("oidc: {issuer: 'https://i', client_id: c, client_auth: none, scopes: [email]}\n" + MINIMAL, "openid"),
        ("session: {secrets: [short]}\n" + MINIMAL, "32 characters"),
        ("proxy_prefix: /oauth2/\n" + MINIMAL, "proxy_prefix"),
        (SIGN_IN + "workers: 2\nroutes: [{name: a, upstream: 'http://u', auth: login}]", "store backend memory keeps sessions in one process"),
        (SIGN_IN + "routes: [{name: a, match: {path_prefix: /oauth2/x}, upstream: 'http://u', auth: public}]",
         "lies under proxy_prefix"),
        # an oidc section without sign-in still answers forward-auth and Envoy's checks there
        ("oidc: {issuer: 'https://i', client_id: c, client_secret: s, audiences: [api]}\n"
         "routes: [{name: a, match: {path_prefix: /oauth2/x}, upstream: 'http://u', auth: bearer}]",
         "lies under proxy_prefix"),
        (SIGN_IN.replace("https://app", "http://app").replace("secrets:", "cookie_name: __Host-s, secrets:")
         + "routes: [{name: a, upstream: 'http://u', auth: login}]", "need an https public_url"),
        (SIGN_IN.replace("secrets:", "cookie_name: __Host-s, cookie_domain: example.com, secrets:")
         + "routes: [{name: a, upstream: 'http://u', auth: login}]", "cannot have a cookie_domain"),
    ],
)
def test_sign_in_config_errors(snippet, words):
    assert words in str(errors(snippet))


def test_store_section():
    config = parse(SIGN_IN + "workers: 2\nstore: {backend: dynamodb, dynamodb: {region: eu-west-1}, cache: {ttl: 10s}}\n"
                   "routes: [{name: a, upstream: 'http://u', auth: login}]")
    assert config.store.dynamodb.table == "authproxy-sessions" and config.store.cache.ttl == 10
    assert config.store.cache.max_entries == 10_000 and config.store.dynamodb.create_table is False
    assert "dynamodb: section" in str(errors("store: {backend: dynamodb}\n" + MINIMAL))
    assert worker_count(parse("workers: 2\n" + MINIMAL)) == 2  # no sessions, no store concerns


@pytest.mark.parametrize(
    ("route", "path", "words"),
    [
        ("{name: a, upstream: 'http://u', auth: login, inject: {X-A: '{token}'}}", "routes[0].inject.X-A", "unknown placeholder"),
        ("{name: a, upstream: 'http://u', auth: login, inject: {'Bad Name': '{sub}'}}", "routes[0].inject", "header name"),
        ("{name: a, upstream: 'http://u', auth: public, inject: {X-A: '{sub}'}}", "routes[0].inject.X-A", "needs an identity"),
    ],
)
def test_inject_errors(route, path, words):
    error = errors(SIGN_IN + f"routes: [{route}]")
    assert any(issue.path == path and words in issue.message for issue in error.issues), str(error)


def test_session_secret_never_echoed():
    error = errors("session: {secrets: ['${S}']}\n" + MINIMAL, {"S": "tooshort-secret"})
    assert "tooshort-secret" not in str(error)


def test_defaults():
    config = parse(MINIMAL)
    assert config.listen == ListenAddress("0.0.0.0", 8080)
    assert config.admin_listen == ListenAddress("127.0.0.1", 9090)
    assert config.workers == 1 and worker_count(config) == 1
    assert config.shutdown_timeout == 20
    assert config.log.level == "info" and config.log.format == "json" and config.log.access is True
    route = config.routes[0]
    assert route.max_body == 10 * 1024**2
    assert route.timeouts.connect == 5 and route.timeouts.read == 60
    assert route.strip_prefix is False and route.preserve_host is False


def test_full_route_parses_units():
    config = parse(
        """
listen: "[::1]:8443"
workers: auto
trusted_proxies: ["10.0.0.0/8", "127.0.0.1"]
shutdown_timeout: "250ms"
public_url: "https://app.example.com/"
routes:
  - name: api-a
    match: {host: "*.Example.com", path_prefix: "/api/a/", methods: [get, POST]}
    upstream: "http://127.0.0.1:8001/base"
    strip_prefix: true
    timeouts: {connect: "2s", read: "1m"}
    max_body: "1MiB"
    auth: public
"""
    )
    assert config.listen == ListenAddress("::1", 8443)
    assert worker_count(config) >= 1
    assert config.shutdown_timeout == 0.25
    assert str(config.public_url) == "https://app.example.com"
    route = config.routes[0]
    assert route.match.host == "*.example.com"
    assert route.match.methods == ["GET", "POST"]
    assert route.timeouts.read == 60 and route.max_body == 1024**2


def test_env_substitution():
    config = parse(MINIMAL.replace("127.0.0.1:8001", "${UP_HOST}:${UP_PORT:-9000}"), {"UP_HOST": "10.1.2.3"})
    assert str(config.routes[0].upstream) == "http://10.1.2.3:9000"


def test_every_error_in_one_pass_with_line_and_path():
    error = errors(
        """listen: "0.0.0.0:99999"
workerz: 2
routes:
  - name: a
    match: {path_prefx: /x}
    upstream: "ftp://nope"
    auth: public
    timeouts: {read: "soon"}
  - name: a
    upstream: "http://127.0.0.1:1"
    auth: sometimes
"""
    )
    rendered = {(issue.line, issue.path): issue.message for issue in error.issues}
    assert (1, "listen") in rendered and "port" in rendered[(1, "listen")]
    assert "did you mean 'workers'" in rendered[(2, "workerz")]
    assert "did you mean 'path_prefix'" in rendered[(5, "routes[0].match.path_prefx")]
    assert "http" in rendered[(6, "routes[0].upstream")]
    assert "invalid duration" in rendered[(8, "routes[0].timeouts.read")]
    assert "duplicate route name" in rendered[(9, "routes[1].name")]
    assert "sometimes" in rendered[(11, "routes[1].auth")]
    assert len(error.issues) == 7
    assert str(error).splitlines()[0].startswith("test.yaml:1: listen:")


@pytest.mark.parametrize(
    ("snippet", "path", "words"),
    [
        ("routes: []", "routes", "at least 1"),
        ("routes:\n  - {name: a, auth: public}", "routes[0].upstream", "missing"),
        ("workers: 0\n" + MINIMAL, "workers", "1 to 256"),
        ("trusted_proxies: [bogus]\n" + MINIMAL, "trusted_proxies[0]", "CIDR"),
        ("log: {level: loud}\n" + MINIMAL, "log.level", "loud"),
        ("admin_listen: localhost\n" + MINIMAL, "admin_listen", "host:port"),
        ("public_url: https://x.example/path\n" + MINIMAL, "public_url", "scheme and host"),
        (MINIMAL.replace("auth: public", "auth: public\n    match: {path_regex: '(['}"), "routes[0].match.path_regex", "invalid"),
        (MINIMAL.replace("auth: public", "auth: public\n    match: {path_prefix: /a, path_regex: /b}"), "routes[0].match", "not both"),
        (MINIMAL.replace("auth: public", "auth: public\n    match: {path_prefix: a/b}"), "routes[0].match.path_prefix", "start with"),
        (MINIMAL.replace("auth: public", "auth: public\n    match: {host: 'bad host'}"), "routes[0].match.host", "invalid host"),
        (MINIMAL.replace("auth: public", "auth: public\n    strip_prefix: true"), "routes[0]", "strip_prefix"),
        (MINIMAL.replace("name: web", "name: 'web route'"), "routes[0].name", "invalid route name"),
        (MINIMAL.replace("auth: public", "auth: public\n    max_body: lots"), "routes[0].max_body", "invalid size"),
        ("- just\n- a list", "", "mapping"),
        ("routes: [\n", "", "invalid YAML"),
    ],
)
def test_each_kind_of_error(snippet, path, words):
    error = errors(snippet)
    matching = [issue for issue in error.issues if issue.path == path]
    assert matching, f"no issue at {path!r}: {error}"
    assert words in matching[0].message


def test_unset_variable_named_once():
    error = errors(MINIMAL.replace("http://127.0.0.1:8001", "${UPSTREAM_URL}"))
    assert len(error.issues) == 1
    assert "UPSTREAM_URL" in error.issues[0].message
    assert error.issues[0].path == "routes[0].upstream"


def test_values_from_environment_are_masked_in_errors():
    secret = "s3cr3t-value-from-env"
    error = errors(MINIMAL.replace("http://127.0.0.1:8001", "${UP}"), {"UP": secret})
    assert secret not in str(error)
    assert "***" in str(error)


def test_unknown_keys_never_echo_their_values():
    error = errors(MINIMAL + "    client_secret: hunter2-hunter2\n")
    assert "hunter2" not in str(error)
    assert error.issues[0].path == "routes[0].client_secret"


def test_duplicate_keys_are_errors():
    error = errors(MINIMAL.replace("auth: public", "auth: public\n    upstream: http://127.0.0.1:9"))
    assert "appears twice" in str(error) and error.issues[0].line == 6


@pytest.mark.parametrize(
    ("snippet", "path"),
    [
        ("limits: {client_idle_timeout: 0}", "limits.client_idle_timeout"),
        ("limits: {header_size: 10}", "limits.header_size"),
        ("shutdown_timeout: .inf", "shutdown_timeout"),
        ("shutdown_timeout: .nan", "shutdown_timeout"),
        ("shutdown_timeout: 99999999999d", "shutdown_timeout"),
    ],
)
def test_bounds(snippet, path):
    assert any(issue.path == path for issue in errors(snippet + "\n" + MINIMAL).issues)


@pytest.mark.parametrize("url", ["http://user:hunter2pw@example.com/?q=1", "ftp://bob:hunter2pw@example.com"])
def test_upstream_credentials_never_echoed(url):
    error = errors(MINIMAL.replace("http://127.0.0.1:8001", url))
    assert "hunter2pw" not in str(error)
    assert "credentials" in str(error)


@pytest.mark.parametrize("url", ["http://exa mple.com", "http://%zz/", "http://", "https://[::zz]/"])
def test_upstream_host_must_be_valid(url):
    assert errors(MINIMAL.replace("http://127.0.0.1:8001", url)).issues[0].path == "routes[0].upstream"


def test_workers_auto_is_bounded_by_usable_cpus():
    import os

    config = parse("workers: auto\n" + MINIMAL)
    assert 1 <= worker_count(config) <= min(256, os.cpu_count() or 1)


def test_missing_file():
    with pytest.raises(ConfigError) as caught:
        load_config("/nonexistent/authproxy.yaml")
    assert "cannot read" in str(caught.value)
