"""``${VAR}`` and ``${VAR:-default}`` substitution in configuration strings.

Substitution runs on the parsed YAML's string scalars, never on the file text, so a
value containing YAML syntax (a secret with ':' or '#') cannot change the document's
shape. ``$${`` stands for a literal ``${``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from authproxy.errors import ConfigIssue

_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{[^}]*\}?")


@dataclass
class Substitution:
    """The substituted document, the problems found, and which paths took env values."""

    document: object
    issues: list[ConfigIssue] = field(default_factory=list)
    from_env: set[str] = field(default_factory=set)  # dotted paths whose value came from the environment


def substitute(document: object, environ: Mapping[str, str]) -> Substitution:
    result = Substitution(document=None)
    result.document = _walk(document, "", environ, result)
    return result


def _walk(node: object, path: str, environ: Mapping[str, str], result: Substitution) -> object:
    if isinstance(node, dict):
        return {key: _walk(value, _join(path, str(key)), environ, result) for key, value in node.items()}
    if isinstance(node, list):
        return [_walk(item, f"{path}[{index}]", environ, result) for index, item in enumerate(node)]
    if isinstance(node, str) and "$" in node:
        return _substitute_string(node, path, environ, result)
    return node


def _substitute_string(text: str, path: str, environ: Mapping[str, str], result: Substitution) -> str:
    def replace(match: re.Match[str]) -> str:
        whole = match.group(0)
        if whole == "$${":
            return "${"
        name, default = match.group(1), match.group(2)
        if name is None:
            result.issues.append(
                ConfigIssue(path, f"malformed variable reference {whole!r}: use ${{NAME}} or ${{NAME:-default}}")
            )
            return ""
        result.from_env.add(path)
        value = environ.get(name)
        if value:  # set and non-empty, like the shell's ${VAR:-default}
            return value
        if default is not None:
            return default
        if value is None:
            result.issues.append(ConfigIssue(path, f"environment variable {name} is not set and has no default"))
        return ""

    return _REFERENCE.sub(replace, text)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
