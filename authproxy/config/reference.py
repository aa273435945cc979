"""The configuration reference, generated from the schema so it cannot drift.

Two documents come out of ``authproxy/config/schema.py``:

- ``markdown()``: every key with its path, type, default and description
  (``docs/configuration.md``);
- ``json_schema()``: a JSON Schema (draft-07) for editors, e.g. yaml-language-server's
  ``# yaml-language-server: $schema=...`` (``docs/config.schema.json``).

Types and defaults come from pydantic's ``model_fields``; descriptions from, in order,
``Field(description=...)``, the comments around each field in the schema's source
(read with ``tokenize``, keyed by class and field name), attribute docstrings, the
nested model's class docstring, and last ``_FALLBACK`` below for the few keys the
schema leaves bare. Comments are read like this:

    # A single comment line above fields heads a group: each field up to the next
    # blank line, comment or method gets it. (This block, two lines, belongs to the
    # next field only.)
    field: int = 1  # a trailing comment: this field's own description
    # (a string literal on the line after a field, its attribute docstring: also its own)

Custom types (durations, sizes, listen addresses, networks, URLs) are recognised by
the ``BeforeValidator`` that parses them (``_KINDS``); a new one needs an entry there,
or a ``WithJsonSchema`` annotation in the schema. Values given as ``${VAR}`` pass the
JSON Schema wherever the loader would accept them (it substitutes after parsing YAML).

Regenerate the committed files with:

    authproxy config-reference -o docs/configuration.md --json-schema docs/config.schema.json
"""

from __future__ import annotations

import ast
import copy
import inspect
import io
import json
import tokenize
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import PydanticUndefined, core_schema

from authproxy.config import schema

REGENERATE = "authproxy config-reference -o docs/configuration.md --json-schema docs/config.schema.json"
MARKDOWN_PATH = "docs/configuration.md"
JSON_SCHEMA_PATH = "docs/config.schema.json"

# ${VAR} and ${VAR:-default} (authproxy/config/env.py): the loader substitutes them after
# parsing YAML, so in the file any constrained scalar may be one of these instead.
_ENV_REFERENCE = {
    "type": "string",
    "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}",
    "description": "${VAR} or ${VAR:-default}, replaced from the environment",
}
_ENV_MARK = {"x-authproxy-env-reference": True}  # pydantic resolves "$ref"s itself: swapped in afterwards


@dataclass(frozen=True, slots=True)
class _Kind:
    """A custom value type: its name in the Markdown and its JSON Schema."""

    name: str
    json: dict[str, Any]
    render: typing.Callable[[Any], Any] = str  # a default as written in YAML


def _duration_text(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


def _size_text(size: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


# By the name of the BeforeValidator function that parses the value in schema.py.
_KINDS: dict[str, _Kind] = {
    "parse_duration": _Kind(
        "duration",
        {"anyOf": [{"type": "string", "pattern": r"^\s*(\d+(\.\d+)?(ms|s|m|h|d))+\s*$"}, {"type": "number", "minimum": 0}],
         "examples": ["250ms", "30s", "5m", "12h", "1h30m"]},
        _duration_text,
    ),
    "parse_size": _Kind(
        "size",
        {"anyOf": [{"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$"},
                   {"type": "integer", "minimum": 0}],
         "examples": ["10MiB", "512KiB", "1GB"]},
        _size_text,
    ),
    "parse_listen": _Kind(
        "listen address",
        {"type": "string", "pattern": r"^\s*(\[[0-9A-Fa-f:.]+\]|[0-9.]*|localhost):\d{1,5}\s*$",
         "examples": ["0.0.0.0:8080", "[::]:8080", "127.0.0.1:9090"]},
    ),
    "parse_network": _Kind("network", {"type": "string", "examples": ["10.0.0.0/8", "192.168.1.10", "fd00::/8"]}),
    "parse_http_url": _Kind("URL", {"type": "string", "pattern": r"^\s*[Hh][Tt][Tt][Pp][Ss]?://"}),
    "parse_exact_url": _Kind("URL", {"type": "string", "pattern": r"^\s*[Hh][Tt][Tt][Pp][Ss]?://"}),
    "parse_workers": _Kind(
        'integer or "auto"',
        {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 256}, {"const": "auto"},
                   {"type": "string", "pattern": r"^\s*\d+\s*$"}]},
        lambda value: value,
    ),
    "read_secret": _Kind(
        "secret",
        {"anyOf": [{"type": "string", "writeOnly": True},
                   {"type": "object", "properties": {"file": {"type": "string", "minLength": 1}},
                    "required": ["file"], "additionalProperties": False}]},
    ),
    "readable_file": _Kind("file path", {"type": "string", "minLength": 1}),
    "parse_template_value": _Kind("template", {"type": "string"}),
}

