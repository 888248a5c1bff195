"""`${VAR}` expansion of the config file's string values, before they are typed.

`${VAR}` is the variable's value, `${VAR:-default}` its value or the default when it is
unset, `$$` a literal `$`. It runs on the parsed YAML, so a value from the environment is
converted like one written in the file (`port: "${PORT:-9000}"` is the int 9000), and a
variable that is unset with no default is a problem of its key, reported with the others.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from supervisor.config.check import Problem, join

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand(data: Any, environ: Mapping[str, str]) -> tuple[Any, list[Problem]]:
    """`data` with every string value expanded, and a problem per unset variable."""
    problems: list[Problem] = []
    return _expand(data, "", environ, problems), problems


def _expand(value: Any, key_path: str, environ: Mapping[str, str], problems: list[Problem]) -> Any:
    if isinstance(value, dict):
        return {k: _expand(v, join(key_path, k), environ, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{key_path}[{i}]", environ, problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        problems.append(Problem(key_path, f"environment variable {name} is not set and has no default"))
        return ""

    return _VAR.sub(substitute, value)
