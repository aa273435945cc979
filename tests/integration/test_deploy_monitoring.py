"""Prometheus rules and the Grafana dashboard: valid (promtool), and naming only metrics a
live authproxy exposes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from tests.support.exposition import valid_exposition
from tests.support.processes import ROOT, ProxyProcess, http_get

DEPLOY = ROOT / "deploy"
_METRIC = re.compile(r"\bauthproxy_[a-z_]+")
_HISTOGRAM_PART = re.compile(r"_(bucket|count|sum)$")


def families(expression: str) -> set[str]:
    """Metric family names an expression uses (histogram _bucket/_count/_sum folded in)."""
    return {_HISTOGRAM_PART.sub("", name) for name in _METRIC.findall(expression)}


@pytest.fixture(scope="module")
def exposition(upstream, tmp_path_factory):
    proxy = ProxyProcess({"routes": [{"name": "all", "upstream": upstream.url, "auth": "public"}]},
                         tmp_path_factory.mktemp("monitoring"))
    try:
        status, body = http_get(proxy.admin_url + "/metrics")
        assert status == 200
        valid_exposition(body.decode())
        # every family a live process exposes, with or without samples yet (HELP/TYPE lines)
        yield set(_METRIC.findall(body.decode()))
    finally:
        proxy.stop()


def test_promtool_accepts_the_rules_and_the_scrape_config():
    promtool = shutil.which("promtool")
    assert promtool, "make test installs Debian's prometheus package for promtool"
    for args in (["check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")],
                 ["check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")]):
        result = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_metric_an_alert_names_exists(exposition):
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"][0]["rules"]
    assert {rule["alert"] for rule in rules} >= {
        "AuthproxyHigh5xxRatio", "AuthproxyRefreshFailures", "AuthproxyStoreErrors", "AuthproxyIdpSlow",
        "AuthproxyReadinessFlapping",
    }
    for rule in rules:
        names = families(rule["expr"])
        assert names and names <= exposition, f"{rule['alert']}: {names - exposition}"


def test_every_metric_a_dashboard_panel_queries_exists(exposition):
    dashboard = json.loads((DEPLOY / "grafana" / "authproxy.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(expressions) >= 10
    for expression in expressions:
        names = families(expression)
        assert names and names <= exposition, f"{expression}: {names - exposition}"