# Descriptions for keys the schema leaves without one. Prefer a comment in schema.py:
# it wins over these, and the test fails on an entry whose key no longer exists.
_FALLBACK: dict[str, str] = {
    "listen": "Address of the proxy listener.",
    "admin_listen": "Address of the admin listener: /healthz, /readyz, /metrics.",
    "shutdown_timeout": "On SIGTERM/SIGINT: how long in-flight requests may finish before the process exits.",
    "log": "Logging.",
    "log.level": "Lowest level logged.",
    "log.format": "json: one JSON object a line; text: for people.",
    "limits.max_headers": "Most request header fields accepted.",
    "forward_auth": "The forward-auth endpoint ({proxy_prefix}/auth) for nginx auth_request and Traefik forwardAuth.",
    "forward_auth.callers": "Networks (CIDR or IP) of those callers; default: nobody.",
    "routes": "Checked in order; the first match wins.",
    "routes[].name": "Names the route in metrics, logs and the assertion's aud.",
    "routes[].timeouts": "Timeouts towards the upstream.",
    "oidc.provider": "cognito: AWS Cognito (endpoints derived from cognito_domain); "
                     "generic: discovery from {issuer}/.well-known/openid-configuration.",
    "oidc.client_id": "This proxy's client id at the provider.",
    "oidc.client_auth": "How the client authenticates at the token endpoint.",
    "oidc.scopes": "Requested at sign-in; must include openid.",
    "session.idle_timeout": "A session unused this long ends.",
    "routes[].service_token.client_secret": "The machine client's secret; give it with client_id.",
    "store.dynamodb": "The DynamoDB table (backend: dynamodb).",
    "store.dynamodb.table": "Table name; create it with `authproxy store init --config FILE`.",
    "store.dynamodb.region": "AWS region of the table.",
    "store.cache": "Decrypted sessions kept in this process.",
    "store.cache.max_entries": "Most sessions kept.",
    "assertion.lifetime": "How long an assertion is valid; at most 60s.",
}


# --- descriptions from the source ----------------------------------------------------------


def _clean(text: str) -> str:
    return " ".join(text.split()).replace("``", "`")  # reST literals to Markdown


def _source_descriptions(module: types.ModuleType) -> dict[tuple[str, str], str]:
    """(class name, field name) -> the description its comments and docstrings give."""
    source = inspect.getsource(module)
    comments: dict[int, str] = {}
    own_line: set[int] = set()  # lines holding nothing but a comment
    code_lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
            if token.start[0] not in code_lines:
                own_line.add(token.start[0])
        elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING):
            code_lines.add(token.start[0])
            own_line.discard(token.start[0])
    found: dict[tuple[str, str], str] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef):
            found.update(_class_descriptions(node, comments, own_line))
    return found


def _class_descriptions(
    node: ast.ClassDef, comments: dict[int, str], own_line: set[int]
) -> Iterator[tuple[tuple[str, str], str]]:
    group = ""
    previous_end = node.body[0].lineno - 1 if node.body else node.lineno
    body = node.body
    for index, statement in enumerate(body):
        if isinstance(statement, ast.Expr) and isinstance(getattr(statement, "value", None), ast.Constant):
            previous_end = statement.end_lineno or statement.lineno
            continue  # a docstring: read with the field before it
        first = min([statement.lineno, *(d.lineno for d in getattr(statement, "decorator_list", []))])
        block = []
        line = first - 1
        while line in own_line:
            block.insert(0, comments[line])
            line -= 1
        if block or line > previous_end:  # a new comment or a blank line ends a group
            group = ""
        previous_end = statement.end_lineno or statement.lineno
        if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
            group = ""
            continue
        own = []
        if len(block) > 1:
            own.append(" ".join(block))
        elif block:
            group = block[0]
        for line in range(statement.lineno, (statement.end_lineno or statement.lineno) + 1):
            if line in comments and line not in own_line:
                own.append(comments[line])
        following = body[index + 1] if index + 1 < len(body) else None
        if (isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)):
            own.append(inspect.cleandoc(following.value.value))
        if own:
            group = ""  # a heading names the bare fields under it, up to the first one with its own words
        text = _clean(" ".join(own) if own else group)
        if text:
            yield (node.name, statement.target.id), text


