"""Spec loading: YAML text -> validated, frozen :class:`CellSpec`.

A spec is data. YAML is read with PyYAML's safe machinery, with its size, depth,
node count and aliases bounded before anything is built; equations are parsed by
:mod:`rnngen.grammar`. Every mistake becomes a :class:`~rnngen.errors.Problem`
carrying file, line, column and field, and all independent problems are
reported together in one :class:`~rnngen.errors.SpecError`.
"""

from __future__ import annotations

import json
import keyword
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import sympy as sp
import yaml

from . import functions
from .errors import Problem, SpecError, one_of, suggest
from .grammar import (
    SIZE_NAMES,
    GrammarError,
    Vocabulary,
    WeightProduct,
    check_text,
    holds,
    parse_condition,
    parse_dimension,
    parse_equation,
)
from .resolve import layout_blocks, layout_in_force, resolve_weights

MAX_BYTES = 256 * 1024
MAX_EVENTS = 20_000
MAX_DEPTH = 20

#: Keras layers a spec may name as its reference.
REFERENCES = ("keras.layers.SimpleRNN", "keras.layers.GRU", "keras.layers.LSTM")

#: Names the generated code uses for itself; a spec may not define them.
RESERVED = frozenset(
    {
        "x",
        "np",
        "tf",
        "keras",
        "self",
        "mask",
        "t",
        "T",
        "B",
        "units",
        "input_dim",
        "weights",
        "forward",
        "backward",
        "tape",
        "dtype",
        "training",
        "states",
        "inputs",
        "outputs",
        "initial_state",
        "dropout",
        "recurrent_dropout",
        "config",
        "math",
        "seed",
        "out",
    }
    | set(functions.TABLE)
)

#: Module-level names of a generated module; the layer class may not shadow them.
MODULE_NAMES = frozenset(
    {
        "np",
        "forward",
        "backward",
        "Gradients",
        "weight_shapes",
        "get_initializer",
        "get_regularizer",
        "INITIALIZERS",
    }
    | set(functions.TABLE)
    | {f"{n}_grad" for n in functions.TABLE}
)

OPTION_KINDS = {"bool", "activation"}
KNOWN_OPTIONS = (
    "activation",
    "recurrent_activation",
    "use_bias",
    "reset_after",
    "unit_forget_bias",
)


@dataclass(frozen=True)
class Option:
    name: str
    kind: str  # "bool" | "activation"
    default: Any
    values: tuple[str, ...] = ()
    doc: str = ""


@dataclass(frozen=True)
class Layout:
    """One possible storage of a weight: its shape and, if fused, its named blocks.

    ``blocks`` is a tuple of rows; a weight split only along its last axis has one row.
    ``shape`` entries are SymPy expressions in ``units``/``input_dim``.
    """

    when: sp.Basic
    shape: tuple[sp.Expr, ...]
    blocks: tuple[tuple[str, ...], ...]

    def names(self) -> tuple[str, ...]:
        return tuple(n for row in self.blocks for n in row)


@dataclass(frozen=True)
class Weight:
    name: str
    argument: str  # <argument>_initializer / _regularizer / _constraint
    initializer: Any  # the Keras default for <argument>_initializer
    when: sp.Basic
    layouts: tuple[Layout, ...]
    block_initializers: tuple[tuple[str, sp.Basic, Any], ...] = ()
    doc: str = ""

    def layout(self, values) -> Layout | None:
        """The layout in force for these option values, or None if the weight is absent."""
        return layout_in_force(self, values)


@dataclass(frozen=True)
class Equation:
    name: str
    alternatives: tuple[tuple[sp.Basic, sp.Expr], ...]  # (when, rhs); the first that holds wins
    text: tuple[str, ...]

    def rhs(self, values) -> sp.Expr | None:
        for when, rhs in self.alternatives:
            if holds(when, values):
                return rhs
        return None


@dataclass(frozen=True)
class CellSpec:
    name: str
    class_name: str
    reference: str | None
    doc: str
    options: tuple[Option, ...]
    weights: tuple[Weight, ...]
    states: tuple[str, ...]
    output: str
    dropout: tuple[tuple[str, str], ...]  # (tensor, rate argument)
    full_dropout: str
    equations: tuple[Equation, ...]
    source: str
    sizes: tuple[tuple[str, sp.Expr], ...]  # every vector name -> its size

    def option(self, name: str) -> Option:
        return next(o for o in self.options if o.name == name)

    @property
    def bool_options(self) -> tuple[Option, ...]:
        return tuple(o for o in self.options if o.kind == "bool")

    @property
    def activation_options(self) -> tuple[Option, ...]:
        return tuple(o for o in self.options if o.kind == "activation")

    def defaults(self) -> dict[str, Any]:
        return {o.name: o.default for o in self.options}

    def size(self, name: str) -> sp.Expr:
        return dict(self.sizes)[name]


