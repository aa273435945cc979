"""The Envoy and Istio examples (deploy/envoy/, deploy/istio/), checked statically.

Envoy: deploy/envoy/envoy.yaml is parsed into Envoy's own API (the envoy.config.bootstrap.v3
protobuf messages from the xds-protos package, generated from envoyproxy/envoy's api/ tree),
strictly: an unknown field or a wrong type fails as it fails `envoy --mode validate`; the
typed_config of every extension is unpacked and checked too, with the protoc-gen-validate rules
Envoy applies at load time (required fields, lengths, ranges, known enum values), and no
deprecated field may be used. Then the properties authproxy's Envoy endpoint relies on
(authproxy/web/handler.py, _envoy_check) are checked one by one.

Istio: the manifests against the API schemas, strictly (kubernetes-validate for built-in kinds,
the CRDs' openAPIV3Schema for AuthorizationPolicy, Gateway, VirtualService and EnvoyFilter, trimmed
copies under tests/data/crds/istio/), the mesh config's extension provider against the fields of
Istio's MeshConfig proto, and the cross-references between them and authproxy's config.

Both example authproxy configs pass `authproxy check-config`. No Envoy binary exists for these
machines: the endpoint itself is driven with Envoy's exact request shapes in the integration tests.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from authproxy.config import parse_config
from authproxy.config.schema import Config
from authproxy.policy.paths import normalise_path
from authproxy.web.handler import ENVOY_ENDPOINT
from tests.support.manifests import crd_validators, documents, schema_errors, secret_files, validate_manifest

ROOT = Path(__file__).resolve().parents[2]
ENVOY = ROOT / "deploy" / "envoy"
ISTIO = ROOT / "deploy" / "istio"
ISTIO_CRDS = ROOT / "tests" / "data" / "crds" / "istio"
BIN = Path(sys.executable).parent
SECRET_MOUNT = "/etc/authproxy-secrets"

DEFAULT_PREFIX = Config.model_fields["proxy_prefix"].default
ENVOY_PREFIX = f"{DEFAULT_PREFIX}/{ENVOY_ENDPOINT}"
# What the gate reads from a check: the session, a bearer token, whether a browser navigates
# (sign-in redirect), the scheme for the sign-in URL, and a CORS preflight's two headers.
CHECK_HEADERS = {"cookie", "authorization", "accept", "x-forwarded-proto", "origin", "access-control-request-method"}
# Headers that describe another request (nginx / Traefik forward-auth) or choose the host of the
# URLs authproxy builds: never from a client, never on the check.
DESCRIPTION_HEADERS = {"x-original-uri", "x-forwarded-uri", "x-original-method", "x-forwarded-method", "x-forwarded-host"}
IDENTITY_HEADERS = {"x-auth-request-user", "x-auth-request-email", "x-auth-request-groups"}

EXT_AUTHZ = "envoy.filters.http.ext_authz"
EXT_AUTHZ_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
PER_ROUTE_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

GATEWAY_PRINCIPAL = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"


# --- helpers ---------------------------------------------------------------------------

def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@functools.cache
def envoy() -> dict:
    return load(ENVOY / "envoy.yaml")


def hcm() -> dict:
    (listener,) = envoy()["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (manager,) = chain["filters"]
    assert manager["typed_config"]["@type"] == HCM_TYPE
    return manager["typed_config"]


def ext_authz() -> dict:
    filters = hcm()["http_filters"]
    names = [f["name"] for f in filters]
    assert names == [EXT_AUTHZ, "envoy.filters.http.router"], names  # the check runs before routing upstream
    assert filters[0]["typed_config"]["@type"] == EXT_AUTHZ_TYPE
    return filters[0]["typed_config"]


def envoy_routes() -> list[dict]:
    (host,) = hcm()["route_config"]["virtual_hosts"]
    return host["routes"]


def check_disabled(route: dict) -> bool:
    per_route = route.get("typed_per_filter_config", {}).get(EXT_AUTHZ)
    if per_route is None:
        return False
    assert per_route["@type"] == PER_ROUTE_TYPE
    return per_route.get("disabled") is True


def exact_names(matcher: dict) -> set[str]:
    """The names a ListStringMatcher lets through; only exact, lower-case names are accepted here:
    a prefix, suffix, contains or regex would let unlisted headers through as well."""
    names = set()
    for pattern in matcher["patterns"]:
        assert set(pattern) <= {"exact", "ignore_case"}, f"not an exact name: {pattern}"
        assert pattern["exact"] == pattern["exact"].lower(), pattern
        names.add(pattern["exact"])
    return names


def envoy_route_for(path: str) -> dict:
    """The route Envoy picks for ``path`` (first match wins; exact ``path`` or ``prefix``), on the
    path as authproxy normalises it: envoy.yaml has Envoy normalise it too (normalize_path,
    merge_slashes), so the two see the same path."""
    normalised = normalise_path(path).path
    for route in envoy_routes():
        match = route["match"]
        assert set(match) in ({"path"}, {"prefix"}), f"{route['name']}: only path/prefix matches are modelled"
        if normalised == match.get("path") or ("prefix" in match and normalised.startswith(match["prefix"])):
            return route
    raise AssertionError(f"no route for {path}")


def authproxy_endpoint(path: str, prefix: str = DEFAULT_PREFIX) -> str | None:
    """What authproxy's handler does with ``path`` under its own prefix: "forward-auth",
    "envoy", "sign-in", or None (not its own endpoint)."""
    normalised = normalise_path(path).path
    if not normalised.startswith(prefix + "/"):
        return None
    endpoint = normalised[len(prefix) + 1:]
    if endpoint == "auth":
        return "forward-auth"
    if endpoint == ENVOY_ENDPOINT or endpoint.startswith(ENVOY_ENDPOINT + "/"):
        return "envoy"
    return "sign-in"


# Paths around the two endpoints only Envoy may call: spellings authproxy takes for them.
TRICKY_PATHS = [
    "/oauth2/auth", "/oauth2//auth", "/oauth2/./auth", "/oauth2/x/../auth", "/oauth2/%61uth", "//oauth2/auth",
    "/oauth2/envoy", "/oauth2/envoy/", "/oauth2/envoy/admin/x", "/oauth2//envoy/x", "/oauth2/%65nvoy/x",
    "/oauth2/envoyx", "/oauth2/auth/", "/oauth2/start", "/oauth2/callback", "/oauth2/sign_out", "/oauth2/userinfo",
    "/", "/admin/", "/api/orders",
]


def injected_headers(config) -> set[str]:
    """Every header an authproxy config's routes put on the upstream request, lower-case."""
    names = set()
    for route in config.routes:
        names |= {name.lower() for name in route.inject}
        if route.assertion:
            names.add("x-authproxy-assertion")
        if route.service_token is not None and not any(name.lower() == "authorization" for name in route.inject):
            names.add("authorization")
    return names