def _class_doc(model: type[BaseModel]) -> str:
    doc = model.__dict__.get("__doc__")  # not inherited: BaseModel's own says nothing about ours
    return _clean(inspect.cleandoc(doc)) if doc else ""


# --- the walk over the models --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Key:
    """One configuration key, as the reference shows it."""

    path: str  # "store.dynamodb.table", "routes[].match.host"
    type: str
    default: str  # as written in YAML; "" when required
    required: bool
    description: str
    section: type[BaseModel] | None  # the model this key opens, if any


def keys(root: type[BaseModel] = schema.Config) -> list[tuple[str, type[BaseModel], list[Key]]]:
    """Every section (path, model, its keys), depth first in the schema's order."""
    described = _source_descriptions(inspect.getmodule(root))  # type: ignore[arg-type]
    sections: list[tuple[str, type[BaseModel], list[Key]]] = []

    def visit(prefix: str, model: type[BaseModel]) -> None:
        rows = [_key(prefix, model, name, field, described) for name, field in model.model_fields.items()]
        sections.append((prefix, model, rows))
        for row in rows:
            if row.section is not None:
                visit(row.path, row.section)

    visit("", root)
    return sections


def _key(prefix: str, model: type[BaseModel], name: str, field: FieldInfo,
         described: dict[tuple[str, str], str]) -> Key:
    path = f"{prefix}.{name}" if prefix else name
    annotation = field.annotation
    kind = _kind_of(field.metadata)
    section = _model_in(annotation)
    if section is not None and _is_list(annotation):
        path_of_section = path + "[]"
    else:
        path_of_section = path
    description = field.description or described.get((model.__name__, name), "")
    if not description and section is not None:
        description = _class_doc(section)
    if not description:
        description = _FALLBACK.get(path, "")
    required = field.is_required()
    default = "" if required else _default_text(field, kind)
    type_text = kind.name if kind else _type_text(annotation)
    constraints = _constraints(field.metadata)
    if constraints:
        type_text += f" ({constraints})"
    return Key(path_of_section if section is not None else path, type_text, default, required, description, section)


def _kind_of(metadata: list[Any]) -> _Kind | None:
    for item in metadata:
        kind = _KINDS.get(getattr(getattr(item, "func", None), "__name__", ""))
        if kind is not None:
            return kind
    return None


def _strip_annotated(annotation: Any) -> tuple[Any, list[Any]]:
    if typing.get_origin(annotation) is typing.Annotated:
        base, *metadata = typing.get_args(annotation)
        return base, metadata
    return annotation, []


