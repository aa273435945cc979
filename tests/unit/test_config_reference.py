"""The configuration reference is generated from the schema: the committed copies must
match it, and the JSON Schema must accept every configuration we ship."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from authproxy.cli import main
from authproxy.config import reference

ROOT = Path(__file__).resolve().parents[2]
STALE = "is out of date with authproxy/config/schema.py: regenerate it with `{}` (from the repository root)"


def _shipped_configs() -> list[tuple[str, dict]]:
    """Every authproxy configuration in the repository: the examples, the compose files'
    and the ConfigMaps' (a file or data entry counts when it has routes)."""
    found = []
    for path in [ROOT / "config.example.yaml", ROOT / "config.signin.example.yaml",
                 *sorted((ROOT / "deploy" / "compose").glob("*.y*ml")),
                 *sorted((ROOT / "deploy" / "kubernetes").glob("*.y*ml"))]:
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if not isinstance(document, dict):
                continue
            name = str(path.relative_to(ROOT))
            if "routes" in document:
                found.append((name, document))
            elif document.get("kind") == "ConfigMap":
                for key, text in (document.get("data") or {}).items():
                    data = yaml.safe_load(text) if key.endswith((".yaml", ".yml")) else None
                    if isinstance(data, dict) and "routes" in data:
                        found.append((f"{name} ({document['metadata']['name']}: {key})", data))
    return found


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    document = reference.json_schema()
    jsonschema.Draft7Validator.check_schema(document)
    return jsonschema.Draft7Validator(document)


def test_committed_markdown_matches_the_schema() -> None:
    committed = ROOT / reference.MARKDOWN_PATH
    assert committed.exists(), f"{reference.MARKDOWN_PATH} is missing: generate it with `{reference.REGENERATE}`"
    assert committed.read_text(encoding="utf-8") == reference.markdown(), (
        reference.MARKDOWN_PATH + " " + STALE.format(reference.REGENERATE)
    )


def test_committed_json_schema_matches_the_schema() -> None:
    committed = ROOT / reference.JSON_SCHEMA_PATH
    assert committed.exists(), f"{reference.JSON_SCHEMA_PATH} is missing: generate it with `{reference.REGENERATE}`"
    assert committed.read_text(encoding="utf-8") == reference.json_schema_text(), (
        reference.JSON_SCHEMA_PATH + " " + STALE.format(reference.REGENERATE)
    )


def test_every_key_is_documented_with_its_type() -> None:
    bare = [row.path for _, _, rows in reference.keys() for row in rows if not row.description or not row.type]
    assert not bare, (
        f"keys without a description: {bare}; add a trailing # comment on the field in authproxy/config/schema.py"
    )


def test_fallback_descriptions_name_existing_keys() -> None:
    paths = {row.path.removesuffix("[]") for _, _, rows in reference.keys() for row in rows}
    assert set(reference._FALLBACK) <= paths, sorted(set(reference._FALLBACK) - paths)


def test_markdown_lists_every_field_with_its_default() -> None:
    text = reference.markdown()
    for row in (row for _, _, rows in reference.keys() for row in rows):
        assert f"`{row.path}`" in text
    assert '| `shutdown_timeout` | duration (≤ 3600) | `"20s"` |' in text
    assert '| `routes[].max_body` | size | `"10MiB"` |' in text
    assert '| `listen` | listen address | `"0.0.0.0:8080"` |' in text
    assert "| `oidc.issuer` | URL | **required** |" in text


@pytest.mark.parametrize(("name", "document"), _shipped_configs(), ids=lambda value: value if isinstance(value, str) else "")
def test_json_schema_accepts_the_shipped_configurations(validator: jsonschema.Draft7Validator, name: str,
                                                         document: dict) -> None:
    problems = [f"{'.'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(document)]
    assert not problems, f"{name}: {problems}"


def test_the_shipped_configurations_include_the_examples() -> None:
    names = {name for name, _ in _shipped_configs()}
    assert {"config.example.yaml", "config.signin.example.yaml"} <= names
    assert any(name.startswith("deploy/compose/") for name in names)


ROUTE = {"name": "a", "upstream": "http://127.0.0.1:8000", "auth": "public"}


@pytest.mark.parametrize(
    "document",
    [
        {"routes": [ROUTE], "listen": ":8080", "shutdown_timeout": "1h30m", "workers": "auto"},
        {"routes": [dict(ROUTE, max_body="512KiB", timeouts={"read": 30})], "trusted_proxies": ["10.0.0.0/8"]},
        {"routes": [ROUTE], "workers": "${WORKERS:-2}", "log": {"access": "${ACCESS_LOG}"}},
        {"routes": [ROUTE], "session": {"secrets": ["${SESSION_SECRET}", {"file": "/run/secrets/old"}]}},
    ],
)
def test_json_schema_accepts_what_the_loader_accepts(validator: jsonschema.Draft7Validator, document: dict) -> None:
    assert not list(validator.iter_errors(document))


@pytest.mark.parametrize(
    "document",
    [
        {"routes": [ROUTE], "lisen": ":8080"},  # unknown key
        {"routes": [dict(ROUTE, timeouts={"read": "5 parsecs"})]},
        {"routes": [dict(ROUTE, auth="maybe")]},
        {"routes": [ROUTE], "listen": "8080"},
        {"routes": [ROUTE], "session": {"secrets": [{"path": "/run/secrets/x"}]}},
        {"routes": []},
    ],
)
def test_json_schema_rejects_what_the_loader_rejects(validator: jsonschema.Draft7Validator, document: dict) -> None:
    assert list(validator.iter_errors(document))


def test_cli_writes_both_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    markdown, schema = tmp_path / "configuration.md", tmp_path / "config.schema.json"
    assert main(["config-reference", "-o", str(markdown), "--json-schema", str(schema)]) == 0
    assert markdown.read_text(encoding="utf-8") == reference.markdown()
    assert schema.read_text(encoding="utf-8") == reference.json_schema_text()
    assert main(["config-reference"]) == 0
    assert capsys.readouterr().out == reference.markdown()