def assertion_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


ENVOY_EXAMPLE_ENV = {"OIDC_CLIENT_SECRET": "c" * 40, "SESSION_SECRET": "s" * 44}


@functools.cache
def envoy_example_config():
    return parse_config((ENVOY / "authproxy.yaml").read_text(), "authproxy.yaml",
                        {**ENVOY_EXAMPLE_ENV, "ASSERTION_KEY": assertion_key()})


def check_config(text: str, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    config_path = tmp_path / "config.yaml"
    config_path.write_text(text)
    return subprocess.run([str(BIN / "authproxy"), "check-config", str(config_path)], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", **env})


# --- Envoy: against Envoy's published API ----------------------------------------------

@pytest.fixture(scope="module")
def envoy_api():
    """Envoy's API as Python protobuf modules (PyPI xds-protos, generated from envoyproxy/envoy
    api/ by the gRPC project), with the extensions envoy.yaml names registered for Any."""
    try:
        from google.protobuf import json_format
        from validate import validate_pb2

        import envoy.config.bootstrap.v3.bootstrap_pb2 as bootstrap_pb2
        import envoy.extensions.filters.http.ext_authz.v3.ext_authz_pb2  # noqa: F401 - registers the type
        import envoy.extensions.filters.http.router.v3.router_pb2  # noqa: F401
        import envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2 as hcm_pb2
    except ImportError as exc:  # pragma: no cover - a missing test dependency
        pytest.fail(f"Envoy's API for Python is missing ({exc}): pip install 'xds-protos>=1.85' (the test extras)")
    return {"json_format": json_format, "validate": validate_pb2, "Bootstrap": bootstrap_pb2.Bootstrap,
            "HttpConnectionManager": hcm_pb2.HttpConnectionManager}


def is_repeated(field) -> bool:
    """protobuf 7 dropped FieldDescriptor.label for is_repeated."""
    return field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED


def rule_violations(message, validate_pb2, where: str = "") -> list[str]:
    """The protoc-gen-validate rules of Envoy's API (the [(validate.rules)] options Envoy checks
    when it loads a config) that ``message`` breaks, recursively, with every Any unpacked.
    protoc-gen-validate's own Python runtime does not load under protobuf 7, so the rule kinds
    the shipped configs can meet are evaluated here: message.required, required oneofs,
    string lengths and prefixes, number and duration ranges, enum defined_only, repeated
    min_items, and any.required."""
    from google.protobuf import duration_pb2, symbol_database

    problems: list[str] = []
    descriptor = message.DESCRIPTOR
    if descriptor.full_name == "google.protobuf.Any":
        if not message.type_url:
            return problems
        name = message.type_url.split("/")[-1]
        try:
            inner = symbol_database.Default().GetSymbol(name)()
        except KeyError:
            return [f"{where}: unknown type {name}"]
        message.Unpack(inner)
        return rule_violations(inner, validate_pb2, where + f"<{name}>")
    for oneof in descriptor.oneofs:
        options = oneof.GetOptions()
        if options.HasExtension(validate_pb2.required) and options.Extensions[validate_pb2.required] \
                and message.WhichOneof(oneof.name) is None:
            problems.append(f"{where}.{oneof.name}: one of {[f.name for f in oneof.fields]} is required")
    for field in descriptor.fields:
        path = f"{where}.{field.name}"
        options = field.GetOptions()
        rules = options.Extensions[validate_pb2.rules] if options.HasExtension(validate_pb2.rules) else None
        repeated = is_repeated(field)
        is_message = field.message_type is not None
        present = (len(getattr(message, field.name)) > 0) if repeated else \
            (message.HasField(field.name) if is_message or field.containing_oneof is not None else True)
        if rules is not None:
            kind = rules.WhichOneof("type")
            if kind == "message" and rules.message.required and not present:
                problems.append(f"{path}: required")
            if kind == "repeated" and len(getattr(message, field.name)) < rules.repeated.min_items:
                problems.append(f"{path}: at least {rules.repeated.min_items} item(s)")
            if kind == "duration" and rules.duration.required and not present:
                problems.append(f"{path}: required")
            if kind == "any" and rules.any.required and not present:
                problems.append(f"{path}: required")
            if present and not repeated:
                value = getattr(message, field.name)
                if kind == "string":
                    string = rules.string
                    if string.HasField("min_len") and len(value) < string.min_len:
                        problems.append(f"{path}: at least {string.min_len} character(s)")
                    if string.HasField("max_len") and len(value) > string.max_len:
                        problems.append(f"{path}: at most {string.max_len} character(s)")
                    if string.HasField("prefix") and not value.startswith(string.prefix):
                        problems.append(f"{path}: must start with {string.prefix!r}")
                    allowed = getattr(string, "in")
                    if allowed and value not in allowed:
                        problems.append(f"{path}: one of {list(allowed)}")
                elif kind in ("uint32", "uint64", "int32", "int64", "double", "float"):
                    number = getattr(rules, kind)
                    for bound, ok in (("gt", lambda v, b: v > b), ("gte", lambda v, b: v >= b),
                                      ("lt", lambda v, b: v < b), ("lte", lambda v, b: v <= b)):
                        if number.HasField(bound) and not ok(value, getattr(number, bound)):
                            problems.append(f"{path}: {bound} {getattr(number, bound)}")
                elif kind == "enum" and rules.enum.defined_only and field.enum_type.values_by_number.get(value) is None:
                    problems.append(f"{path}: {value} is not a defined {field.enum_type.name}")
                elif kind == "duration":
                    seconds = value.ToTimedelta().total_seconds()
                    for bound, ok in (("gt", lambda v, b: v > b), ("gte", lambda v, b: v >= b),
                                      ("lt", lambda v, b: v < b), ("lte", lambda v, b: v <= b)):
                        if rules.duration.HasField(bound):
                            limit = duration_pb2.Duration()
                            limit.CopyFrom(getattr(rules.duration, bound))
                            if not ok(seconds, limit.ToTimedelta().total_seconds()):
                                problems.append(f"{path}: {bound} {limit.ToJsonString()}")
        if not is_message or not present:
            continue
        if field.message_type.GetOptions().map_entry:
            for key, value in getattr(message, field.name).items():
                if field.message_type.fields_by_name["value"].message_type is not None:
                    problems += rule_violations(value, validate_pb2, f"{path}[{key}]")
        elif repeated:
            for index, item in enumerate(getattr(message, field.name)):
                problems += rule_violations(item, validate_pb2, f"{path}[{index}]")
        else:
            problems += rule_violations(getattr(message, field.name), validate_pb2, path)
    return problems


def deprecated_fields(message, where: str = "") -> list[str]:
    """Every field set in ``message`` (recursively, Any unpacked) that Envoy's API marks deprecated."""
    from google.protobuf import symbol_database

    found = []
    if message.DESCRIPTOR.full_name == "google.protobuf.Any":
        if message.type_url:
            inner = symbol_database.Default().GetSymbol(message.type_url.split("/")[-1])()
            message.Unpack(inner)
            found += deprecated_fields(inner, where + f"<{inner.DESCRIPTOR.full_name}>")
        return found
    for field, value in message.ListFields():
        path = f"{where}.{field.name}"
        if field.GetOptions().deprecated:
            found.append(path)
        if field.message_type is None or field.message_type.GetOptions().map_entry:
            continue
        for item in (value if is_repeated(field) else [value]):
            found += deprecated_fields(item, path)
    return found


def parse_envoy(document: dict, api: dict):
    return api["json_format"].ParseDict(json.loads(json.dumps(document)), api["Bootstrap"]())


def test_envoy_config_is_valid_envoy_v3(envoy_api):
    bootstrap = parse_envoy(envoy(), envoy_api)  # strict: unknown fields and wrong types raise
    assert not rule_violations(bootstrap, envoy_api["validate"]), rule_violations(bootstrap, envoy_api["validate"])
    assert not deprecated_fields(bootstrap), deprecated_fields(bootstrap)


def test_envoy_validation_refuses_what_envoy_refuses(envoy_api):
    """The checks above must be able to fail: a typo, a wrong type, an unknown enum value, a
    missing required field, a deprecated field."""
    json_format = envoy_api["json_format"]

    def broken(mutate) -> dict:
        document = json.loads(json.dumps(envoy()))
        mutate(document)
        return document

    def authz(document):
        return document["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
            "http_filters"][0]["typed_config"]

    for mutate in (lambda d: d["static_resources"]["clusters"][0].update(connect_timeot="1s"),
                   lambda d: authz(d).update(failure_mode_allow="no"),
                   lambda d: authz(d)["status_on_error"].update(code="Unavailable"),
                   lambda d: authz(d)["http_service"].update(path_prefx="/oauth2/envoy")):
        with pytest.raises(json_format.ParseError):
            parse_envoy(broken(mutate), envoy_api)
    missing_timeout = parse_envoy(broken(lambda d: authz(d)["http_service"]["server_uri"].pop("timeout")), envoy_api)
    assert any("server_uri.timeout: required" in p for p in rule_violations(missing_timeout, envoy_api["validate"]))
    no_cluster = parse_envoy(broken(lambda d: d["static_resources"]["clusters"][0].update(name="")), envoy_api)
    assert any("clusters[0].name" in p for p in rule_violations(no_cluster, envoy_api["validate"]))
    deprecated = parse_envoy(broken(lambda d: authz(d)["http_service"].update(
        authorization_request={"allowed_headers": {"patterns": [{"exact": "cookie"}]}})), envoy_api)
    assert any("authorization_request.allowed_headers" in p for p in deprecated_fields(deprecated))


# --- Envoy: what authproxy's endpoint relies on -----------------------------------------

def test_envoy_asks_authproxys_envoy_endpoint():
    service = ext_authz()["http_service"]
    assert service["path_prefix"] == ENVOY_PREFIX == "/oauth2/envoy"
    assert envoy_example_config().proxy_prefix == DEFAULT_PREFIX
    assert service["server_uri"]["cluster"] == "authproxy"
    assert service["server_uri"]["timeout"]  # Envoy's default is 200 ms: too short for a token refresh


def test_envoy_check_carries_what_the_gate_reads():
    authz = ext_authz()
    allowed = exact_names(authz["allowed_headers"])
    assert CHECK_HEADERS <= allowed
    assert not allowed & DESCRIPTION_HEADERS
    # the deprecated place for the same list is unused (Envoy refuses both at once)
    assert "allowed_headers" not in authz["http_service"].get("authorization_request", {})
    assert "with_request_body" not in authz  # authproxy decides on the headers; Content-Length: 0


def test_envoy_fails_closed_with_503():
    authz = ext_authz()
    assert authz["failure_mode_allow"] is False
    assert authz["status_on_error"] == {"code": "ServiceUnavailable"}  # envoy.type.v3.StatusCode 503
    assert not authz.get("clear_route_cache", False)
    assert "filter_enabled" not in authz and "filter_enabled_metadata" not in authz and "deny_at_disable" not in authz


def test_envoy_copies_exactly_the_headers_authproxy_sets():
    allowed = exact_names(ext_authz()["http_service"]["authorization_response"]["allowed_upstream_headers"])
    expected = IDENTITY_HEADERS | {"cookie", "authorization"} | injected_headers(envoy_example_config())
    assert {"x-authproxy-assertion", "x-user-email", "x-user-groups", "x-user-sub"} <= expected
    assert allowed == expected  # nothing else: not authproxy's X-Request-Id, Server, Cache-Control
    authz = ext_authz()["http_service"]["authorization_response"]
    assert "allowed_upstream_headers_to_append" not in authz  # appended, a client's copy would stay


def test_envoy_connection_manager_guards_the_names_and_the_scheme():
    manager = hcm()
    assert manager["common_http_protocol_options"]["headers_with_underscores_action"] == "DROP_HEADER"
    assert manager["use_remote_address"] is True and not manager.get("xff_num_trusted_hops")
    assert manager["normalize_path"] is True and manager["merge_slashes"] is True


def test_envoy_routes_keep_the_check_endpoints_from_the_public():
    routes = envoy_routes()
    names = [route["name"] for route in routes]
    public = names.index("authproxy")
    for name, match in (("not-public-auth", {"path": "/oauth2/auth"}), ("not-public-envoy", {"prefix": ENVOY_PREFIX})):
        route = routes[names.index(name)]
        assert names.index(name) < public, f"{name} must come before the /oauth2/ route"
        assert route["match"] == match and route["direct_response"] == {"status": 404}
    sign_in = routes[public]
    assert sign_in["match"] == {"prefix": DEFAULT_PREFIX + "/"}
    assert sign_in["route"]["cluster"] == "authproxy" and check_disabled(sign_in)
    assert DESCRIPTION_HEADERS <= set(sign_in["request_headers_to_remove"])
    (app,) = [route for route in routes if route.get("route", {}).get("cluster") == "app"]
    assert not check_disabled(app) and app is routes[-1] and app["match"] == {"prefix": "/"}
    assert not hcm()["route_config"].get("typed_per_filter_config")  # not disabled for the whole host
    # every spelling authproxy would answer as /oauth2/auth or /oauth2/envoy/... meets a 404 first,
    # and whatever is neither 404 nor authproxy's goes through the check
    for path in TRICKY_PATHS:
        route = envoy_route_for(path)
        endpoint = authproxy_endpoint(path)
        if endpoint in ("forward-auth", "envoy"):
            assert route.get("direct_response") == {"status": 404}, path
        elif endpoint == "sign-in":
            assert route["name"] in ("authproxy", "not-public-envoy"), path
        else:
            assert route is app, path


def test_envoy_clusters_are_the_documented_addresses():
    text = (ENVOY / "envoy.yaml").read_text()
    clusters = {c["name"]: c for c in envoy()["static_resources"]["clusters"]}
    assert set(clusters) == {"authproxy", "app"}
    address = {name: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
               for name, c in clusters.items()}
    assert (address["authproxy"]["address"], address["authproxy"]["port_value"]) == ("authproxy", 8080)
    assert (address["app"]["address"], address["app"]["port_value"]) == ("app", 3000)
    assert "authproxy:8080" in text and "app:3000" in text  # named in the header comment as the ones to change
    assert address["authproxy"]["port_value"] == envoy_example_config().listen.port


def test_envoy_example_authproxy_config(tmp_path):
    config = envoy_example_config()
    callers = [str(network) for network in config.forward_auth.callers]
    assert callers and callers == [str(network) for network in config.trusted_proxies]
    assert all(not ipaddress.ip_network(c).is_loopback for c in callers)  # Envoy's address, not a sidecar's
    result = check_config((ENVOY / "authproxy.yaml").read_text(), tmp_path,
                          {**ENVOY_EXAMPLE_ENV, "ASSERTION_KEY": assertion_key()})
    assert result.returncode == 0, result.stdout + result.stderr
    result = check_config((ENVOY / "authproxy.yaml").read_text(), tmp_path, {})
    assert result.returncode == 2 and "ASSERTION_KEY" in result.stderr


# --- Istio: manifests against their schemas -----------------------------------------------

def istio_manifest_files() -> list[Path]:
    return sorted(path for path in ISTIO.glob("*.yaml") if path.name != "meshconfig.yaml")


@functools.cache
def istio_validators():
    return crd_validators(ISTIO_CRDS)


def istio(kind: str, name: str | None = None) -> dict:
    found = [d for path in istio_manifest_files() for d in documents(path)
             if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name}: {len(found)} documents"
    return found[0]


def newest_kubernetes() -> str:
    import kubernetes_validate

    return kubernetes_validate.latest_version()


@pytest.mark.parametrize("path", istio_manifest_files(), ids=lambda path: path.name)
def test_istio_manifest_validates_strictly(path):
    for document in documents(path):
        validate_manifest(document, newest_kubernetes(), istio_validators())


def test_istio_crd_copies_are_the_kinds_shipped():
    kinds = {kind for _, kind in istio_validators()}
    shipped = {d["kind"] for path in istio_manifest_files() for d in documents(path)} - {"ConfigMap"}
    assert kinds == shipped == {"AuthorizationPolicy", "Gateway", "VirtualService", "EnvoyFilter"}
    for path in ISTIO_CRDS.glob("*.json"):
        assert "istio/" in json.loads(path.read_text())["_source"]


def test_istio_validation_refuses_what_a_cluster_refuses():
    policy = istio("AuthorizationPolicy", "authproxy-ext-authz")
    for mutate in (lambda p: p["spec"].update(acton="CUSTOM"),                        # unknown field
                   lambda p: p["spec"].update(action="CUSTOMS"),                      # not in the enum
                   lambda p: p["spec"]["rules"][0]["to"][0]["operation"].update(notPaths="/oauth2/*"),  # wrong type
                   lambda p: p["metadata"].update(name="Authproxy_ExtAuthz")):        # not a DNS name
        broken = json.loads(json.dumps(policy))
        mutate(broken)
        with pytest.raises(AssertionError):
            validate_manifest(broken, newest_kubernetes(), istio_validators())
    service = json.loads(json.dumps(istio("VirtualService")))
    service["spec"]["http"][0]["directResponse"] = {"code": 404}  # status is the field, and required
    with pytest.raises(AssertionError):
        validate_manifest(service, newest_kubernetes(), istio_validators())


def test_kubernetes_validate_cli_agrees():
    """As a user runs it: strict; only the Istio kinds may be unknown to it (checked above)."""
    result = subprocess.run([str(BIN / "kubernetes-validate"), "--strict", "-k", newest_kubernetes(),
                             *map(str, istio_manifest_files())], capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert set(re.findall(r"Couldn't find schema for kind (\w+)", output)) == {kind for _, kind in istio_validators()}
    assert "ERROR" not in output


# --- Istio: the extension provider ----------------------------------------------------------

@functools.cache
def mesh_config() -> dict:
    operator = load(ISTIO / "meshconfig.yaml")
    assert operator["apiVersion"] == "install.istio.io/v1alpha1" and operator["kind"] == "IstioOperator"
    assert set(operator) == {"apiVersion", "kind", "spec"} and set(operator["spec"]) == {"meshConfig"}
    return operator["spec"]["meshConfig"]


def provider() -> dict:
    (entry,) = mesh_config()["extensionProviders"]
    return entry


def test_mesh_config_follows_istios_meshconfig_proto():
    import jsonschema

    schema = json.loads((ISTIO_CRDS / "meshconfig.subset.json").read_text())["schema"]
    validator = jsonschema.Draft7Validator(schema)
    assert not schema_errors(validator, mesh_config()), schema_errors(validator, mesh_config())
    for mutate in (lambda p: p["envoyExtAuthzHttp"].update(failOpn=False),
                   lambda p: p["envoyExtAuthzHttp"].update(port="8080x"),
                   lambda p: p["envoyExtAuthzHttp"].pop("service")):
        broken = json.loads(json.dumps(mesh_config()))
        mutate(broken["extensionProviders"][0])
        assert schema_errors(validator, broken)
    fields = schema["properties"]["extensionProviders"]["items"]["properties"]["envoyExtAuthzHttp"]["properties"]
    assert not {name for name, field in fields.items() if field.get("deprecated")} & set(provider()["envoyExtAuthzHttp"])


def test_mesh_provider_matches_authproxy():
    http = provider()["envoyExtAuthzHttp"]
    assert http["pathPrefix"] == ENVOY_PREFIX
    assert http["failOpen"] is False and http["statusOnError"] == "503"
    assert re.fullmatch(r"[0-9]+s", http["timeout"]) and 1 <= int(http["timeout"][:-1]) <= 60
    # header lists: exact names only (Istio's "abc*" / "*abc" would let unlisted names through)
    for key in ("includeRequestHeadersInCheck", "headersToUpstreamOnAllow"):
        assert all("*" not in name and name == name.lower() for name in http[key]), key
    assert CHECK_HEADERS <= set(http["includeRequestHeadersInCheck"])
    assert not DESCRIPTION_HEADERS & set(http["includeRequestHeadersInCheck"])
    config = istio_configmap_config()
    assert set(http["headersToUpstreamOnAllow"]) == IDENTITY_HEADERS | {"cookie", "authorization"} | injected_headers(config)
    assert "includeAdditionalHeadersInCheck" not in http and "includeRequestBodyInCheck" not in http
    # the service is authproxy's, on its listen port, as the VirtualService reaches it
    service, port = http["service"], http["port"]
    assert port == config.listen.port
    routes = {route["name"]: route for route in istio("VirtualService")["spec"]["http"]}
    destination = routes["authproxy"]["route"][0]["destination"]
    assert (destination["host"], destination["port"]["number"]) == (service, port)
    assert mesh_config()["pathNormalization"] == {"normalization": "MERGE_SLASHES"}


# --- Istio: the policies and routes -----------------------------------------------------------

def test_custom_policy_checks_everything_but_sign_in_at_the_gateway():
    policy = istio("AuthorizationPolicy", "authproxy-ext-authz")["spec"]
    assert policy["action"] == "CUSTOM" and policy["provider"] == {"name": provider()["name"]}
    assert policy["selector"]["matchLabels"] == istio("Gateway")["spec"]["selector"]
    (rule,) = policy["rules"]
    assert set(rule) == {"to"}  # no "from", no "when": nothing a client controls narrows the check
    (operation,) = [to["operation"] for to in rule["to"]]
    assert operation == {"notPaths": [DEFAULT_PREFIX + "/*"]}  # no hosts: a Host the list misses is not checked


def test_check_endpoints_answer_the_gateway_only():
    deny = istio("AuthorizationPolicy", "authproxy-checks-from-the-gateway-only")
    configmap = istio("ConfigMap")
    assert deny["spec"]["action"] == "DENY"
    assert deny["metadata"]["namespace"] == configmap["metadata"]["namespace"]
    assert deny["spec"]["selector"]["matchLabels"].items() <= configmap["metadata"]["labels"].items()
    (rule,) = deny["spec"]["rules"]
    (source,) = [item["source"] for item in rule["from"]]
    assert source == {"notPrincipals": [GATEWAY_PRINCIPAL]}
    (operation,) = [item["operation"] for item in rule["to"]]
    paths = operation["paths"]
    assert set(paths) == {f"{DEFAULT_PREFIX}/auth", ENVOY_PREFIX, ENVOY_PREFIX + "/*"} and set(operation) == {"paths"}

    def denied(path: str) -> bool:
        return any(path == p or (p.endswith("*") and path.startswith(p[:-1])) for p in paths)

    for path in TRICKY_PATHS:  # after Istio's normalisation (MERGE_SLASHES: RFC 3986 and "//")
        if authproxy_endpoint(path) in ("forward-auth", "envoy"):
            assert denied(normalise_path(path).path), path
    allow = istio("AuthorizationPolicy", "app-through-the-gateway-only")["spec"]
    assert allow["action"] == "ALLOW" and allow["rules"] == [{"from": [{"source": {"principals": [GATEWAY_PRINCIPAL]}}]}]
    text = (ISTIO / "authorizationpolicy.yaml").read_text()
    assert "127.0.0.6" in text and "outside the mesh" in text


def test_virtual_service_keeps_the_check_endpoints_from_the_public():
    service = istio("VirtualService")["spec"]
    gateway = istio("Gateway")
    assert service["gateways"] == [gateway["metadata"]["name"]]
    assert set(service["hosts"]) == {host for server in gateway["spec"]["servers"] for host in server["hosts"]}
    routes = service["http"]
    names = [route["name"] for route in routes]
    public = names.index("authproxy")
    for name, match in (("not-public-auth", {"exact": f"{DEFAULT_PREFIX}/auth"}), ("not-public-envoy", {"prefix": ENVOY_PREFIX})):
        route = routes[names.index(name)]
        assert names.index(name) < public and route["match"] == [{"uri": match}]
        assert route["directResponse"] == {"status": 404} and "route" not in route
    sign_in = routes[public]
    assert sign_in["match"] == [{"uri": {"prefix": DEFAULT_PREFIX + "/"}}]
    assert DESCRIPTION_HEADERS <= set(sign_in["headers"]["request"]["remove"])
    assert "match" not in routes[-1] and routes[-1]["name"] == "app"

    def route_for(path: str) -> dict:
        normalised = normalise_path(path).path
        for route in routes:
            uris = [m["uri"] for m in route.get("match", [{"uri": {"prefix": "/"}}])]
            if any(normalised == u.get("exact") or normalised.startswith(u.get("prefix", "\0")) for u in uris):
                return route
        raise AssertionError(path)

    for path in TRICKY_PATHS:
        if authproxy_endpoint(path) in ("forward-auth", "envoy"):
            assert route_for(path).get("directResponse") == {"status": 404}, path


def test_envoy_filter_drops_underscored_headers_at_the_gateway(envoy_api):
    envoy_filter = istio("EnvoyFilter")
    assert envoy_filter["spec"]["workloadSelector"]["labels"] == istio("Gateway")["spec"]["selector"]
    (patch,) = envoy_filter["spec"]["configPatches"]
    assert patch["applyTo"] == "NETWORK_FILTER" and patch["patch"]["operation"] == "MERGE"
    assert patch["match"]["listener"]["filterChain"]["filter"]["name"] == "envoy.filters.network.http_connection_manager"
    typed = dict(patch["patch"]["value"]["typed_config"])
    assert typed.pop("@type") == HCM_TYPE
    manager = envoy_api["json_format"].ParseDict(typed, envoy_api["HttpConnectionManager"]())  # Envoy's API, strictly
    assert manager.common_http_protocol_options.headers_with_underscores_action == \
        manager.common_http_protocol_options.DROP_HEADER


# --- Istio: authproxy's config -------------------------------------------------------------

def write_secrets(directory: Path) -> dict[str, str]:
    values = {"client-secret": "c" * 40, "session-secret": "s" * 44 + "\n", "assertion-key": assertion_key()}
    for name, value in values.items():
        (directory / name).write_text(value)
    return values


@functools.cache
def istio_configmap_config():
    import shutil
    import tempfile

    text = istio("ConfigMap")["data"]["config.yaml"]
    directory = Path(tempfile.mkdtemp(prefix="authproxy-istio-"))
    try:
        write_secrets(directory)
        return parse_config(text.replace(SECRET_MOUNT + "/", f"{directory}/"), "authproxy-configmap.yaml", {})
    finally:
        shutil.rmtree(directory)


def test_istio_configmap_config_passes_check_config(tmp_path):
    text = istio("ConfigMap")["data"]["config.yaml"]
    assert {Path(path).name for path in secret_files(yaml.safe_load(text))} == set(write_secrets(tmp_path))
    result = check_config(text.replace(SECRET_MOUNT + "/", f"{tmp_path}/"), tmp_path, {})
    assert result.returncode == 0, result.stdout + result.stderr


def test_istio_configmap_names_the_sidecar_address():
    config = istio_configmap_config()
    # with a sidecar, every caller arrives from Istio's inbound passthrough address
    assert [str(n) for n in config.forward_auth.callers] == ["127.0.0.6/32"]
    assert [str(n) for n in config.trusted_proxies] == ["127.0.0.6/32"]
    assert config.proxy_prefix == DEFAULT_PREFIX
    assert str(config.public_url) == "https://" + istio("VirtualService")["spec"]["hosts"][0]
    assert {route.match.host for route in config.routes} == set(istio("VirtualService")["spec"]["hosts"])