def _is_list(annotation: Any) -> bool:
    args = [a for a in typing.get_args(annotation) if a is not type(None)] if _is_union(annotation) else [annotation]
    return any(typing.get_origin(a) is list for a in args)


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model a key opens: ``Model``, ``Model | None`` or ``list[Model]``."""
    annotation, _ = _strip_annotated(annotation)
    if _is_union(annotation):
        for arg in typing.get_args(annotation):
            if (found := _model_in(arg)) is not None:
                return found
        return None
    if typing.get_origin(annotation) is list:
        return _model_in(typing.get_args(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _type_text(annotation: Any) -> str:
    annotation, metadata = _strip_annotated(annotation)
    kind = _kind_of(metadata)
    if kind is not None:
        return kind.name
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if _is_union(annotation):
        parts = [_type_text(arg) for arg in args if arg is not type(None)]
        text = " or ".join(dict.fromkeys(parts))
        return f"{text} or null" if type(None) in args else text
    if origin is Literal:
        return " | ".join(json.dumps(arg) for arg in args)
    if origin is list:
        return "list" if _model_in(args[0]) is not None else f"list of {_type_text(args[0])}"
    if origin is dict:
        return f"map of {_type_text(args[0])} to {_type_text(args[1])}"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "section"
        if issubclass(annotation, SecretStr):
            return "secret"
        return {bool: "boolean", int: "integer", float: "number", str: "string"}.get(annotation, annotation.__name__)
    return str(annotation)


def _constraints(metadata: list[Any]) -> str:
    words = []
    for item in metadata:
        for attribute, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            value = getattr(item, attribute, None)
            if isinstance(item, annotated_types.BaseMetadata) and value is not None:
                words.append(f"{sign} {value:g}" if isinstance(value, float) else f"{sign} {value}")
        if isinstance(item, annotated_types.MinLen) and item.min_length:
            words.append(f"at least {item.min_length}")
        if isinstance(item, annotated_types.MaxLen):
            words.append(f"at most {item.max_length}")
    return ", ".join(words)


def _default_value(field: FieldInfo) -> Any:
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    return field.default


def _default_text(field: FieldInfo, kind: _Kind | None) -> str:
    value = _default_value(field)
    if isinstance(value, BaseModel):
        return ""  # a section: its keys carry their own defaults
    return json.dumps(_yaml_value(value, kind), ensure_ascii=False)


def _yaml_value(value: Any, kind: _Kind | None) -> Any:
    """A default as one would write it in the file."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if kind is not None:
        return kind.render(value)
    if isinstance(value, (list, tuple)):
        return [_yaml_value(item, None) for item in value]
    if isinstance(value, dict):
        return {str(k): _yaml_value(v, None) for k, v in value.items()}
    if isinstance(value, (int, float)):
        return value
    return str(value)


# --- Markdown ----------------------------------------------------------------------------------

_INTRO = """\
# Configuration reference

<!-- Generated from authproxy/config/schema.py; do not edit. Regenerate with:
     {regenerate} -->

Every key authproxy reads, with its type and default. Unknown keys are errors;
`authproxy check-config FILE` reports every problem at once with its line and path.
`config.example.yaml` and `config.signin.example.yaml` show the keys in context.

- **Environment**: `${{VAR}}` and `${{VAR:-default}}` in any string are replaced from the
  environment after the YAML is parsed (`$${{` is a literal `${{`).
- **duration**: a number with a unit, `250ms`, `30s`, `5m`, `12h`, `1d`, or combined
  (`1h30m`); a bare number is seconds.
- **size**: `10MiB`, `512KiB`, `1GB`, `100B`; a bare number is bytes.
- **listen address**: `host:port`, e.g. `0.0.0.0:8080`, `[::]:8080`, `127.0.0.1:9090`;
  `:8080` is every interface.
- **network**: a CIDR such as `10.0.0.0/8`, or one IP address.
- **URL**: an absolute `http://` or `https://` URL without credentials, query or fragment.
- **secret**: a string, or `{{file: PATH}}` for the text of a file (its final line break
  removed; a relative PATH is relative to the configuration file's directory); never echoed
  in errors or logs.
- **file path**: absolute, or relative to the configuration file's directory.
- **template**: a header value with placeholders, e.g. `Bearer {{access_token}}` (see
  [guide.md](guide.md), "Route rules").
- `routes[]` means each item of the list `routes`.

An editor can check the file against `docs/config.schema.json`: with the YAML extension
(yaml-language-server), put this first line in the file:

```yaml
# yaml-language-server: $schema=https://raw.githubusercontent.com/OWNER/authproxy/main/docs/config.schema.json
```

(or a relative path to a checkout's copy).
"""


def markdown(root: type[BaseModel] = schema.Config) -> str:
    out = [_INTRO.format(regenerate=REGENERATE)]
    contents = []
    body = []
    for prefix, model, rows in keys(root):
        title = f"`{prefix}`" if prefix else "Top level"
        anchor = _anchor(prefix or "top level")
        contents.append(f"- [{title}](#{anchor})")
        body.append(f"\n## {title}\n")
        doc = _class_doc(model)
        if doc:
            body.append(f"\n{_cell(doc)}\n")
        body.append("\n| Key | Type | Default | Description |\n|---|---|---|---|\n")
        for row in rows:
            key = f"[`{row.path}`](#{_anchor(row.path)})" if row.section is not None else f"`{row.path}`"
            default = "**required**" if row.required else (f"`{row.default}`" if row.default else "")
            body.append(f"| {key} | {_pipes(row.type)} | {default} | {_cell(row.description)} |\n")
    out.append("\n## Sections\n\n" + "\n".join(contents) + "\n")
    out.extend(body)
    return "".join(out)


