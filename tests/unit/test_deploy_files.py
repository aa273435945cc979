"""Deployment examples are checked statically (no container engine runs here)."""

from pathlib import Path

import yaml

from authproxy.config import load_config, parse_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_kubernetes_manifests_are_well_formed_and_embed_a_valid_config():
    documents = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "sidecar.yaml").read_text()))
    kinds = {document["kind"]: document for document in documents}
    assert set(kinds) == {"ConfigMap", "Deployment", "Service"}
    for document in documents:
        assert document["apiVersion"] and document["metadata"]["name"]
    config = parse_config(kinds["ConfigMap"]["data"]["authproxy.yaml"], "sidecar.yaml", {})
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    proxy = next(c for c in pod["containers"] if c["name"] == "authproxy")
    ports = {port["name"]: port["containerPort"] for port in proxy["ports"]}
    assert ports["http"] == config.listen.port and ports["admin"] == config.admin_listen.port
    assert proxy["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert proxy["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # the pod must outlive authproxy's drain
    assert pod["terminationGracePeriodSeconds"] > config.shutdown_timeout
    selector = kinds["Deployment"]["spec"]["selector"]["matchLabels"]
    assert kinds["Service"]["spec"]["selector"] == selector
    assert kinds["Deployment"]["spec"]["template"]["metadata"]["labels"] == selector


def test_compose_file_and_its_config():
    compose = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())
    services = compose["services"]
    config = load_config(DEPLOY / "compose" / "authproxy.yaml", {})
    upstream_hosts = {route.upstream.host for route in config.routes}
    assert upstream_hosts <= set(services)
    assert set(services["authproxy"]["depends_on"]) == upstream_hosts
