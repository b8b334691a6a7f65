"""Names and free text in a spec: identifiers, docstring text, initializers, reserved names."""

from __future__ import annotations

import keyword
from dataclasses import dataclass, field

from . import functions
from .errors import Problem
from .grammar import GrammarError, check_text
from .spec_yaml import Positions, at, type_name

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


@dataclass
class Reporter:
    """Where a spec's problems are collected: the file, field positions and every problem so far.

    ``rejected``: names already reported as invalid; equations may still mention them without
    new errors.
    """

    data: dict
    file: str
    pos: Positions
    problems: list[Problem] = field(default_factory=list)
    rejected: set[str] = field(default_factory=set)

    def err(self, path: tuple, message: str, offset: int = 0) -> None:
        self.problems.append(at(self.file, self.pos, path, message, offset))


def valid_identifier(rep: Reporter, name: str, path: tuple, what: str, key: bool = True) -> bool:
    where = (*path[:-1], path[-1]) if key else path
    if not name.isascii():
        try:
            check_text(name)
        except GrammarError as e:
            rep.err(where, f"{what} '{name}': {e.message}")
            return False
    if not name.isidentifier():
        rep.err(
            where,
            f"{what} '{name}' is not a valid identifier "
            "(letters, digits and _, not starting with a digit)",
        )
        return False
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        rep.err(where, f"{what} '{name}' is a Python keyword")
        return False
    if name.startswith("_"):
        rep.err(where, f"{what} '{name}' must not start with '_'")
        return False
    return True


def check_doc_text(rep: Reporter, value: str, path: tuple) -> None:
    """Free text copied into generated docstrings: no quotes that end them, no escapes."""
    quotes = (
        ('"""', 'triple quotes (""")'),
        ("'''", "triple quotes (''')"),
        ("\\", "backslashes"),
    )
    for bad, why in quotes:
        if bad in value:
            line = value[: value.index(bad)].count("\n")
            rep.err(
                path,
                f"{why} are not allowed: the text is copied into a Python docstring"
                + (f" (line {line + 1} of the text)" if line else ""),
            )
            return
    for ch in value:
        control = (ord(ch) < 32 and ch not in "\n\t") or 0x7F <= ord(ch) < 0xA0
        if control or ch in "\u2028\u2029":
            rep.err(path, f"control character U+{ord(ch):04X} is not allowed in text")
            return
    if value.rstrip().endswith('"'):
        rep.err(path, "text must not end with '\"': it is copied into a Python docstring")


def check_initializer(rep: Reporter, value, path: tuple) -> None:
    """An initializer is a Keras name or a {class_name, config} mapping of plain values."""
    if isinstance(value, str):
        if not value.isascii() or not value.isidentifier():
            rep.err(
                path,
                f"initializer '{value}' is not a Keras initializer name (letters, digits and _)",
            )
        return
    if set(value) - {"class_name", "config"} or not isinstance(value.get("class_name"), str):
        rep.err(
            path,
            "an initializer mapping has keys 'class_name' (a name) "
            "and optional 'config' (a mapping)",
        )
        return
    check_initializer(rep, value["class_name"], (*path, "class_name"))
    config = value.get("config") or {}
    if not isinstance(config, dict):
        rep.err((*path, "config"), f"expected a mapping, got {type_name(config)}")
        return
    for k, v in config.items():
        if not (k.isascii() and k.isidentifier()):
            rep.err((*path, "config", k), f"config key '{k}' is not an identifier")
        elif not isinstance(v, bool | int | float | type(None)) and not (
            isinstance(v, str) and v.isascii() and v.isidentifier()
        ):
            rep.err((*path, "config", k), "config values are numbers, booleans, null or names")


def name_path(kind: str, name: str) -> tuple:
    return {
        "option": ("options", name),
        "state": ("states",),
        "weight": ("weights",),
        "equation": ("step", name),
    }[kind]
