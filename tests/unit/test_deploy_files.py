"""The deployment examples, checked statically: Kubernetes manifests against the API schemas
(kubernetes-validate, strict) and the ServiceMonitor against its CRD's schema; the configs they
carry through `authproxy check-config`; the CloudFormation table through cfn-lint; the IAM
policy against the DynamoDB calls the store makes; the compose files against the compose
specification; and the cross-references between them (ports, probes, selectors, shutdown
timing). tests/integration/test_deploy_pod.py and test_deploy_compose.py run them."""

from __future__ import annotations

import ast
import copy
import functools
import ipaddress
import json
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from authproxy.config import parse_config
from authproxy.demo import idp
from tests.support import manifests
from tests.support.manifests import documents, secret_files

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
AWS = DEPLOY / "aws"
COMPOSE = DEPLOY / "compose"
CRDS = ROOT / "tests" / "data" / "crds"
BIN = Path(sys.executable).parent
STORE_SOURCE = ROOT / "authproxy" / "store" / "dynamodb.py"

SECRET_MOUNT = "/etc/authproxy-secrets"
# The oldest Kubernetes the examples claim (preStop sleep: 1.30; native sidecars: 1.29), and the
# newest kubernetes-validate ships schemas for.
OLDEST_KUBERNETES = "1.30.0"
NEWEST_KUBERNETES = kubernetes_validate.latest_version()


# --- helpers ---------------------------------------------------------------------------

