"""Spec loading: YAML text -> validated, frozen :class:`CellSpec`.

A spec is data. YAML is read with PyYAML's safe machinery, with its size, depth,
node count and aliases bounded before anything is built (:mod:`rnngen.spec_yaml`);
equations are parsed by :mod:`rnngen.grammar`. The checks are small functions over
plain data: names and text (:mod:`rnngen.spec_names`), declarations of options, states
and weights (:mod:`rnngen.spec_decls`), equations with their order and sizes for every
option combination (:mod:`rnngen.spec_equations`). Every mistake becomes a
:class:`~rnngen.errors.Problem` carrying file, line, column and field, and all
independent problems are reported together in one :class:`~rnngen.errors.SpecError`.
"""

from __future__ import annotations

from pathlib import Path

from .errors import Problem, SpecError, one_of, suggest
from .grammar import holds  # noqa: F401 - re-exported for callers of the spec API
from .spec_decls import block_names, read_dropout, read_options, read_states, read_weights
from .spec_equations import check_equations, symbol_size, unread_equations, unread_weights
from .spec_names import (
    MODULE_NAMES,
    RESERVED,
    Reporter,
    check_doc_text,
    name_path,
    valid_identifier,
)
from .spec_types import CellSpec, Equation, Layout, Option, Weight
from .spec_yaml import (
    MAX_BYTES,
    Positions,
    compose,
    plain,
    read,
    schema,
    schema_problems,
    type_name,
)

#: read a spec file's text, with its size and encoding checked (build.py and analyze use it)
_read = read

__all__ = [
    "RESERVED",
    "MODULE_NAMES",
    "REFERENCES",
    "CellSpec",
    "Equation",
    "Layout",
    "Option",
    "Weight",
    "load",
    "parse",
    "schema",
]

#: Keras layers a spec may name as its reference.
REFERENCES = ("keras.layers.SimpleRNN", "keras.layers.GRU", "keras.layers.LSTM")


OPTION_KINDS = {"bool", "activation"}


KNOWN_OPTIONS = (
    "activation",
    "recurrent_activation",
    "use_bias",
    "reset_after",
    "unit_forget_bias",
)


def build_spec(rep: Reporter) -> CellSpec | None:
    d = rep.data
    name = d["name"]
    if valid_identifier(rep, name, ("name",), "name", key=False) and name != name.lower():
        rep.err(
            ("name",), f"name '{name}' must be lower case (it names the module {name}_numpy.py)"
        )
    class_name = d["class_name"]
    if valid_identifier(rep, class_name, ("class_name",), "class_name", key=False) and (
        class_name in MODULE_NAMES
    ):
        rep.err(
            ("class_name",),
            f"class_name '{class_name}' collides with a name the generated module defines",
        )
    check_doc_text(rep, d.get("doc", ""), ("doc",))
    reference = d.get("reference")
    if reference is not None and reference not in REFERENCES:
        alias = reference.replace("tf.keras.", "keras.")
        hint = (
            " (write it as 'keras.layers.X')"
            if alias in REFERENCES
            else suggest(reference, REFERENCES)
        )
        rep.err(
            ("reference",),
            f"unknown Keras reference '{reference}'{hint}; valid: {one_of(REFERENCES)}",
        )

    options = read_options(rep, d.get("options") or {})
    bool_names = frozenset(o.name for o in options if o.kind == "bool")
    states = read_states(rep, d["states"])
    weights = read_weights(rep, d["weights"], bool_names)
    taken: dict[str, str] = {}
    for kind, names in (
        ("option", [o.name for o in options]),
        ("state", list(states)),
        ("weight", [n for w in weights for n in block_names(w)]),
        ("equation", [k for k in d["step"] if k not in states]),
    ):
        for n in names:
            if n in taken and not (kind == "weight" and taken[n] == "weight"):
                rep.err(name_path(kind, n), f"name '{n}' is already used by a {taken[n]}")
            taken.setdefault(n, kind)
    output = d.get("output", states[0] if states else "")
    if output not in d["step"]:
        rep.err(("output",), f"output '{output}' is not an equation; valid: {one_of(d['step'])}")
    dropout = read_dropout(rep, d.get("dropout") or {}, states)
    equations, sizes, by_combination = check_equations(
        rep, d["step"], options, weights, states, bool_names
    )
    out_sizes = {known[output] for known in by_combination.values() if output in known}
    for out_size in sorted(out_sizes - {symbol_size("units")}, key=str)[:1]:
        rep.err(
            ("step", output),
            f"the output '{output}' has size {out_size}, but a layer's output has size "
            "units (as in Keras); make it a units-sized vector, or output a state",
        )
    if not rep.problems:
        unread = unread_equations(equations, states, output, weights, bool_names)
        for eq_name, why in unread:
            rep.err(("step", eq_name), why)
        if not unread:  # a weight read only by an unread equation: blame the equation alone
            for w_name, why in unread_weights(equations, states, output, weights, bool_names):
                rep.err(("weights", w_name), why)
    if rep.problems:
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
        source=rep.file,
        sizes=tuple(sorted(sizes.items())),
        combination_sizes=tuple(
            (combo, tuple(sorted(known.items()))) for combo, known in by_combination.items()
        ),
    )


def load(path: str | Path) -> CellSpec:
    """Read, validate and parse a spec file (raises :class:`SpecError`)."""
    path = Path(path)
    file = str(path)
    text = read(path)
    return parse(text, file)


def parse(text: str, file: str = "<spec>") -> CellSpec:
    """Validate and parse spec text (raises :class:`SpecError`)."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        why = f"spec is {size} bytes; the limit is {MAX_BYTES}"
        raise SpecError([Problem(file, 0, 0, "", why)])
    node = compose(text, file)
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
    pos = Positions()
    problems: list[Problem] = []
    data = plain(node, (), pos, file, problems)
    if not isinstance(data, dict):
        raise SpecError(
            [
                Problem(
                    file,
                    *pos.at(()),
                    "",
                    f"the top level must be a mapping, got {type_name(data)}",
                )
            ]
        )
    # a value already refused (a YAML tag) is not also reported as the wrong type
    refused = {(p.line, p.col) for p in problems}
    problems += [p for p in schema_problems(data, file, pos) if (p.line, p.col) not in refused]
    if problems:
        raise SpecError(problems)
    rep = Reporter(data, file, pos)
    spec = build_spec(rep)
    if rep.problems:
        raise SpecError(rep.problems)
    assert spec is not None
    return spec