# -- YAML with positions -------------------------------------------------------------------


class _Positions(dict):
    """field path (tuple) -> (line, col), both 1-based."""

    def at(self, path: tuple) -> tuple[int, int]:
        while path and path not in self:
            path = path[:-1]
        return self.get(path, (0, 0))


def _shown(path: Path) -> str:
    """The path as the CLI shows it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def _read(path: Path) -> str:
    file = _shown(path)
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


def _compose(text: str, file: str) -> yaml.Node | None:
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


def _plain(node: yaml.Node, path: tuple, pos: _Positions, file: str, problems: list) -> Any:
    pos[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    allowed = _DEFAULT_TAGS.get(type(node))
    if (node.tag != allowed) if allowed else (node.tag not in _SCALAR_TAGS):
        line, col = node.start_mark.line + 1, node.start_mark.column + 1
        problems.append(
            Problem(
                file,
                line,
                col,
                _field(path),
                f"YAML tag '{node.tag}' is not allowed; a spec holds only plain "
                "mappings, lists, strings, numbers and booleans",
            )
        )
        return None
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        for key_node, value_node in node.value:
            key = _plain(key_node, (*path, "<key>"), pos, file, problems)
            if not isinstance(key, str):
                problems.append(
                    _at(file, pos, path, f"keys must be strings, not {type(key).__name__}")
                )
                continue
            if key in out:
                line = key_node.start_mark.line + 1
                problems.append(
                    Problem(
                        file,
                        line,
                        key_node.start_mark.column + 1,
                        _field((*path, key)),
                        "duplicate key",
                    )
                )
                continue
            pos[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = _plain(value_node, (*path, key), pos, file, problems)
            # a quoted scalar's text starts one column after its quote
            quote = isinstance(value_node, yaml.ScalarNode) and value_node.style in ("'", '"')
            pos[(*path, key, "<value>")] = (
                value_node.start_mark.line + 1,
                value_node.start_mark.column + 1 + quote,
            )
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_plain(item, (*path, i), pos, file, problems) for i, item in enumerate(node.value)]
    try:
        return _SCALARS.construct_object(node)
    except yaml.YAMLError as err:
        problems.append(_at(file, pos, path, f"invalid value: {err}"))
        return None


def _field(path: tuple) -> str:
    out = ""
    for part in path:
        if part in ("<key>", "<value>"):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _at(file: str, pos: _Positions, path: tuple, message: str, offset: int = 0) -> Problem:
    line, col = pos.at((*path, "<value>")) if (*path, "<value>") in pos else pos.at(path)
    return Problem(file, line, col + offset if col else 0, _field(path), message)


# -- schema --------------------------------------------------------------------------------


def schema() -> dict:
    return json.loads(resources.files("rnngen.schema").joinpath("spec.schema.json").read_text())


def _schema_problems(data: Any, file: str, pos: _Positions) -> list[Problem]:
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
                        _field((*path, key)),
                        f"unknown key '{key}'{suggest(key, allowed)}; "
                        f"valid keys: {one_of(allowed)}",
                    )
                )
        elif err.validator == "required":
            missing = err.message.split("'")[1]
            problems.append(_at(file, pos, path, f"missing required key '{missing}'"))
        elif err.validator in ("type", "oneOf"):
            expected = err.schema.get("type") or _describe_oneof(err.schema)
            problems.append(
                _at(file, pos, path, f"expected {expected}, got {_type_name(err.instance)}")
            )
        elif err.validator == "enum":
            problems.append(
                _at(
                    file,
                    pos,
                    path,
                    f"invalid value {err.instance!r}{suggest(err.instance, err.validator_value)}; "
                    f"valid: {one_of(err.validator_value)}",
                )
            )
        elif err.validator in ("minItems", "minProperties"):
            problems.append(_at(file, pos, path, "must not be empty"))
        elif err.validator == "maxItems":
            problems.append(
                _at(file, pos, path, f"has too many entries (at most {err.validator_value})")
            )
        else:
            problems.append(_at(file, pos, path, err.message))
    return problems


def _describe_oneof(schema_part: dict) -> str:
    kinds = []
    for option in schema_part.get("oneOf", []):
        kind = option.get("type", "value")
        kinds.append(" or ".join(kind) if isinstance(kind, list) else kind)
    return " or ".join(kinds) or "a valid value"


def _type_name(value: Any) -> str:
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


# -- semantic checks -----------------------------------------------------------------------


class _Builder:
    def __init__(self, data: dict, file: str, pos: _Positions):
        self.data, self.file, self.pos = data, file, pos
        self.problems: list[Problem] = []
        #: names already reported as invalid; equations may still mention them without new errors
        self.rejected: set[str] = set()

    def err(self, path: tuple, message: str, offset: int = 0) -> None:
        self.problems.append(_at(self.file, self.pos, path, message, offset))

    def identifier(self, name: str, path: tuple, what: str, key: bool = True) -> bool:
        where = (*path[:-1], path[-1]) if key else path
        if not name.isascii():
            try:
                check_text(name)
            except GrammarError as e:
                self.err(where, f"{what} '{name}': {e.message}")
                return False
        if not name.isidentifier():
            self.err(
                where,
                f"{what} '{name}' is not a valid identifier "
                "(letters, digits and _, not starting with a digit)",
            )
            return False
        if keyword.iskeyword(name) or keyword.issoftkeyword(name):
            self.err(where, f"{what} '{name}' is a Python keyword")
            return False
        if name.startswith("_"):
            self.err(where, f"{what} '{name}' must not start with '_'")
            return False
        return True

    def text(self, value: str, path: tuple) -> None:
        """Free text copied into generated docstrings: no quotes that end them, no escapes."""
        quotes = (
            ('"""', 'triple quotes (""")'),
            ("'''", "triple quotes (''')"),
            ("\\", "backslashes"),
        )
        for bad, why in quotes:
            if bad in value:
                line = value[: value.index(bad)].count("\n")
                self.err(
                    path,
                    f"{why} are not allowed: the text is copied into a Python docstring"
                    + (f" (line {line + 1} of the text)" if line else ""),
                )
                return
        for ch in value:
            control = (ord(ch) < 32 and ch not in "\n\t") or 0x7F <= ord(ch) < 0xA0
            if control or ch in "\u2028\u2029":
                self.err(path, f"control character U+{ord(ch):04X} is not allowed in text")
                return
        if value.rstrip().endswith('"'):
            self.err(path, "text must not end with '\"': it is copied into a Python docstring")

    def initializer(self, value, path: tuple) -> None:
        """An initializer is a Keras name or a {class_name, config} mapping of plain values."""
        if isinstance(value, str):
            if not value.isascii() or not value.isidentifier():
                self.err(
                    path,
                    f"initializer '{value}' is not a Keras initializer name "
                    "(letters, digits and _)",
                )
            return
        if set(value) - {"class_name", "config"} or not isinstance(value.get("class_name"), str):
            self.err(
                path,
                "an initializer mapping has keys 'class_name' (a name) "
                "and optional 'config' (a mapping)",
            )
            return
        self.initializer(value["class_name"], (*path, "class_name"))
        config = value.get("config") or {}
        if not isinstance(config, dict):
            self.err((*path, "config"), f"expected a mapping, got {_type_name(config)}")
            return
        for k, v in config.items():
            if not (k.isascii() and k.isidentifier()):
                self.err((*path, "config", k), f"config key '{k}' is not an identifier")
            elif not isinstance(v, bool | int | float | type(None)) and not (
                isinstance(v, str) and v.isascii() and v.isidentifier()
            ):
                self.err((*path, "config", k), "config values are numbers, booleans, null or names")

    def build(self) -> CellSpec | None:
        d = self.data
        name = d["name"]
        if self.identifier(name, ("name",), "name", key=False) and name != name.lower():
            self.err(
                ("name",), f"name '{name}' must be lower case (it names the module {name}_numpy.py)"
            )
        class_name = d["class_name"]
        if self.identifier(class_name, ("class_name",), "class_name", key=False) and (
            class_name in MODULE_NAMES
        ):
            self.err(
                ("class_name",),
                f"class_name '{class_name}' collides with a name the generated module defines",
            )
        self.text(d.get("doc", ""), ("doc",))
        reference = d.get("reference")
        if reference is not None and reference not in REFERENCES:
            alias = reference.replace("tf.keras.", "keras.")
            hint = (
                " (write it as 'keras.layers.X')"
                if alias in REFERENCES
                else suggest(reference, REFERENCES)
            )
            self.err(
                ("reference",),
                f"unknown Keras reference '{reference}'{hint}; valid: {one_of(REFERENCES)}",
            )

        options = self.options(d.get("options") or {})
        bool_names = frozenset(o.name for o in options if o.kind == "bool")
        states = self.states(d["states"])
        weights = self.weights(d["weights"], bool_names)
        taken: dict[str, str] = {}
        for kind, names in (
            ("option", [o.name for o in options]),
            ("state", list(states)),
            ("weight", [n for w in weights for n in _weight_names(w)]),
            ("equation", [k for k in d["step"] if k not in states]),
        ):
            for n in names:
                if n in taken and not (kind == "weight" and taken[n] == "weight"):
                    self.err(_name_path(kind, n), f"name '{n}' is already used by a {taken[n]}")
                taken.setdefault(n, kind)
        output = d.get("output", states[0] if states else "")
        if output not in d["step"]:
            self.err(
                ("output",), f"output '{output}' is not an equation; valid: {one_of(d['step'])}"
            )
        dropout = self.dropout(d.get("dropout") or {}, states)
        equations, sizes = self.equations(d["step"], options, weights, states, bool_names)
        out_size = sizes.get(output)
        if not self.problems and out_size is not None and out_size != symbol_size("units"):
            self.err(
                ("step", output),
                f"the output '{output}' has size {out_size}, but a layer's output has size "
                "units (as in Keras); make it a units-sized vector, or output a state",
            )
        if not self.problems:
            for eq_name, why in _unread_equations(equations, states, output, weights, bool_names):
                self.err(("step", eq_name), why)
        if self.problems:
            return None
        return CellSpec(
            name=name,
            class_name=d["class_name"],
            reference=reference,
            doc=d.get("doc", "").strip(),
            options=options,
            weights=weights,
            states=states,
            output=output,
            dropout=dropout,
            full_dropout=d.get("full_dropout", "drops"),
            equations=equations,
            source=self.file,
            sizes=tuple(sorted(sizes.items())),
        )

    def options(self, raw: dict) -> tuple[Option, ...]:
        out = []
        for name, value in raw.items():
            path = ("options", name)
            if not self.identifier(name, path, "option"):
                continue
            if name in RESERVED:
                self.err(path, f"option '{name}' collides with a name the generated code uses")
                continue
            spec = value if isinstance(value, dict) else {"default": value}
            default = spec["default"]
            if isinstance(default, bool):
                if spec.get("values"):
                    self.err((*path, "values"), "a boolean option takes no 'values'")
                self.text(spec.get("doc", ""), (*path, "doc"))
                out.append(Option(name, "bool", default, (), spec.get("doc", "")))
                continue
            values = tuple(spec.get("values") or functions.ACTIVATIONS)
            bad = [v for v in values if functions.resolve_activation(v) is None]
            for v in bad:
                self.err(
                    (*path, "values"),
                    f"unknown activation '{v}'{suggest(v, functions.ACTIVATIONS)}; "
                    f"valid: {one_of(functions.ACTIVATIONS)}",
                )
            canonical = functions.resolve_activation(default)
            if canonical is None or canonical not in {
                functions.resolve_activation(v) for v in values
            }:
                dpath = (*path, "default") if isinstance(value, dict) else path
                self.err(
                    dpath,
                    f"invalid default {default!r}: an option default is true/false or an "
                    f"activation{suggest(default, values)}; valid activations: {one_of(values)}",
                )
                canonical = "linear"  # keep the option so equations calling it parse
            self.text(spec.get("doc", ""), (*path, "doc"))
            out.append(
                Option(
                    name,
                    "activation",
                    canonical,
                    tuple(functions.resolve_activation(v) for v in values),
                    spec.get("doc", ""),
                )
            )
        return tuple(out)

    def states(self, raw: list) -> tuple[str, ...]:
        out = []
        for i, name in enumerate(raw):
            if not isinstance(name, str):
                self.err(("states", i), f"a state is a name, got {_type_name(name)}")
                continue
            if not self.identifier(name, ("states", i), "state", key=False):
                self.rejected.update((name, f"{name}_prev"))
            else:
                if name in out:
                    self.err(("states", i), f"duplicate state '{name}'")
                elif name in RESERVED:
                    self.err(
                        ("states", i),
                        f"state '{name}' collides with a name the generated code uses",
                    )
                    self.rejected.update((name, f"{name}_prev"))
                else:
                    out.append(name)
        return tuple(out)

    def shape(self, raw: list, path: tuple) -> tuple[sp.Expr, ...] | None:
        dims = []
        for i, dim in enumerate(raw):
            try:
                dims.append(parse_dimension(dim))
            except GrammarError as e:
                self.err((*path, i), e.message)
                return None
        return tuple(dims)

    def weights(self, raw: dict, bool_names: frozenset[str]) -> tuple[Weight, ...]:
        out = []
        for name, spec in raw.items():
            path = ("weights", name)
            if not self.identifier(name, path, "weight"):
                self.rejected.add(name)
                continue
            if name in RESERVED or name.endswith("_prev"):
                self.err(path, f"weight '{name}' collides with a name the generated code uses")
                self.rejected.add(name)
                continue
            when = self.condition(spec.get("when", True), (*path, "when"), bool_names)
            layouts_raw = spec.get("layouts")
            if layouts_raw is not None and ("shape" in spec or "blocks" in spec):
                self.err(path, "give either 'shape'/'blocks' or 'layouts', not both")
                continue
            if layouts_raw is None:
                if "shape" not in spec:
                    self.err(path, "missing required key 'shape' (or 'layouts')")
                    continue
                layouts_raw = [
                    {
                        "shape": spec["shape"],
                        **({"blocks": spec["blocks"]} if "blocks" in spec else {}),
                    }
                ]
                lpaths = [path]
            else:
                lpaths = [(*path, "layouts", i) for i in range(len(layouts_raw))]
            layouts = []
            for lraw, lpath in zip(layouts_raw, lpaths, strict=True):
                layout = self.layout(name, lraw, lpath, bool_names)
                if layout is not None:
                    layouts.append(layout)
                else:
                    self.rejected.add(name)
                    blocks = lraw.get("blocks") or []
                    for row in blocks:
                        row = [row] if isinstance(row, str) else row
                        self.rejected.update(b for b in row if isinstance(b, str))
            inits = []
            names = {n for lay in layouts for n in lay.names()}
            for block, bspec in (spec.get("block_initializers") or {}).items():
                bpath = (*path, "block_initializers", block)
                if block not in names:
                    self.err(
                        bpath,
                        f"'{block}' is not a block of weight '{name}'{suggest(block, names)}; "
                        f"valid: {one_of(names)}",
                    )
                    continue
                self.initializer(bspec["initializer"], (*bpath, "initializer"))
                inits.append(
                    (
                        block,
                        self.condition(bspec.get("when", True), (*bpath, "when"), bool_names),
                        bspec["initializer"],
                    )
                )
            self.initializer(spec["initializer"], (*path, "initializer"))
            argument = spec.get("argument", name)
            if "argument" in spec:
                self.identifier(argument, (*path, "argument"), "argument", key=False)
            self.text(spec.get("doc", ""), (*path, "doc"))
            out.append(
                Weight(
                    name,
                    argument,
                    spec["initializer"],
                    when,
                    tuple(layouts),
                    tuple(inits),
                    spec.get("doc", ""),
                )
            )
        return tuple(out)

    def layout(self, name: str, raw: dict, path: tuple, bool_names) -> Layout | None:
        when = self.condition(raw.get("when", True), (*path, "when"), bool_names)
        shape = self.shape(raw["shape"], (*path, "shape"))
        if shape is None:
            return None
        blocks_raw = raw.get("blocks")
        if blocks_raw is None:
            rows: tuple[tuple[str, ...], ...] = ((name,),)
        elif all(isinstance(b, str) for b in blocks_raw):
            rows = (tuple(blocks_raw),)
        elif all(isinstance(b, list) for b in blocks_raw):
            rows = tuple(tuple(r) for r in blocks_raw)
        else:
            self.err(
                (*path, "blocks"), "blocks are a list of names, or a list of rows (lists of names)"
            )
            return None
        ok = True
        for r, row in enumerate(rows):
            for c, block in enumerate(row):
                bpath = (*path, "blocks", r, c) if len(rows) > 1 else (*path, "blocks", c)
                if not isinstance(block, str) or not self.identifier(
                    block, bpath, "block", key=False
                ):
                    ok = False
                elif block != name and (block in RESERVED or block.endswith("_prev")):
                    self.err(bpath, f"block '{block}' collides with a name the generated code uses")
                    ok = False
        if not ok:
            return None
        if len({len(r) for r in rows}) != 1:
            self.err((*path, "blocks"), "every row of blocks must have the same number of blocks")
            return None
        layout = Layout(when, shape, rows)
        if len(rows) > 1 and (len(shape) != 2 or shape[0] != len(rows)):
            self.err(
                (*path, "shape"),
                f"{len(rows)} rows of blocks need shape [{len(rows)}, N * units], "
                f"got {list(map(str, shape))}",
            )
            return None
        parts = sp.simplify(shape[-1] / len(rows[0]))
        if blocks_raw is not None and not _is_size(parts):
            self.err(
                (*path, "blocks"),
                f"{len(rows[0])} blocks do not split the last axis {shape[-1]} evenly "
                "into units or input_dim",
            )
            return None
        return layout

    def condition(self, raw, path: tuple, bool_names) -> sp.Basic:
        try:
            return parse_condition(raw, bool_names)
        except GrammarError as e:
            self.err(path, e.message)
            return sp.true

    def dropout(self, raw: dict, states) -> tuple[tuple[str, str], ...]:
        valid = ["x", *(f"{s}_prev" for s in states)]
        out = []
        for tensor, rate in raw.items():
            if tensor not in valid:
                self.err(
                    ("dropout", tensor),
                    f"unknown tensor '{tensor}'{suggest(tensor, valid)}; "
                    f"dropout applies to {one_of(valid)}",
                )
            elif rate in dict((r, t) for t, r in out):
                other = dict((r, t) for t, r in out)[rate]
                self.err(
                    ("dropout", tensor),
                    f"'{rate}' already masks '{other}'; each rate argument masks one tensor",
                )
            else:
                out.append((tensor, rate))
        return tuple(out)

    def equations(self, raw: dict, options, weights, states, bool_names):
        """Parse every equation; check sizes, definitions and order for every option combination."""
        option_calls = {
            o.name: functions.function(o.name, o.default) for o in options if o.kind == "activation"
        }
        calls = {n: functions.function(n, n) for n in functions.TABLE} | option_calls
        weight_names = {n for w in weights for n in _weight_names(w)}
        matrices, vectors = set(), {}
        for w in weights:
            for lay in w.layouts:
                for b in layout_blocks(w.name, lay):
                    if b.vector:
                        vectors[b.name] = b.size
                    else:
                        matrices.add(b.name)
        eq_names = list(raw)
        for s in states:
            if s not in raw:
                self.err(("step",), f"state '{s}' is never updated; add an equation 'step.{s}'")
        sizes: dict[str, sp.Expr] = {"x": symbol_size("input_dim"), **vectors}
        for s in states:
            sizes[f"{s}_prev"] = symbol_size("units")
        variables = frozenset(sizes) | frozenset(eq_names) - set(matrices)
        if self.problems:  # already failing: names reported as invalid are not reported again
            variables |= frozenset(self.rejected)
        weights_ok = frozenset(matrices) | frozenset(vectors)
        if self.problems:
            weights_ok |= frozenset(self.rejected)
        vocab = Vocabulary(variables, weights_ok, calls, functions.UNSUPPORTED)

        parsed = []
        for name, value in raw.items():
            path = ("step", name)
            if not self.identifier(name, path, "equation"):
                continue
            if name in RESERVED or name.endswith("_prev") or name.startswith("d_"):
                self.err(
                    path, f"equation name '{name}' collides with a name the generated code uses"
                )
                continue
            alts = [{"eq": value}] if isinstance(value, str) else value
            alternatives, texts = [], []
            for i, alt in enumerate(alts):
                apath = path if isinstance(value, str) else (*path, i, "eq")
                when = self.condition(
                    alt.get("when", True),
                    (*path, i, "when") if not isinstance(value, str) else path,
                    bool_names,
                )
                try:
                    rhs = parse_equation(alt["eq"], vocab)
                except GrammarError as e:
                    self.err(apath, e.message, offset=e.offset)
                    continue
                alternatives.append((when, rhs))
                texts.append(alt["eq"])
            parsed.append(Equation(name, tuple(alternatives), tuple(texts)))
        if self.problems:
            return tuple(parsed), sizes

        # check every option combination: definitions, order, cycles and sizes
        from itertools import product

        combos = [
            dict(zip(bool_names, vals, strict=True))
            for vals in product([True, False], repeat=len(bool_names))
        ] or [{}]
        reported: set = set()
        for combo in combos:
            resolved, absent = resolve_weights(weights, combo)
            blocks = {b.name: b for w in resolved for b in w.blocks}
            known = dict(sizes)
            # equations already reported for this combination: a later equation reading one
            # is not blamed for it (its size is unknown, not cyclic)
            failed: set[str] = set()
            reads = {
                eq.name: {str(v) for v in rhs.free_symbols} & set(eq_names)
                for eq in parsed
                if (rhs := eq.rhs(combo)) is not None
            }
            for eq in parsed:
                rhs = eq.rhs(combo)
                if rhs is None:
                    failed.add(eq.name)
                    key = (eq.name, "none")
                    if key not in reported:
                        reported.add(key)
                        self.err(
                            ("step", eq.name),
                            f"no alternative applies when {_describe(combo)}; "
                            "add one without 'when'",
                        )
                    continue
                if self.order(eq, rhs, known, failed, reads, eq_names, states, reported):
                    failed.add(eq.name)
                    continue
                size = self.expr_size(
                    rhs, known, blocks, vectors, ("step", eq.name), reported, _describe(combo)
                )
                if size is not None:
                    known[eq.name] = size
                else:
                    failed.add(eq.name)
                for call in _constant_calls(rhs, weight_names & absent):
                    key = (eq.name, "constant call", call)
                    if key not in reported:
                        reported.add(key)
                        self.err(
                            ("step", eq.name),
                            f"'{call}' is a constant when {_describe(combo)}; "
                            "write its value, or apply the function to a tensor",
                        )
                if _vanishes(rhs, weight_names & absent):
                    key = (eq.name, "constant")
                    if key not in reported:
                        reported.add(key)
                        self.err(
                            ("step", eq.name),
                            f"'{eq.name}' is a constant when {_describe(combo)} (the "
                            "absent weights remove every term); it must depend on x, "
                            "a state or a present weight",
                        )
            for s in states:
                if s in known and known[s] != symbol_size("units"):
                    key = (s, "size")
                    if key not in reported:
                        reported.add(key)
                        self.err(
                            ("step", s),
                            f"state '{s}' has size {known[s]}, but states have size units",
                        )
            sizes.update({k: v for k, v in known.items() if k not in sizes})
        return tuple(parsed), sizes

    def order(self, eq, rhs, known, failed, reads, eq_names, states, reported) -> bool:
        """True when ``rhs`` reads an equation not yet computed.

        Reading a later equation, or one that reads this one (a cycle), is reported here;
        reading an earlier equation that failed for its own reason is not: that problem
        was reported where it is.
        """
        for sym in sorted(rhs.free_symbols, key=str):
            n = str(sym)
            if n not in eq_names or n in known:
                continue
            if n in failed and n != eq.name and not _reaches(reads, n, eq.name):
                return True
            key = (eq.name, n, "order")
            if key not in reported:
                reported.add(key)
                later = eq_names.index(n) > eq_names.index(eq.name)
                why = "is defined later; equations run in order" if later else "is part of a cycle"
                if n == eq.name:
                    why = (
                        f"refers to itself; use '{n}_prev' for the previous value"
                        if n in states
                        else "refers to itself"
                    )
                self.err(("step", eq.name), f"'{n}' {why}")
            return True
        return False

    def expr_size(self, expr, known, blocks, vectors, path, reported, when="always"):
        """Size of an elementwise expression (None after reporting a problem).

        ``blocks``: the present blocks under the layouts in force (:mod:`rnngen.resolve`);
        ``vectors``: the size of every vector block in any layout (absent ones read as zero).
        """

        def size(e):
            if e.is_Number:
                return None  # broadcasts
            if isinstance(e, sp.Symbol):
                n = str(e)
                block = blocks.get(n)
                if block is not None and not block.vector:
                    raise _SizeError(
                        f"'{n}' is a 2-D weight (shape {_dims(block.shape)}) when {when}: "
                        "it may only appear right of '@'"
                    )
                if block is not None:
                    return block.size
                return known.get(n, vectors.get(n))
            if isinstance(e, WeightProduct):
                a, w = e.args
                block = blocks.get(str(w))
                if block is None:  # absent: the product is zero
                    size(a)
                    return None
                if block.vector:
                    raise _SizeError(
                        f"'{_src(a)} @ {w}': {w} is a vector; the right side "
                        "of '@' must be a matrix weight"
                    )
                sa = size(a)
                if sa is not None and sa != block.rows:
                    raise _SizeError(
                        f"'{_src(a)} @ {w}': left side has size {sa}, but {w} has {block.rows} rows"
                    )
                return block.size
            sizes_ = [s for s in (size(a) for a in e.args) if s is not None]
            if len(set(sizes_)) > 1:
                raise _SizeError(
                    "elementwise operation on sizes "
                    f"{', '.join(map(str, dict.fromkeys(sizes_)))} in '{_src(e)}'"
                )
            return sizes_[0] if sizes_ else None

        try:
            return size(expr)
        except _SizeError as e:
            key = (path, str(e))
            if key not in reported:
                reported.add(key)
                self.err(path, str(e))
            return None


def _unread_equations(equations, states, output, weights, bool_names) -> list[tuple[str, str]]:
    """(equation, problem) for each equation nothing reads under any option combination.

    An equation is read when it is a state or the output, or a read equation uses it (with the
    absent weights' terms removed). One dead under only some combinations is fine: the
    derivation leaves it out of those variants.
    """
    from itertools import product

    names = [eq.name for eq in equations]
    live: set[str] = set()
    readers: dict[str, set[str]] = {n: set() for n in names}
    for vals in product([True, False], repeat=len(bool_names)):
        combo = dict(zip(sorted(bool_names), vals, strict=True))
        _, absent = resolve_weights(weights, combo)
        needed = set(states) | {output}
        for eq in reversed(equations):
            rhs = eq.rhs(combo)
            if rhs is None:
                continue
            used = {str(v) for v in _reduce(rhs, set(absent)).free_symbols} & set(names)
            for n in used:
                readers[n].add(eq.name)
            if eq.name in needed:
                live.add(eq.name)
                needed |= used
    out = []
    for n in names:
        if n in live:
            continue
        if readers[n]:
            users = ", ".join(f"'{r}'" for r in sorted(readers[n]))
            why = f"it is only used by {users}, which nothing reads"
        else:
            why = "it is not a state or the output and no later equation uses it"
        out.append((n, f"nothing reads '{n}': {why}; remove it or use it"))
    return out


def _reaches(reads: dict[str, set[str]], start: str, goal: str) -> bool:
    """True when equation ``start`` reads ``goal``, directly or through other equations."""
    seen, todo = set(), [start]
    while todo:
        n = todo.pop()
        if n == goal:
            return True
        if n not in seen:
            seen.add(n)
            todo.extend(reads.get(n, ()))
    return False


def _dims(shape) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


class _SizeError(Exception):
    pass


def _src(e) -> str:
    return str(e).replace("WeightProduct(", "matmul(")


def _reduce(rhs: sp.Expr, absent: set[str]) -> sp.Expr:
    """``rhs`` with the absent weights (and their products) set to zero."""
    zero = {sp.Symbol(n, real=True): 0 for n in absent}
    reduced = rhs.replace(
        lambda e: isinstance(e, WeightProduct) and str(e.args[1]) in absent, lambda e: sp.S.Zero
    )
    return reduced.subs(zero)


def _vanishes(rhs: sp.Expr, absent: set[str]) -> bool:
    """True when ``rhs`` has no free symbols once the absent weights are zero."""
    return not _reduce(rhs, absent).free_symbols


def _constant_calls(rhs: sp.Expr, absent: set[str]) -> list[str]:
    """Function calls whose argument is a constant once the absent weights are zero."""
    return sorted(
        str(c) for c in _reduce(rhs, absent).atoms(functions._Call) if not c.args[0].free_symbols
    )


def _describe(combo: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in combo.items()) or "always"


def symbol_size(name: str) -> sp.Expr:
    return sp.Symbol(name, real=True)


def _is_size(expr: sp.Expr) -> bool:
    syms = {sp.Symbol(n, real=True) for n in SIZE_NAMES}
    if not expr.free_symbols or not expr.free_symbols <= syms:
        return False
    coeff, rest = expr.as_coeff_Mul()
    return coeff.is_integer and coeff > 0 and rest in syms


def _weight_names(w: Weight) -> list[str]:
    return list(dict.fromkeys(n for lay in w.layouts for n in lay.names()))


def _name_path(kind: str, name: str) -> tuple:
    return {
        "option": ("options", name),
        "state": ("states",),
        "weight": ("weights",),
        "equation": ("step", name),
    }[kind]


# -- entry points --------------------------------------------------------------------------


def load(path: str | Path) -> CellSpec:
    """Read, validate and parse a spec file (raises :class:`SpecError`)."""
    path = Path(path)
    file = str(path)
    text = _read(path)
    return parse(text, file)


def parse(text: str, file: str = "<spec>") -> CellSpec:
    """Validate and parse spec text (raises :class:`SpecError`)."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        why = f"spec is {size} bytes; the limit is {MAX_BYTES}"
        raise SpecError([Problem(file, 0, 0, "", why)])
    node = _compose(text, file)
    if node is None:
        raise SpecError(
            [
                Problem(
                    file,
                    1,
                    0,
                    "",
                    "empty spec; expected a mapping with keys "
                    "name, class_name, weights, states, step",
                )
            ]
        )
    pos = _Positions()
    problems: list[Problem] = []
    data = _plain(node, (), pos, file, problems)
    if not isinstance(data, dict):
        raise SpecError(
            [
                Problem(
                    file,
                    *pos.at(()),
                    "",
                    f"the top level must be a mapping, got {_type_name(data)}",
                )
            ]
        )
    # a value already refused (a YAML tag) is not also reported as the wrong type
    refused = {(p.line, p.col) for p in problems}
    problems += [p for p in _schema_problems(data, file, pos) if (p.line, p.col) not in refused]
    if problems:
        raise SpecError(problems)
    builder = _Builder(data, file, pos)
    spec = builder.build()
    if builder.problems:
        raise SpecError(builder.problems)
    assert spec is not None
    return spec
