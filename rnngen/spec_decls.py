"""Declarations of a spec: options, states, weights with their layouts, conditions, dropout."""

from __future__ import annotations

import sympy as sp

from . import functions
from .errors import one_of, suggest
from .grammar import SIZE_NAMES, GrammarError, parse_condition, parse_dimension
from .spec_names import RESERVED, Reporter, check_doc_text, check_initializer, valid_identifier
from .spec_types import Layout, Option, Weight
from .spec_yaml import type_name


def read_options(rep: Reporter, raw: dict) -> tuple[Option, ...]:
    out = []
    for name, value in raw.items():
        path = ("options", name)
        if not valid_identifier(rep, name, path, "option"):
            continue
        if name in RESERVED:
            rep.err(path, f"option '{name}' collides with a name the generated code uses")
            continue
        spec = value if isinstance(value, dict) else {"default": value}
        default = spec["default"]
        if isinstance(default, bool):
            if spec.get("values"):
                rep.err((*path, "values"), "a boolean option takes no 'values'")
            check_doc_text(rep, spec.get("doc", ""), (*path, "doc"))
            out.append(Option(name, "bool", default, (), spec.get("doc", "")))
            continue
        values = tuple(spec.get("values") or functions.ACTIVATIONS)
        bad = [v for v in values if functions.resolve_activation(v) is None]
        for v in bad:
            if isinstance(v, str) and v in functions.ROW_WISE_TABLE:
                why = (
                    "it is row-wise; the NumPy and TF layers take it at run time for any "
                    "activation option, so list only elementwise activations here"
                )
                rep.err((*path, "values"), f"activation '{v}' cannot be listed: {why}")
                continue
            if isinstance(v, str) and v in functions.REFUSED:  # a Keras activation rnngen refuses
                why = functions.REFUSED[v]
                rep.err((*path, "values"), f"activation '{v}' is not supported: {why}")
                continue
            rep.err(
                (*path, "values"),
                f"unknown activation '{v}'{suggest(v, functions.ACTIVATIONS)}; "
                f"valid: {one_of(functions.ACTIVATIONS)}",
            )
        canonical = functions.resolve_activation(default)
        if canonical is None or canonical not in {functions.resolve_activation(v) for v in values}:
            dpath = (*path, "default") if isinstance(value, dict) else path
            rep.err(
                dpath,
                f"invalid default {default!r}: an option default is true/false or an "
                f"activation{suggest(default, values)}; valid activations: {one_of(values)}",
            )
            canonical = "linear"  # keep the option so equations calling it parse
        check_doc_text(rep, spec.get("doc", ""), (*path, "doc"))
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


def read_states(rep: Reporter, raw: list) -> tuple[str, ...]:
    out = []
    for i, name in enumerate(raw):
        if not isinstance(name, str):
            rep.err(("states", i), f"a state is a name, got {type_name(name)}")
            continue
        if not valid_identifier(rep, name, ("states", i), "state", key=False):
            rep.rejected.update((name, f"{name}_prev"))
        else:
            if name in out:
                rep.err(("states", i), f"duplicate state '{name}'")
            elif name in RESERVED:
                rep.err(
                    ("states", i),
                    f"state '{name}' collides with a name the generated code uses",
                )
                rep.rejected.update((name, f"{name}_prev"))
            else:
                out.append(name)
    return tuple(out)


def read_shape(rep: Reporter, raw: list, path: tuple) -> tuple[sp.Expr, ...] | None:
    dims = []
    for i, dim in enumerate(raw):
        try:
            dims.append(parse_dimension(dim))
        except GrammarError as e:
            rep.err((*path, i), e.message)
            return None
    return tuple(dims)


