"""Files named by the configuration: secrets ({file: PATH}), the provider's CA bundle, the
TLS listener's certificate. Relative names resolve next to the configuration file."""

from pathlib import Path

import pytest

from authproxy.config import load_config
from authproxy.errors import ConfigError
from authproxy.web.reload import Reloader
from tests.support.tls import TestCA

SECRET = "file-secret-value-0123456789-abcdefghij"


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(body)
    return path


def signin(secret: str = "{file: secrets/client}", session: str = "[{file: secrets/session}]", extra: str = "") -> str:
    return f"""
public_url: https://app.example.com
oidc: {{issuer: "https://idp.example.com", client_id: app, client_secret: {secret}}}
session: {{secrets: {session}}}
{extra}
routes:
  - {{name: app, upstream: "http://127.0.0.1:8000", auth: login}}
"""


@pytest.fixture
def secrets_dir(tmp_path):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "client").write_text(SECRET + "\n")
    (tmp_path / "secrets" / "session").write_text(SECRET + "\r\n")
    return tmp_path / "secrets"


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        load_config(path, {})
    return [issue.render(raised.value.filename) for issue in raised.value.issues]


def test_secrets_come_from_files_relative_to_the_config_without_the_final_line_break(tmp_path, secrets_dir):
    config = load_config(write(tmp_path, signin()), {})
    assert config.oidc.client_secret.get_secret_value() == SECRET
    assert config.session.secrets[0].get_secret_value() == SECRET
    assert SECRET not in repr(config)


def test_an_absolute_path_and_an_environment_variable_naming_the_file(tmp_path, secrets_dir):
    body = signin(secret="{file: \"${SECRET_FILE}\"}", session=f"[{{file: {secrets_dir / 'session'}}}]")
    config = load_config(write(tmp_path, body), {"SECRET_FILE": str(secrets_dir / "client")})
    assert config.oidc.client_secret.get_secret_value() == SECRET


def test_base_dir_overrides_where_relative_names_resolve(tmp_path, secrets_dir):
    elsewhere = tmp_path / "copy"
    elsewhere.mkdir()
    copy = elsewhere / "config.yaml"
    copy.write_text(signin())  # the supervisor's copy for its workers lives in another directory
    with pytest.raises(ConfigError):
        load_config(copy, {})
    assert load_config(copy, {}, base_dir=str(tmp_path)).oidc.client_secret.get_secret_value() == SECRET


@pytest.mark.parametrize(
    ("secret", "content", "message"),
    [
        ("{file: secrets/missing}", None, "oidc.client_secret: cannot read secret file"),
        ("{file: secrets/empty}", "\n", "is empty"),
        ("{file: secrets/client, mode: raw}", None, "a secret is a string or {file: PATH}"),
        ("{path: secrets/client}", None, "a secret is a string or {file: PATH}"),
    ],
)
def test_unusable_secret_files_are_config_errors_naming_the_key(tmp_path, secrets_dir, secret, content, message):
    if content is not None:
        (secrets_dir / "empty").write_text(content)
    found = problems(write(tmp_path, signin(secret=secret)))
    assert any(message in problem for problem in found), found


def test_a_secret_files_content_is_never_echoed(tmp_path, secrets_dir):
    (secrets_dir / "short").write_text("TOO-SHORT-SECRET-VALUE\n")
    found = problems(write(tmp_path, signin(session="[{file: secrets/short}]")))
    assert any("session.secrets" in problem and "32 characters" in problem for problem in found), found
    assert not any("TOO-SHORT" in problem for problem in found)


@pytest.mark.parametrize(
    ("route", "key"),
    [
        ('{name: a, upstream: "http://127.0.0.1:1", auth: public, inject: {X-Token: {file: /var/run/secrets/token}}}',
         "routes[0].inject.X-Token"),
        ("{name: a, upstream: {file: /etc/hostname}, auth: public}", "routes[0].upstream"),
        ('{name: {file: /etc/hostname}, upstream: "http://127.0.0.1:1", auth: public}', "routes[0].name"),
    ],
)
def test_only_secret_keys_may_name_a_file(tmp_path, route, key):
    found = problems(write(tmp_path, f"routes:\n  - {route}\n"))
    assert any(f"{key}:" in problem for problem in found), found


def test_ca_file_must_hold_a_pem_certificate(tmp_path, secrets_dir):
    ca = TestCA(tmp_path / "pki")
    assert load_config(write(tmp_path, signin(extra="")), {}).oidc.ca_file is None
    body = signin().replace("client_id: app,", "client_id: app, ca_file: pki/ca.pem,")
    assert load_config(write(tmp_path, body), {}).oidc.ca_file == str(ca.ca_path)
    (tmp_path / "pki" / "junk.pem").write_text("not a certificate\n")
    found = problems(write(tmp_path, body.replace("pki/ca.pem", "pki/junk.pem")))
    assert any("oidc.ca_file" in problem and "no PEM CA certificate" in problem for problem in found), found
    found = problems(write(tmp_path, body.replace("pki/ca.pem", "pki/absent.pem")))
    assert any("oidc.ca_file" in problem and "cannot read file" in problem for problem in found), found


def test_a_bearer_issuer_has_a_ca_file_of_its_own(tmp_path, secrets_dir):
    ca = TestCA(tmp_path / "pki")
    issuer = '{name: machines, issuer: "https://machines.example.com", audiences: [api]%s}'
    config = load_config(write(tmp_path, signin(extra=f"bearer_issuers: [{issuer % ''}]")), {})
    assert config.bearer_issuers[0].ca_file is None  # the provider's trust
    config = load_config(write(tmp_path, signin(extra=f"bearer_issuers: [{issuer % ', ca_file: pki/ca.pem'}]")), {})
    assert config.bearer_issuers[0].ca_file == str(ca.ca_path) and config.oidc.ca_file is None
    (tmp_path / "pki" / "junk.pem").write_text("not a certificate\n")
    found = problems(write(tmp_path, signin(extra=f"bearer_issuers: [{issuer % ', ca_file: pki/junk.pem'}]")))
    assert any("bearer_issuers[0].ca_file" in problem and "no PEM CA certificate" in problem for problem in found), found


def test_tls_needs_a_matching_certificate_and_key(tmp_path):
    ca = TestCA(tmp_path / "pki")
    ca.issue("one")
    ca.issue("two")
    route = '\nroutes:\n  - {name: a, upstream: "http://127.0.0.1:1", auth: public}\n'
    config = load_config(write(tmp_path, "tls: {cert_file: pki/one.pem, key_file: pki/one.key}" + route), {})
    assert config.tls.cert_file == str(tmp_path / "pki" / "one.pem")
    found = problems(write(tmp_path, "tls: {cert_file: pki/one.pem, key_file: pki/two.key}" + route))
    assert any(problem.endswith("tls: cert_file and key_file are not a PEM certificate chain and its private key")
               for problem in found), found


def test_a_reload_renews_the_certificate_but_cannot_turn_tls_on_or_off(tmp_path):
    ca = TestCA(tmp_path / "pki")
    ca.issue("one")
    route = '\nroutes:\n  - {name: a, upstream: "http://127.0.0.1:1", auth: public}\n'
    path = write(tmp_path, route)
    applied = []
    reloader = Reloader(str(path), load_config(path, {}), lambda config, text: applied.append(config))
    path.write_text("tls: {cert_file: pki/one.pem, key_file: pki/one.key}" + route)
    assert reloader.reload("test") is False and applied == []
    path.write_text(route + "  - {name: b, upstream: \"http://127.0.0.1:2\", auth: public}\n")
    assert reloader.reload("test") is True and len(applied) == 1