def manifest_files() -> list[Path]:
    return sorted(path for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")


def k8s(kind: str, path: str | None = None) -> dict:
    files = [K8S / path] if path else manifest_files()
    found = [d for f in files for d in documents(f) if d["kind"] == kind]
    assert len(found) == 1, f"{kind}: {len(found)} documents in {files}"
    return found[0]


def pod_spec(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


def proxy_container(deployment: dict) -> dict:
    spec = pod_spec(deployment)
    found = [c for c in spec.get("containers", []) + spec.get("initContainers", []) if c["name"] == "authproxy"]
    assert len(found) == 1
    return found[0]


def app_containers(deployment: dict) -> list[dict]:
    return [c for c in pod_spec(deployment)["containers"] if c["name"] != "authproxy"]


@functools.cache
def configmap_config():
    """The ConfigMap's config, loaded with stand-ins for the Secret's files."""
    text = k8s("ConfigMap", "configmap.yaml")["data"]["config.yaml"]
    directory = Path(tempfile.mkdtemp(prefix="authproxy-deploy-"))
    try:
        for name in k8s("Secret", "secret.example.yaml")["stringData"]:
            (directory / name).write_text(secrets.token_urlsafe(32))
        return parse_config(text.replace(SECRET_MOUNT + "/", f"{directory}/"), "configmap.yaml", {})
    finally:
        shutil.rmtree(directory)


def check_config(text: str, tmp_path: Path, env: dict[str, str] | None = None, secrets: dict[str, str] | None = None):
    """Run `authproxy check-config` on ``text``; secret files under SECRET_MOUNT are written to
    ``tmp_path`` with the given contents (the config names them by their in-pod path)."""
    for name, value in (secrets or {}).items():
        (tmp_path / name).write_text(value)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(text.replace(SECRET_MOUNT + "/", f"{tmp_path}/"))
    return subprocess.run([str(BIN / "authproxy"), "check-config", str(config_path)], capture_output=True, text=True,
                           timeout=60, env={"PATH": "/usr/bin:/bin", **(env or {})})


def prestop_seconds(container: dict) -> int:
    hook = container.get("lifecycle", {}).get("preStop")
    if hook is None:
        return 0
    if "sleep" in hook:
        return hook["sleep"]["seconds"]
    command = hook["exec"]["command"]
    assert command[0] == "sleep"
    return int(command[1])


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(key) == value for key, value in selector["matchLabels"].items())


# --- Kubernetes: schemas -----------------------------------------------------------------

@functools.cache
def crd_validators() -> dict[tuple[str, str], jsonschema.Draft7Validator]:
    return manifests.crd_validators(CRDS)


def validate_manifest(document: dict, version: str) -> None:
    """Strict API-schema validation; a kind without a built-in schema needs a CRD schema here."""
    manifests.validate_manifest(document, version, crd_validators())


@pytest.mark.parametrize("version", [NEWEST_KUBERNETES, OLDEST_KUBERNETES])
@pytest.mark.parametrize("path", manifest_files(), ids=lambda path: path.name)
def test_manifest_validates_strictly(path, version):
    for document in documents(path):
        validate_manifest(document, version)


def test_the_validation_refuses_what_a_cluster_refuses():
    deployment = k8s("Deployment", "deployment.yaml")
    broken = copy.deepcopy(deployment)
    proxy_container(broken)["securityContext"]["readOnlyRootFS"] = True  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_manifest(broken, NEWEST_KUBERNETES)
    monitor = k8s("ServiceMonitor")
    for mutate in (lambda m: m["spec"]["endpoints"][0].update(prot="admin"),       # unknown field
                   lambda m: m["spec"]["endpoints"][0].update(scheme="gopher"),    # not in the enum
                   lambda m: m["spec"].update(selector="app=orders")):             # wrong type
        broken = copy.deepcopy(monitor)
        mutate(broken)
        with pytest.raises(AssertionError):
            validate_manifest(broken, NEWEST_KUBERNETES)
    unknown = {"apiVersion": "example.com/v1", "kind": "Nothing", "metadata": {"name": "x"}}
    with pytest.raises(AssertionError, match="no schema"):
        validate_manifest(unknown, NEWEST_KUBERNETES)


def test_kubernetes_validate_cli_agrees():
    """The command line as a user runs it: strict, newest schemas; only the CRD-backed kinds
    may be unknown to it (they are validated above against the CRD's schema)."""
    result = subprocess.run([str(BIN / "kubernetes-validate"), "--strict", "-k", NEWEST_KUBERNETES,
                             *map(str, manifest_files())], capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    unknown = re.findall(r"Couldn't find schema for kind (\w+)", output)
    assert set(unknown) == {kind for _, kind in crd_validators()}, output
    assert "ERROR" not in output


def test_kustomization_applies_everything_but_the_alternatives():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    resources = set(kustomization["resources"])
    # the Secret is created out of band (applying a placeholder would overwrite it), and the
    # native-sidecar Deployment replaces deployment.yaml rather than joining it
    assert resources == {path.name for path in manifest_files()} - {"secret.example.yaml", "native-sidecar.yaml"}


# --- Kubernetes: the config and how the pod carries it ----------------------------------

def test_configmap_config_passes_check_config(tmp_path):
    text = k8s("ConfigMap", "configmap.yaml")["data"]["config.yaml"]
    paths = secret_files(yaml.safe_load(text))
    assert f"{SECRET_MOUNT}/client-secret" in paths and f"{SECRET_MOUNT}/session-secret" in paths
    result = check_config(text, tmp_path, secrets={"client-secret": "x" * 40, "session-secret": "s" * 44 + "\n"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "store: dynamodb" in result.stdout and "provider: cognito" in result.stdout
    # and the secret files are really read: a short session secret is refused
    result = check_config(text, tmp_path, secrets={"session-secret": "too short"})
    assert result.returncode == 2, result.stdout + result.stderr


def test_secret_files_come_from_the_mounted_secret():
    text = k8s("ConfigMap", "configmap.yaml")["data"]["config.yaml"]
    secret = k8s("Secret", "secret.example.yaml")
    for path in ("deployment.yaml", "native-sidecar.yaml"):
        deployment = k8s("Deployment", path)
        volumes = {volume["name"]: volume for volume in pod_spec(deployment)["volumes"]}
        mounts = {mount["mountPath"]: mount for mount in proxy_container(deployment)["volumeMounts"]}
        secret_volume = volumes[mounts[SECRET_MOUNT]["name"]]["secret"]
        assert secret_volume["secretName"] == secret["metadata"]["name"]
        assert secret_volume["defaultMode"] & 0o040, "uid 65532 reads the files through fsGroup"
        assert not secret_volume["defaultMode"] & 0o007, "not world-readable"
        for file in secret_files(yaml.safe_load(text)):
            assert Path(file).parent == Path(SECRET_MOUNT) and Path(file).name in secret["stringData"]
        # the config file: the image's CMD names /etc/authproxy/config.yaml
        assert proxy_container(deployment)["args"] == ["run", "--config", "/etc/authproxy/config.yaml"]
        config_volume = volumes[mounts["/etc/authproxy"]["name"]]["configMap"]
        assert config_volume["name"] == k8s("ConfigMap", "configmap.yaml")["metadata"]["name"]
        assert not any(mount.get("subPath") for mount in mounts.values()), "subPath mounts never see updates"
    # the shipped Secret is a template: its empty values would make authproxy refuse to start
    assert all(value == "" for value in secret["stringData"].values())


@pytest.mark.parametrize("path", ["deployment.yaml", "native-sidecar.yaml"])
def test_pod_matches_the_config(path):
    config = configmap_config()
    deployment = k8s("Deployment", path)
    spec = pod_spec(deployment)
    proxy = proxy_container(deployment)
    ports = {port["name"]: port["containerPort"] for port in proxy["ports"]}
    assert ports == {"http": config.listen.port, "admin": config.admin_listen.port}
    # the kubelet probes the pod IP: the admin listener cannot be loopback
    assert not ipaddress.ip_address(config.admin_listen.host).is_loopback
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert proxy["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    # the app is reached on loopback only and publishes nothing
    (route,) = config.routes
    assert route.upstream.host == "127.0.0.1" and route.auth == "login"
    assert set(route.inject) == {"Authorization", "X-User-Sub", "X-User-Email", "X-User-Groups"}
    assert route.inject["Authorization"] == "Bearer {access_token}"
    for app in app_containers(deployment):
        assert "ports" not in app
        env = {item["name"]: item["value"] for item in app.get("env", [])}
        assert env["LISTEN_ADDRESS"] == f"127.0.0.1:{route.upstream.port}"
    # runtime_dir is the writable emptyDir of the read-only container
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in proxy["volumeMounts"]}
    assert config.runtime_dir in mounts and "emptyDir" in volumes[mounts[config.runtime_dir]]
    # Prometheus finds the admin port from the annotations too
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(config.admin_listen.port)
    assert annotations["prometheus.io/path"] == "/metrics" and annotations["prometheus.io/scrape"] == "true"
    assert config.store.backend == "dynamodb"


@pytest.mark.parametrize("path", ["deployment.yaml", "native-sidecar.yaml"])
def test_pod_is_locked_down(path):
    deployment = k8s("Deployment", path)
    spec = pod_spec(deployment)
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 65532
    assert pod["fsGroup"] == 65532  # the projected IRSA token and the Secret's files are group-readable
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod_spec(deployment)["containers"] + spec.get("initContainers", []):
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    proxy = proxy_container(deployment)["securityContext"]
    assert proxy["runAsNonRoot"] is True and proxy["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False


@pytest.mark.parametrize("path", ["deployment.yaml", "native-sidecar.yaml"])
def test_aws_credentials_reach_authproxy_only(path):
    deployment = k8s("Deployment", path)
    account = k8s("ServiceAccount")
    assert pod_spec(deployment)["serviceAccountName"] == account["metadata"]["name"]
    role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@-]+", role)
    skipped = deployment["spec"]["template"]["metadata"]["annotations"]["eks.amazonaws.com/skip-containers"]
    assert set(skipped.split(",")) == {c["name"] for c in app_containers(deployment)}


def test_shutdown_timing_classic_sidecar():
    """Endpoints drop the pod while authproxy's preStop sleeps, then it drains for up to
    shutdown_timeout; the app keeps serving that long; the grace period covers it all."""
    config = configmap_config()
    deployment = k8s("Deployment", "deployment.yaml")
    spec = pod_spec(deployment)
    proxy_stop = prestop_seconds(proxy_container(deployment))
    assert proxy_stop >= 3
    assert spec["terminationGracePeriodSeconds"] > proxy_stop + config.shutdown_timeout
    for app in app_containers(deployment):
        assert prestop_seconds(app) >= proxy_stop + config.shutdown_timeout
        assert spec["terminationGracePeriodSeconds"] > prestop_seconds(app)


def test_native_sidecar_form():
    config = configmap_config()
    deployment = k8s("Deployment", "native-sidecar.yaml")
    spec = pod_spec(deployment)
    (proxy,) = spec["initContainers"]
    assert proxy["name"] == "authproxy" and proxy["restartPolicy"] == "Always"
    assert all(c["name"] != "authproxy" for c in spec["containers"])
    assert proxy["startupProbe"]["httpGet"]["port"] == "admin"  # the app starts once authproxy is up
    # it stops after the app: the grace period is shared by the app's preStop and drain and
    # then authproxy's own preStop and drain
    app_stop = max(prestop_seconds(app) for app in app_containers(deployment))
    assert app_stop >= 5  # the app leaves the endpoints before it stops accepting
    assert spec["terminationGracePeriodSeconds"] > app_stop + prestop_seconds(proxy) + config.shutdown_timeout
    text = (K8S / "native-sidecar.yaml").read_text()
    assert "trade-off" in text and "stops after the app" in text
    # otherwise the same pod as deployment.yaml
    classic = k8s("Deployment", "deployment.yaml")
    assert deployment["metadata"] == classic["metadata"]
    assert spec["volumes"] == pod_spec(classic)["volumes"]
    without = lambda c: {k: v for k, v in c.items() if k not in ("restartPolicy", "lifecycle", "startupProbe")}  # noqa: E731
    assert without(proxy) == without(proxy_container(classic))


def test_selectors_and_service_ports():
    config = configmap_config()
    deployment = k8s("Deployment", "deployment.yaml")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert matches(deployment["spec"]["selector"], labels)
    service = k8s("Service")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    targets = {port["name"]: port["targetPort"] for port in service["spec"]["ports"]}
    assert targets == {"http": "http", "admin": "admin"}
    assert matches(k8s("PodDisruptionBudget")["spec"]["selector"], labels)
    assert k8s("PodDisruptionBudget")["spec"]["maxUnavailable"] < deployment["spec"]["replicas"]
    assert matches(k8s("NetworkPolicy")["spec"]["podSelector"], labels)
    monitor = k8s("ServiceMonitor")
    assert matches(monitor["spec"]["selector"], service["metadata"]["labels"])
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "admin" and endpoint["path"] == "/metrics"
    assert {port["name"]: port["containerPort"] for port in proxy_container(deployment)["ports"]}["admin"] \
        == config.admin_listen.port


def test_network_policy():
    policy = k8s("NetworkPolicy")["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    by_port = {}
    for rule in policy["ingress"]:
        for port in rule["ports"]:
            by_port.setdefault(port["port"], []).extend(rule["from"])
    assert set(by_port) == {"http", "admin"}
    # the admin port (metrics) from the monitoring namespace only
    assert by_port["admin"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    egress = {(port["port"], port["protocol"]) for rule in policy["egress"] for port in rule["ports"]}
    assert egress == {(53, "UDP"), (53, "TCP"), (443, "TCP")}


# --- AWS: the table and the policy -------------------------------------------------------

class _CfnLoader(yaml.SafeLoader):
    pass


_CfnLoader.add_multi_constructor("!", lambda loader, tag, node: {tag: loader.construct_scalar(node)}
                                 if isinstance(node, yaml.ScalarNode) else {tag: loader.construct_sequence(node)})


def store_client_calls() -> dict[str, set[str]]:
    """The DynamoDB operations authproxy's store calls, by the method they are called from:
    every `self._client.<operation>` in authproxy/store/dynamodb.py."""
    calls: dict[str, set[str]] = {}
    tree = ast.parse(STORE_SOURCE.read_text())
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) \
                        and node.value.attr == "_client" and isinstance(node.value.value, ast.Name):
                    calls.setdefault(function.name, set()).add(node.attr)
    return calls


def action(operation: str) -> str:
    return "dynamodb:" + "".join(part.title() for part in operation.split("_"))


def policy_actions(path: Path) -> set[str]:
    policy = json.loads(path.read_text())
    assert policy["Version"] == "2012-10-17"
    actions = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        assert "NotAction" not in statement and "NotResource" not in statement
        for resource in [statement["Resource"]] if isinstance(statement["Resource"], str) else statement["Resource"]:
            assert "*" not in resource, resource
            table, _, index = resource.partition("/index/")  # Query is granted on the indexes only
            assert table.endswith(":table/" + table_template()["Parameters"]["TableName"]["Default"]), resource
            assert not index or (index in table_index_names() and statement["Action"] == ["dynamodb:Query"]), resource
        actions |= {statement["Action"]} if isinstance(statement["Action"], str) else set(statement["Action"])
    assert not any("*" in name for name in actions)
    return actions


def table_template() -> dict:
    return yaml.load((AWS / "dynamodb-table.yaml").read_text(), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass


def table_index_names() -> set[str]:
    (table,) = table_template()["Resources"].values()
    return {index["IndexName"] for index in table["Properties"].get("GlobalSecondaryIndexes", ())}


def test_iam_policy_is_exactly_what_the_store_calls():
    calls = store_client_calls()
    # the operations the running proxy makes, and those only `store init` (or create_table:
    # true) makes; the scan must find them, or it proves nothing
    init_only = calls.pop("create_table")
    runtime = set().union(*calls.values())
    assert {"get_item", "put_item", "update_item", "delete_item", "query"} <= runtime
    assert {"create_table", "update_time_to_live", "update_table"} <= init_only
    assert policy_actions(AWS / "iam-policy.json") == {action(name) for name in runtime}
    assert policy_actions(AWS / "iam-policy-store-init.json") == {action(name) for name in init_only - runtime}


def test_iam_resource_matches_the_configs():
    config = configmap_config()
    for path in ("iam-policy.json", "iam-policy-store-init.json"):
        for statement in json.loads((AWS / path).read_text())["Statement"]:
            for arn in [statement["Resource"]] if isinstance(statement["Resource"], str) else statement["Resource"]:
                assert arn.split(":")[3] == config.store.dynamodb.region
                assert arn.partition("/index/")[0].endswith(f":table/{config.store.dynamodb.table}")


def test_table_template_passes_cfn_lint():
    result = subprocess.run([str(BIN / "cfn-lint"), str(AWS / "dynamodb-table.yaml")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_table_is_the_one_the_store_creates():
    """Key schema, indexes and TTL attribute as in the store's own create_table and update_time_to_live calls."""
    from authproxy.store import dynamodb

    created: dict = {}
    for node in ast.walk(ast.parse(STORE_SOURCE.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in ("create_table", "update_time_to_live") \
                and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "_client":
            for keyword in node.keywords:
                if keyword.arg != "TableName":  # a literal, or a module constant of the store
                    value = keyword.value
                    created[keyword.arg] = getattr(dynamodb, value.id) if isinstance(value, ast.Name) \
                        else ast.literal_eval(value)
    (table,) = table_template()["Resources"].values()
    properties = table["Properties"]
    assert table["Type"] == "AWS::DynamoDB::Table"
    assert properties["KeySchema"] == created["KeySchema"]
    assert properties["AttributeDefinitions"] == created["AttributeDefinitions"]
    assert properties["BillingMode"] == created["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["TimeToLiveSpecification"] == created["TimeToLiveSpecification"] \
        == {"Enabled": True, "AttributeName": "expires_at"}
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert properties["GlobalSecondaryIndexes"] == created["GlobalSecondaryIndexes"]  # back-channel logout lookups
    assert "LocalSecondaryIndexes" not in properties
    assert table["DeletionPolicy"] == "Retain"
    assert table_template()["Parameters"]["TableName"]["Default"] == configmap_config().store.dynamodb.table


# --- compose -----------------------------------------------------------------------------

def compose(name: str) -> dict:
    return yaml.safe_load((COMPOSE / name).read_text())


def local_environment() -> dict[str, str]:
    return compose("docker-compose.local.yml")["services"]["authproxy"]["environment"]


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.local.yml"])
def test_compose_file_follows_the_compose_spec(name):
    result = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE / name)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_config_passes_check_config(tmp_path):
    text = (COMPOSE / "authproxy.yaml").read_text()
    result = check_config(text, tmp_path, env=local_environment())
    assert result.returncode == 0, result.stdout + result.stderr
    # without the environment it names every missing variable, and no value
    result = check_config(text, tmp_path, env={})
    assert result.returncode == 2
    for variable in ("OIDC_ISSUER", "OIDC_CLIENT_SECRET", "SESSION_SECRET"):
        assert variable in result.stderr


def test_compose_routes_and_services():
    config = parse_config((COMPOSE / "authproxy.yaml").read_text(), "authproxy.yaml", local_environment())
    services = compose("docker-compose.yml")["services"]
    routes = {route.name: route for route in config.routes}
    assert set(routes) == {"service-a", "service-b"}
    for route in routes.values():
        assert route.auth == "login" and route.inject["Authorization"] == "Bearer {access_token}"
        assert route.upstream.host in services and route.upstream.host in services["authproxy"]["depends_on"]
    assert routes["service-a"].allow is None or not routes["service-a"].allow.groups
    assert routes["service-b"].allow.groups == ["admins"]
    # the store is the DynamoDB-compatible service
    endpoint = urllib.parse.urlsplit(str(config.store.dynamodb.endpoint_url)).hostname
    assert config.store.backend == "dynamodb" and endpoint == "dynamodb" and endpoint in services
    assert "dynamodb" in services["authproxy"]["depends_on"]
    # the config is mounted where the command reads it
    authproxy = services["authproxy"]
    config_path = authproxy["command"][authproxy["command"].index("--config") + 1]
    assert f"./authproxy.yaml:{config_path}:ro" in authproxy["volumes"]
    assert authproxy["read_only"] is True and "/tmp" in authproxy["tmpfs"] and authproxy["cap_drop"] == ["ALL"]
    # no secret is written down in the shipped file: they come from the environment
    for variable in ("OIDC_ISSUER", "COGNITO_DOMAIN", "OIDC_CLIENT_ID", "OIDC_CLIENT_SECRET", "SESSION_SECRET", "PUBLIC_URL"):
        assert authproxy["environment"][variable] == "${%s}" % variable
    # the local override sets every one of them (podman-compose cannot merge a pass-through
    # `- NAME` entry with a value, so the shipped file interpolates instead)
    assert set(local_environment()) == {name for name, value in authproxy["environment"].items() if "${" in value}


def test_compose_prometheus_scrapes_authproxy_with_the_shipped_rules():
    config = parse_config((COMPOSE / "authproxy.yaml").read_text(), "authproxy.yaml", local_environment())
    prometheus = compose("docker-compose.yml")["services"]["prometheus"]
    mounts = {source: target.removesuffix(":ro") for source, target in
              (volume.split(":", 1) for volume in prometheus["volumes"])}
    assert (COMPOSE / "../prometheus/prometheus.yml").resolve() == DEPLOY / "prometheus" / "prometheus.yml"
    assert mounts["../prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert mounts["../prometheus/alerts.yml"] == "/etc/prometheus/alerts.yml"
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert scrape["rule_files"] == ["alerts.yml"]  # relative to prometheus.yml: the mounted file
    (job,) = scrape["scrape_configs"]
    assert job["static_configs"][0]["targets"] == [f"authproxy:{config.admin_listen.port}"]
    assert job["metrics_path"] == "/metrics"


def test_compose_local_override_keeps_the_development_provider_on_loopback():
    local = compose("docker-compose.local.yml")["services"]
    base = compose("docker-compose.yml")["services"]
    environment = local["authproxy"]["environment"]
    dev_idp = local["dev-idp"]
    assert dev_idp["image"] == base["authproxy"]["image"]  # the same image
    args = dict(arg.removeprefix("--").split("=", 1) for arg in dev_idp["command"][1:])
    assert dev_idp["command"][0] == "dev-idp"
    # it shares authproxy's network namespace: the one issuer URL works for the browser and authproxy
    assert dev_idp["network_mode"] == "service:authproxy" and "ports" not in dev_idp
    assert args["issuer"] == environment["OIDC_ISSUER"] == environment["COGNITO_DOMAIN"]
    issuer_port = int(args["issuer"].rsplit(":", 1)[1])
    assert int(args["port"]) == issuer_port
    # every port the override publishes is bound to 127.0.0.1, among them the provider's
    published = local["authproxy"]["ports"]
    assert all(port.startswith("127.0.0.1:") for port in published)
    assert f"127.0.0.1:{issuer_port}:{issuer_port}" in published
    assert args["redirect-uri"] == environment["PUBLIC_URL"] + "/oauth2/callback"
    assert environment["OIDC_CLIENT_ID"] == idp.DEFAULT_CLIENT_ID
    assert environment["OIDC_CLIENT_SECRET"] == idp.DEFAULT_CLIENT_SECRET
