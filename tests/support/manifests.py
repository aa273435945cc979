"""Kubernetes manifests checked the way an API server with strict field validation would:
built-in kinds through kubernetes-validate (strict), custom resources against a trimmed copy of
their CRD's openAPIV3Schema (tests/data/crds/.../*.json: {"group", "version", "kind",
"openAPIV3Schema", "_source"}), each test module with its own set of CRDs (test_deploy_files: the
ServiceMonitor; test_deploy_mesh: Istio's)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml


def documents(path: Path) -> list[dict]:
    """The non-empty YAML documents of ``path``."""
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def strict_crd_schema(schema: dict) -> dict:
    """A CRD's structural schema as the API server applies it with strict field validation:
    unknown fields are errors wherever the schema lists properties and does not preserve unknowns."""
    schema = copy.deepcopy(schema)

    def tighten(node):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node \
                    and not node.get("x-kubernetes-preserve-unknown-fields"):
                node["additionalProperties"] = False
            for value in node.values():
                tighten(value)
        elif isinstance(node, list):
            for value in node:
                tighten(value)

    tighten(schema)
    # metadata is ObjectMeta; the CRD schema leaves it open, so check the part manifests use.
    schema.setdefault("properties", {})["metadata"] = {
        "type": "object", "required": ["name"], "additionalProperties": False,
        "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
                       "namespace": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                       "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                       "annotations": {"type": "object", "additionalProperties": {"type": "string"}}},
    }
    return schema


def crd_validators(directory: Path) -> dict[tuple[str, str], jsonschema.Draft7Validator]:
    """(apiVersion, kind) -> a strict validator, for every trimmed CRD schema in ``directory``."""
    validators = {}
    for path in sorted(directory.glob("*.json")):
        crd = json.loads(path.read_text())
        if "openAPIV3Schema" not in crd:
            continue
        schema = strict_crd_schema(crd["openAPIV3Schema"])
        schema["properties"]["apiVersion"] = {"const": f"{crd['group']}/{crd['version']}"}
        schema["properties"]["kind"] = {"const": crd["kind"]}
        schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata", "spec"})
        validators[(f"{crd['group']}/{crd['version']}", crd["kind"])] = jsonschema.Draft7Validator(schema)
    return validators


def schema_errors(validator: jsonschema.Validator, document: object) -> list[str]:
    return [f"{'.'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
            for error in validator.iter_errors(document)]


def validate_manifest(document: dict, version: str, validators: dict[tuple[str, str], jsonschema.Draft7Validator]) -> None:
    """Strict API-schema validation; a kind without a built-in schema must have a CRD schema in
    ``validators``: kubernetes-validate only warns (exit 0) about those, which must not count as valid."""
    try:
        kubernetes_validate.validate(document, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        validator = validators.get((document["apiVersion"], document["kind"]))
        assert validator is not None, f"no schema for {document['apiVersion']} {document['kind']}"
        errors = schema_errors(validator, document)
        assert not errors, errors


def secret_files(node) -> list[str]:
    """Every {file: PATH} in a parsed YAML tree (authproxy's secrets from files)."""
    if isinstance(node, dict):
        if set(node) == {"file"}:
            return [node["file"]]
        return [path for value in node.values() for path in secret_files(value)]
    if isinstance(node, list):
        return [path for value in node for path in secret_files(value)]
    return []