def _anchor(text: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces as '-'."""
    return "".join(ch for ch in text.lower().replace(" ", "-") if ch.isalnum() or ch in "-_")


def _cell(text: str) -> str:
    """Prose for a table cell: emphasis characters escaped outside `code`, '|' always."""
    parts = text.replace("\n", " ").split("`")
    for index in range(0, len(parts), 2):
        for char in "\\*_<>[]":
            parts[index] = parts[index].replace(char, "\\" + char)
    return _pipes("`".join(parts))


def _pipes(text: str) -> str:
    return text.replace("|", "\\|")  # a cell's own '|' would end the cell, even in `code`


# --- JSON Schema -------------------------------------------------------------------------------


class _Generator(GenerateJsonSchema):
    """pydantic's generator, with our custom types and ``${VAR}`` references."""

    def function_before_schema(self, schema: core_schema.BeforeValidatorFunctionSchema) -> dict[str, Any]:
        kind = _KINDS.get(getattr(schema["function"]["function"], "__name__", ""))
        if kind is not None and not schema.get("json_schema_input_schema"):
            return _with_env(copy.deepcopy(kind.json))
        return super().function_before_schema(schema)

    def int_schema(self, schema: core_schema.IntSchema) -> dict[str, Any]:
        return _with_env(super().int_schema(schema))

    def float_schema(self, schema: core_schema.FloatSchema) -> dict[str, Any]:
        return _with_env(super().float_schema(schema))

    def bool_schema(self, schema: core_schema.BoolSchema) -> dict[str, Any]:
        return _with_env(super().bool_schema(schema))

    def literal_schema(self, schema: core_schema.LiteralSchema) -> dict[str, Any]:
        return _with_env(super().literal_schema(schema))

    def str_schema(self, schema: core_schema.StringSchema) -> dict[str, Any]:
        result = super().str_schema(schema)
        return _with_env(result) if set(result) - {"type"} else result


def _with_env(json_schema: dict[str, Any]) -> dict[str, Any]:
    """Also accept ``${VAR}``: the loader substitutes before validating, and pydantic's
    lax mode then reads "8080" as 8080 and "true" as true."""
    return {"anyOf": [json_schema, dict(_ENV_MARK)]}


def json_schema(root: type[BaseModel] = schema.Config) -> dict[str, Any]:
    document = root.model_json_schema(schema_generator=_Generator, mode="validation")
    document = _swap_env_marks(document)
    definitions = document.setdefault("$defs", {})
    definitions["EnvReference"] = _ENV_REFERENCE
    for prefix, model, rows in keys(root):
        target = document if model is root else definitions.get(model.__name__)
        if target is None:
            continue
        target.pop("title", None)
        if (doc := _class_doc(model)):
            target["description"] = doc
        for row in rows:
            prop = target.get("properties", {}).get(row.path.removesuffix("[]").rsplit(".", 1)[-1])
            if prop is None:
                continue
            prop.pop("title", None)
            prop.pop("default", None)
            if row.description:
                prop["description"] = row.description
            if row.default:
                prop["default"] = json.loads(row.default)
    ordered = {"$schema": "http://json-schema.org/draft-07/schema#", "title": "authproxy configuration"}
    ordered.update(document)
    return ordered


_NOT_JSON_SCHEMA = frozenset({"gt", "ge", "lt", "le"})  # pydantic's leftovers beside a replaced custom type


def _swap_env_marks(node: Any) -> Any:
    if node == _ENV_MARK:
        return {"$ref": "#/$defs/EnvReference"}
    if isinstance(node, dict):
        return {key: _swap_env_marks(value) for key, value in node.items() if key not in _NOT_JSON_SCHEMA}
    if isinstance(node, list):
        return [_swap_env_marks(item) for item in node]
    return node


def json_schema_text(root: type[BaseModel] = schema.Config) -> str:
    return json.dumps(json_schema(root), indent=2, ensure_ascii=False) + "\n"