def read_weights(rep: Reporter, raw: dict, bool_names: frozenset[str]) -> tuple[Weight, ...]:
    out = []
    for name, spec in raw.items():
        path = ("weights", name)
        if not valid_identifier(rep, name, path, "weight"):
            rep.rejected.add(name)
            continue
        if name in RESERVED or name.endswith("_prev"):
            rep.err(path, f"weight '{name}' collides with a name the generated code uses")
            rep.rejected.add(name)
            continue
        when = read_condition(rep, spec.get("when", True), (*path, "when"), bool_names)
        layouts_raw = spec.get("layouts")
        if layouts_raw is not None and ("shape" in spec or "blocks" in spec):
            rep.err(path, "give either 'shape'/'blocks' or 'layouts', not both")
            continue
        if layouts_raw is None:
            if "shape" not in spec:
                rep.err(path, "missing required key 'shape' (or 'layouts')")
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
            layout = read_layout(rep, name, lraw, lpath, bool_names)
            if layout is not None:
                layouts.append(layout)
            else:
                rep.rejected.add(name)
                blocks = lraw.get("blocks") or []
                for row in blocks:
                    row = [row] if isinstance(row, str) else row
                    rep.rejected.update(b for b in row if isinstance(b, str))
        inits = []
        names = {n for lay in layouts for n in lay.names()}
        for block, bspec in (spec.get("block_initializers") or {}).items():
            bpath = (*path, "block_initializers", block)
            if block not in names:
                rep.err(
                    bpath,
                    f"'{block}' is not a block of weight '{name}'{suggest(block, names)}; "
                    f"valid: {one_of(names)}",
                )
                continue
            check_initializer(rep, bspec["initializer"], (*bpath, "initializer"))
            inits.append(
                (
                    block,
                    read_condition(rep, bspec.get("when", True), (*bpath, "when"), bool_names),
                    bspec["initializer"],
                )
            )
        check_initializer(rep, spec["initializer"], (*path, "initializer"))
        argument = spec.get("argument", name)
        if "argument" in spec:
            valid_identifier(rep, argument, (*path, "argument"), "argument", key=False)
        check_doc_text(rep, spec.get("doc", ""), (*path, "doc"))
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


def read_layout(rep: Reporter, name: str, raw: dict, path: tuple, bool_names) -> Layout | None:
    when = read_condition(rep, raw.get("when", True), (*path, "when"), bool_names)
    shape = read_shape(rep, raw["shape"], (*path, "shape"))
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
        rep.err((*path, "blocks"), "blocks are a list of names, or a list of rows (lists of names)")
        return None
    ok = True
    for r, row in enumerate(rows):
        for c, block in enumerate(row):
            bpath = (*path, "blocks", r, c) if len(rows) > 1 else (*path, "blocks", c)
            if not isinstance(block, str) or not valid_identifier(
                rep, block, bpath, "block", key=False
            ):
                ok = False
            elif block != name and (block in RESERVED or block.endswith("_prev")):
                rep.err(bpath, f"block '{block}' collides with a name the generated code uses")
                ok = False
    if not ok:
        return None
    if len({len(r) for r in rows}) != 1:
        rep.err((*path, "blocks"), "every row of blocks must have the same number of blocks")
        return None
    layout = Layout(when, shape, rows)
    if len(rows) > 1 and (len(shape) != 2 or shape[0] != len(rows)):
        rep.err(
            (*path, "shape"),
            f"{len(rows)} rows of blocks need shape [{len(rows)}, N * units], "
            f"got {list(map(str, shape))}",
        )
        return None
    parts = sp.simplify(shape[-1] / len(rows[0]))
    if blocks_raw is not None and not is_size(parts):
        rep.err(
            (*path, "blocks"),
            f"{len(rows[0])} blocks do not split the last axis {shape[-1]} evenly "
            "into units or input_dim",
        )
        return None
    return layout


def read_condition(rep: Reporter, raw, path: tuple, bool_names) -> sp.Basic:
    try:
        return parse_condition(raw, bool_names)
    except GrammarError as e:
        rep.err(path, e.message)
        return sp.true


def read_dropout(rep: Reporter, raw: dict, states) -> tuple[tuple[str, str], ...]:
    valid = ["x", *(f"{s}_prev" for s in states)]
    out = []
    for tensor, rate in raw.items():
        if tensor not in valid:
            rep.err(
                ("dropout", tensor),
                f"unknown tensor '{tensor}'{suggest(tensor, valid)}; "
                f"dropout applies to {one_of(valid)}",
            )
        elif rate in dict((r, t) for t, r in out):
            other = dict((r, t) for t, r in out)[rate]
            rep.err(
                ("dropout", tensor),
                f"'{rate}' already masks '{other}'; each rate argument masks one tensor",
            )
        else:
            out.append((tensor, rate))
    return tuple(out)


def is_size(expr: sp.Expr) -> bool:
    syms = {sp.Symbol(n, real=True) for n in SIZE_NAMES}
    if not expr.free_symbols or not expr.free_symbols <= syms:
        return False
    coeff, rest = expr.as_coeff_Mul()
    return coeff.is_integer and coeff > 0 and rest in syms


def block_names(w: Weight) -> list[str]:
    return list(dict.fromkeys(n for lay in w.layouts for n in lay.names()))
