"""Reading a spec file: bounded, alias-free YAML with a position for every field, and its schema.

Every mistake becomes a :class:`~rnngen.errors.Problem` with file, line, column and field.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .errors import Problem, SpecError, one_of, suggest

MAX_BYTES = 256 * 1024
MAX_EVENTS = 20_000
MAX_DEPTH = 20


class Positions(dict):
    """field path (tuple) -> (line, col), both 1-based."""

    def at(self, path: tuple) -> tuple[int, int]:
        while path and path not in self:
            path = path[:-1]
        return self.get(path, (0, 0))


def shown(path: Path) -> str:
    """The path as the CLI shows it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def read(path: Path) -> str:
    file = shown(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        problem = Problem(file, 0, 0, "", f"cannot read the spec: {err.strerror}")
        raise SpecError([problem]) from None
    if len(raw) > MAX_BYTES:
        raise SpecError(
            [Problem(file, 0, 0, "", f"spec is {len(raw)} bytes; the limit is {MAX_BYTES}")]
        )
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        why = "binary data (NUL byte); a spec is a YAML text file"
        raise SpecError([Problem(file, line, 0, "", why)])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        why = f"not UTF-8 text (byte 0x{raw[err.start]:02x}); a spec is a YAML text file"
        raise SpecError([Problem(file, line, 0, "", why)]) from None
    return text


def compose(text: str, file: str) -> yaml.Node | None:
    """Compose YAML after checking the event stream is small, shallow and alias-free."""

    def refuse(mark, message):
        return SpecError([Problem(file, mark.line + 1, mark.column + 1, "", message)])

    depth = count = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            count += 1
            mark = event.start_mark
            if count > MAX_EVENTS:
                raise refuse(mark, f"spec has more than {MAX_EVENTS} YAML nodes")
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise refuse(mark, "YAML anchors and aliases (&, *) are not allowed in specs")
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise refuse(mark, f"YAML is nested more than {MAX_DEPTH} levels deep")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        raise SpecError(
            [Problem(file, line, col, "", f"YAML syntax error: {err.problem}")]
        ) from None
    except yaml.YAMLError as err:
        raise SpecError([Problem(file, 0, 0, "", f"YAML error: {err}")]) from None


_SCALARS = yaml.SafeLoader("")


_DEFAULT_TAGS = {
    yaml.MappingNode: "tag:yaml.org,2002:map",
    yaml.SequenceNode: "tag:yaml.org,2002:seq",
}


_SCALAR_TAGS = frozenset(
    f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "timestamp")
)


def plain(node: yaml.Node, path: tuple, pos: Positions, file: str, problems: list) -> Any:
    pos[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    allowed = _DEFAULT_TAGS.get(type(node))
    if (node.tag != allowed) if allowed else (node.tag not in _SCALAR_TAGS):
        line, col = node.start_mark.line + 1, node.start_mark.column + 1
        problems.append(
            Problem(
                file,
                line,
                col,
                field_name(path),
                f"YAML tag '{node.tag}' is not allowed; a spec holds only plain "
                "mappings, lists, strings, numbers and booleans",
            )
        )
        return None
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        for key_node, value_node in node.value:
            key = plain(key_node, (*path, "<key>"), pos, file, problems)
            if not isinstance(key, str):
                problems.append(
                    at(file, pos, path, f"keys must be strings, not {type(key).__name__}")
                )
                continue
            if key in out:
                line = key_node.start_mark.line + 1
                problems.append(
                    Problem(
                        file,
                        line,
                        key_node.start_mark.column + 1,
                        field_name((*path, key)),
                        "duplicate key",
                    )
                )
                continue
            pos[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = plain(value_node, (*path, key), pos, file, problems)
            # a quoted scalar's text starts one column after its quote
            quote = isinstance(value_node, yaml.ScalarNode) and value_node.style in ("'", '"')
            pos[(*path, key, "<value>")] = (
                value_node.start_mark.line + 1,
                value_node.start_mark.column + 1 + quote,
            )
        return out
    if isinstance(node, yaml.SequenceNode):
        return [plain(item, (*path, i), pos, file, problems) for i, item in enumerate(node.value)]
    try:
        return _SCALARS.construct_object(node)
    except yaml.YAMLError as err:
        problems.append(at(file, pos, path, f"invalid value: {err}"))
        return None


def field_name(path: tuple) -> str:
    out = ""
    for part in path:
        if part in ("<key>", "<value>"):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def at(file: str, pos: Positions, path: tuple, message: str, offset: int = 0) -> Problem:
    line, col = pos.at((*path, "<value>")) if (*path, "<value>") in pos else pos.at(path)
    return Problem(file, line, col + offset if col else 0, field_name(path), message)


def schema() -> dict:
    return json.loads(resources.files("rnngen.schema").joinpath("spec.schema.json").read_text())


def schema_problems(data: Any, file: str, pos: Positions) -> list[Problem]:
    validator = jsonschema.Draft202012Validator(schema())
    problems = []
    for err in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        path = tuple(err.absolute_path)
        if err.validator == "additionalProperties":
            allowed = err.schema.get("properties", {})
            extra = [k for k in err.instance if k not in allowed]
            for key in extra:
                problems.append(
                    Problem(
                        file,
                        *pos.at((*path, key)),
                        field_name((*path, key)),
                        f"unknown key '{key}'{suggest(key, allowed)}; "
                        f"valid keys: {one_of(allowed)}",
                    )
                )
        elif err.validator == "required":
            missing = err.message.split("'")[1]
            problems.append(at(file, pos, path, f"missing required key '{missing}'"))
        elif err.validator in ("type", "oneOf"):
            expected = err.schema.get("type") or describe_oneof(err.schema)
            problems.append(
                at(file, pos, path, f"expected {expected}, got {type_name(err.instance)}")
            )
        elif err.validator == "enum":
            problems.append(
                at(
                    file,
                    pos,
                    path,
                    f"invalid value {err.instance!r}{suggest(err.instance, err.validator_value)}; "
                    f"valid: {one_of(err.validator_value)}",
                )
            )
        elif err.validator in ("minItems", "minProperties"):
            problems.append(at(file, pos, path, "must not be empty"))
        elif err.validator == "maxItems":
            problems.append(
                at(file, pos, path, f"has too many entries (at most {err.validator_value})")
            )
        else:
            problems.append(at(file, pos, path, err.message))
    return problems


def describe_oneof(schema_part: dict) -> str:
    kinds = []
    for option in schema_part.get("oneOf", []):
        kind = option.get("type", "value")
        kinds.append(" or ".join(kind) if isinstance(kind, list) else kind)
    return " or ".join(kinds) or "a valid value"


def type_name(value: Any) -> str:
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)
