"""Every problem of a configuration at once, each with its key path and its line.

msgspec stops at the first problem inside a struct. To report them all, the file is
walked key by key along the structs' own fields: a nested struct is walked in turn, any
other value is converted on its own (`msgspec.convert` with the field's annotated type, so
the limits stay where they are declared: in the struct). A new key is therefore one line
in its struct and nothing here. Unknown keys get a "did you mean" from the struct's fields.

Lines come from the YAML node tree (`yaml.compose`), looked up by key path, so a problem
found after parsing (a missing file named by `model.comfyui.workflow`, say) still points
at its line.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from typing import Any, Iterable, NamedTuple

import msgspec
import yaml


class Problem(NamedTuple):
    path: str  # `server.port`, `auth.tokens[0]`; "" for the file as a whole
    message: str
    line: int | None = None

    def __str__(self) -> str:
        at = f" (line {self.line})" if self.line else ""
        return f"{self.path or '(file)'}: {self.message}{at}"


def join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


# --- lines --------------------------------------------------------------------------


def key_lines(text: str) -> dict[str, int]:
    """Key path -> 1-based line of the key (of the item, in a list). A key given twice gets
    its last line: YAML keeps the last value."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return {}  # parsing reports it
    lines: dict[str, int] = {}

    def walk(node: yaml.Node | None, path: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    sub = join(path, key_node.value)
                    lines[sub] = key_node.start_mark.line + 1
                    walk(value_node, sub)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                sub = f"{path}[{index}]"
                lines.setdefault(sub, item.start_mark.line + 1)
                walk(item, sub)

    walk(root, "")
    return lines


_LAST_PART = re.compile(r"(\.[^.\[]+|\[\d+\])$")


def line_of(path: str, lines: dict[str, int]) -> int | None:
    """The line of `path`, else of the nearest enclosing key that is in the file."""
    while path:
        if path in lines:
            return lines[path]
        shorter = _LAST_PART.sub("", path)
        if shorter == path:
            return None
        path = shorter
    return None


def locate(problems: Iterable[Problem], lines: dict[str, int]) -> list[Problem]:
    """Each problem with its line, in the order of the file (those without a line first)."""
    located = [p if p.line is not None else p._replace(line=line_of(p.path, lines)) for p in problems]
    return sorted(located, key=lambda p: p.line or 0)


# --- the walk -----------------------------------------------------------------------

_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


def from_validation_error(path: str, exc: msgspec.ValidationError) -> Problem:
    """msgspec's `Expected ... - at `$[0]`` as a problem at `path[0]`."""
    match = _AT.match(str(exc))
    assert match is not None
    sub = match.group("path") or ""
    return Problem(path + sub if sub.startswith("[") else join(path, sub.lstrip(".")) if sub else path, match.group("msg"))


def unknown_key(path: str, key: str, known: Iterable[str]) -> Problem:
    known = sorted(known)
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
    return Problem(join(path, key), f"unknown key; {hint}")


def _struct_of(annotation: Any, value: Any) -> type[msgspec.Struct] | None:
    """The struct to walk into for `value`: the annotation itself, or the struct member of
    an optional (`Target | None`) when a mapping was given."""
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and isinstance(value, dict):
        structs = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, msgspec.Struct)]
        if len(structs) == 1:
            return structs[0]
    return None


def check(data: Any, struct: type[msgspec.Struct], path: str = "", skip: Iterable[str] = ()) -> list[Problem]:
    """Every problem of `data` against `struct` (and the structs inside it), key by key.

    `skip`: key paths already reported (an unset variable, say); not judged again."""
    skipped = tuple(skip)
    if not isinstance(data, dict):
        try:
            msgspec.convert(data, struct, strict=False)
        except msgspec.ValidationError as exc:
            return [from_validation_error(path, exc)]
        return []
    fields = {f.encode_name: f for f in msgspec.structs.fields(struct)}
    forbid = getattr(struct, "__struct_config__").forbid_unknown_fields
    problems = [unknown_key(path, str(k), fields) for k in data if forbid and k not in fields]
    for name, f in fields.items():
        sub = join(path, name)
        if name not in data:
            if f.required:
                problems.append(Problem(sub, "required"))
            continue
        raw = data[name]
        inner = _struct_of(f.type, raw)
        if inner is not None:
            if raw is not None or f.required:  # `server:` with nothing under it: the defaults
                problems += check(raw, inner, sub, skipped)
            continue
        if any(s == sub or s.startswith((sub + ".", sub + "[")) for s in skipped):
            continue
        try:
            # strict=False: a `${PORT}` expanded to "8080" still becomes the int 8080.
            msgspec.convert(raw, f.type, strict=False)
        except msgspec.ValidationError as exc:
            problems.append(with_allowed_values(from_validation_error(sub, exc), f.type))
    return problems


def allowed_values(annotation: Any) -> tuple | None:
    """The values a `Literal[...]` key takes (also inside `Annotated` or `| None`); None
    for any other type."""
    if typing.get_origin(annotation) is typing.Annotated:
        return allowed_values(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        found = [v for a in typing.get_args(annotation) for v in (allowed_values(a) or ())]
        return tuple(found) or None
    return None


def with_allowed_values(problem: Problem, annotation: Any) -> Problem:
    """msgspec says `Invalid enum value 'LOUD'` and stops there: name what the key takes."""
    allowed = allowed_values(annotation)
    if allowed is None or not problem.message.startswith("Invalid enum value"):
        return problem
    return problem._replace(message=f"{problem.message}; allowed: {', '.join(repr(v) for v in allowed)}")


class Broken(Exception):
    """A rule or a check read a key that has a problem of its own: it cannot be judged."""


class PartialView:
    """The config's values as attributes (`view.callback.url`), from a file that has
    problems: a key that has one raises Broken; a key not given reads as its default.
    Rules between keys and the checks of check-config run on it, so what can be judged
    is judged in the same round as the problems already found."""

    def __init__(self, data: dict, struct: type[msgspec.Struct], broken: Iterable[str], path: str = "") -> None:
        self._data = data if isinstance(data, dict) else {}
        self._fields = {f.encode_name: f for f in msgspec.structs.fields(struct)}
        self._broken = tuple(broken)
        self._path = path

    def __getattr__(self, name: str) -> Any:
        f = self._fields.get(name)
        if f is None:
            raise AttributeError(name)
        sub = join(self._path, name)
        if any(b == sub or b.startswith((sub + ".", sub + "[")) for b in self._broken):
            inner = _struct_of(f.type, self._data.get(name))
            if inner is None or not isinstance(self._data.get(name), dict):
                raise Broken(sub)
        raw = self._data.get(name)
        inner = _struct_of(f.type, raw if name in self._data else {})
        if inner is not None and (raw is None or isinstance(raw, dict)):
            return PartialView(raw or {}, inner, self._broken, sub)
        if name not in self._data:
            if f.required:
                raise Broken(sub)
            return f.default_factory() if f.default is msgspec.NODEFAULT else f.default
        return msgspec.convert(raw, f.type, strict=False)


def empty_sections_dropped(data: dict, struct: type[msgspec.Struct]) -> dict:
    """`server:` with nothing under it means the section's defaults: drop the None."""
    fields = {f.encode_name: f for f in msgspec.structs.fields(struct)}
    result = {}
    for key, value in data.items():
        f = fields.get(key)
        inner = _struct_of(f.type, value) if f is not None else None
        if inner is not None and value is None and not f.required:
            continue
        result[key] = empty_sections_dropped(value, inner) if inner is not None and isinstance(value, dict) else value
    return result
