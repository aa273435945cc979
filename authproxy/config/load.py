"""Load a configuration file: YAML, then ``${ENV}`` substitution, then strict validation:
the schema (each key and section), then the rules across sections (``validate.py``).

Every problem is collected and reported at once, each with the file, line and a
dotted path (``config.yaml:14: routes[1].upstream: ...``). Values that came from the
environment, and values of keys that look secret, are never echoed in errors.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from authproxy.config.env import substitute
from authproxy.config.schema import Config
from authproxy.config.validate import validate
from authproxy.errors import ConfigError, ConfigIssue

# The keys whose values may come from a file ({file: PATH}); the schema types them Secret.
SECRET_KEYS = ("oidc.client_secret", "session.secrets", "assertion.signing_keys", "routes[].service_token.client_secret")
_SECRET_KEY = re.compile(r"secret|password|passwd|token|private|(^|_)key($|s$|_)", re.IGNORECASE)


def load_config(
    path: str | os.PathLike[str], environ: Mapping[str, str] | None = None, base_dir: str | None = None
) -> Config:
    """Read, substitute and validate ``path``; raise ``ConfigError`` listing every problem.
    Files the configuration names (secrets, CA bundle, TLS) are relative to ``base_dir``,
    by default the file's own directory."""
    filename = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(filename, [ConfigIssue("", f"cannot read file: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError:
        raise ConfigError(filename, [ConfigIssue("", "file is not valid UTF-8")]) from None
    return parse_config(text, filename, os.environ if environ is None else environ, base_dir)


def parse_config(text: str, filename: str, environ: Mapping[str, str], base_dir: str | None = None) -> Config:
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
        lines = _line_index(yaml.compose(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        issue = ConfigIssue("", f"invalid YAML: {problem}", mark.line + 1 if mark else None)
        raise ConfigError(filename, [issue]) from None
    if not isinstance(document, dict):
        raise ConfigError(filename, [ConfigIssue("", "the file must hold a mapping of keys (listen, routes, ...)")])

    substitution = substitute(document, environ)
    issues = [_with_line(issue, lines) for issue in substitution.issues]
    issues += [_with_line(issue, lines) for issue in _check_route_names(substitution.document)]
    config: Config | None = None
    try:
        # Secret and CA files are named relative to the configuration file.
        base_dir = base_dir or os.path.dirname(os.path.abspath(filename))
        config = Config.model_validate(substitution.document, context={"base_dir": base_dir})
    except ValidationError as exc:
        # A value already reported as an unset variable would only add a confusing second error.
        unset = {issue.path for issue in substitution.issues}
        issues += [
            _issue_from_pydantic(error, lines, substitution.from_env)
            for error in exc.errors()
            if _dotted(tuple(error["loc"])) not in unset
        ]
    if config is not None:
        # An environment value is never echoed, here either (a path_prefix from ${PREFIX}, say).
        hidden = sorted(_env_strings(substitution.document, "", substitution.from_env), key=len, reverse=True)
        issues += [_with_line(_masked(issue, hidden), lines) for issue in validate(config)]
    if issues or config is None:
        issues.sort(key=lambda issue: (issue.line or 0, issue.path))
        raise ConfigError(filename, issues)
    return config


class _StrictLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error
    (PyYAML keeps the last silently, hiding a typo'd copy-paste)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _check_route_names(document: object) -> list[ConfigIssue]:
    routes = document.get("routes") if isinstance(document, dict) else None
    if not isinstance(routes, list):
        return []
    seen: dict[str, int] = {}
    issues = []
    for index, route in enumerate(routes):
        name = route.get("name") if isinstance(route, dict) else None
        if not isinstance(name, str):
            continue
        if name in seen:
            issues.append(ConfigIssue(f"routes[{index}].name", f"duplicate route name {name!r} (first used by routes[{seen[name]}])"))
        else:
            seen[name] = index
    return issues


def _issue_from_pydantic(error: Mapping[str, typing.Any], lines: dict[str, int], from_env: set[str]) -> ConfigIssue:
    loc = tuple(error["loc"])
    path = _dotted(loc)
    kind = error["type"]
    message = str(error["msg"])
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        message = "unknown key"
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        if close:
            message += f"; did you mean {close[0]!r}?"
        elif allowed:
            message += f" (allowed: {', '.join(allowed)})"
    elif kind == "literal_error" and not _looks_secret(loc) and not _holds_env(path, from_env):
        message = f"{error.get('input')!r} is not allowed; expected {error.get('ctx', {}).get('expected', '')}"
    elif kind == "missing":
        message = "required key is missing"
    elif isinstance(error.get("input"), Mapping) and "file" in error["input"] and kind != "value_error":
        # Only secret-typed keys may name a file: anywhere else its content could be sent
        # upstream (a template naming a mounted service-account token, say).
        message = f"{{file: ...}} is only allowed for secret keys ({', '.join(SECRET_KEYS)})"
    else:
        message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        value = error.get("input")
        # An environment value anywhere in the input (a list or mapping holds it too), or a
        # secret key's own value, is never echoed.
        hidden = _env_strings(value, path, from_env)
        if isinstance(value, str) and value and _looks_secret(loc):
            hidden.append(value)
        for text in sorted(hidden, key=len, reverse=True):
            message = message.replace(repr(text), "'***'").replace(text, "***")
    return _with_line(ConfigIssue(path, message), lines)


def _masked(issue: ConfigIssue, hidden: list[str]) -> ConfigIssue:
    message = issue.message
    for text in hidden:
        message = message.replace(repr(text), "'***'").replace(text, "***")
    return ConfigIssue(issue.path, message, issue.line) if message != issue.message else issue


_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def _holds_env(path: str, from_env: set[str]) -> bool:
    """The value at ``path`` is, or holds (in a list or mapping), a value from the environment."""
    return any(p == path or p.startswith((path + ".", path + "[")) for p in from_env) if path else bool(from_env)


def _env_strings(value: object, path: str, from_env: set[str]) -> list[str]:
    """The strings inside ``value`` (the input at ``path``) that came from the environment."""
    found = []
    for env_path in from_env:
        if env_path == path:
            rest = ""
        elif path and env_path.startswith((path + ".", path + "[")):
            rest = env_path[len(path):]
        elif not path:
            rest = "." + env_path
        else:
            continue
        item: object = value
        for step in _STEP.finditer(rest):
            key, index = step.group(1), step.group(2)
            if index is not None and isinstance(item, list) and int(index) < len(item):
                item = item[int(index)]
            elif key is not None and isinstance(item, Mapping) and key in item:
                item = item[key]
            else:
                item = None
                break
        if isinstance(item, str) and item:
            found.append(item)
    return found


def _looks_secret(loc: tuple[typing.Any, ...]) -> bool:
    return any(isinstance(part, str) and _SECRET_KEY.search(part) for part in loc)


def _dotted(loc: tuple[typing.Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path


def _allowed_keys(loc: tuple[typing.Any, ...]) -> list[str]:
    """The keys the schema accepts at ``loc``, found by walking the model types."""
    current: typing.Any = Config
    for part in loc:
        current = _unwrap(current)
        if isinstance(part, int):
            args = typing.get_args(current)
            current = args[0] if args else None
        elif isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            current = current.model_fields[part].annotation
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _unwrap(annotation: typing.Any) -> typing.Any:
    """Strip Optional[...] and Annotated[...] down to the model or list type."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            annotation = members[0]
        else:
            return annotation


def _line_index(node: yaml.Node | None) -> dict[str, int]:
    """Map each dotted path in the document to its 1-based line."""
    index: dict[str, int] = {}

    def walk(current: yaml.Node, path: str) -> None:
        index[path] = current.start_mark.line + 1
        if isinstance(current, yaml.MappingNode):
            for key_node, value_node in current.value:
                key = str(key_node.value)
                child = f"{path}.{key}" if path else key
                walk(value_node, child)
                index[child] = key_node.start_mark.line + 1
        elif isinstance(current, yaml.SequenceNode):
            for position, item in enumerate(current.value):
                walk(item, f"{path}[{position}]")

    if node is not None:
        walk(node, "")
    return index


def _with_line(issue: ConfigIssue, lines: dict[str, int]) -> ConfigIssue:
    path = issue.path
    while path:
        if path in lines:
            return ConfigIssue(issue.path, issue.message, lines[path])
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return ConfigIssue(issue.path, issue.message, lines.get("") if issue.path else None)
