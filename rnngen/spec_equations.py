"""Equations of a spec: parsing, definition order, cycles and sizes, for every option combination.

Sizes come from the layout in force (:func:`rnngen.resolve.resolve_weights`); an equation
that fails is reported where it is, and equations that read it are not blamed for it.
"""

from __future__ import annotations

import re
from itertools import product

import sympy as sp

from . import functions
from .grammar import GrammarError, RowReduction, Vocabulary, WeightProduct, parse_equation
from .resolve import layout_blocks, resolve_weights
from .spec_decls import block_names, read_condition
from .spec_names import RESERVED, Reporter, valid_identifier
from .spec_types import Equation


def check_equations(rep: Reporter, raw: dict, options, weights, states, bool_names):
    """Parse every equation; check sizes, definitions and order for every option combination.

    Returns (equations, sizes, by_combination): the parsed :class:`Equation` s in order, the
    size of every vector name (``x``, ``<state>_prev``, vector blocks, equations) in
    units/input_dim (the first combination that defines it), and for each combination of
    boolean options (sorted ``(name, value)`` pairs) the sizes in force under it.
    """
    matrices, vectors = _block_kinds(weights)
    for s in states:
        if s not in raw:
            rep.err(("step",), f"state '{s}' is never updated; add an equation 'step.{s}'")
    sizes: dict[str, sp.Expr] = {"x": symbol_size("input_dim"), **vectors}
    sizes.update({f"{s}_prev": symbol_size("units") for s in states})
    vocab = _vocabulary(rep, options, matrices, vectors, frozenset(sizes) | frozenset(raw))
    parsed = tuple(parse_step(rep, raw, vocab, bool_names))
    if rep.problems:
        return parsed, sizes, {}
    combos = [
        dict(zip(bool_names, vals, strict=True))
        for vals in product([True, False], repeat=len(bool_names))
    ] or [{}]
    reported: set = set()
    by_combination = {}
    for combo in combos:
        known = check_combination(rep, parsed, combo, weights, sizes, vectors, states, reported)
        by_combination[tuple(sorted(combo.items()))] = known
    for known in by_combination.values():
        sizes.update({k: v for k, v in known.items() if k not in sizes})
    return parsed, sizes, by_combination


def _block_kinds(weights) -> tuple[set[str], dict[str, sp.Expr]]:
    """(matrix block names, vector block name -> size), over every layout of every weight."""
    matrices: set[str] = set()
    vectors: dict[str, sp.Expr] = {}
    for w in weights:
        for lay in w.layouts:
            for b in layout_blocks(w.name, lay):
                if b.vector:
                    vectors[b.name] = b.size
                else:
                    matrices.add(b.name)
    return matrices, vectors


def _vocabulary(rep: Reporter, options, matrices, vectors, names) -> Vocabulary:
    """What names mean in equations: vectors (``names`` less matrices), weights, functions."""
    option_calls = {
        o.name: functions.function(o.name, o.default) for o in options if o.kind == "activation"
    }
    calls = {n: functions.function(n, n) for n in functions.TABLE} | option_calls
    calls |= {n: functions.row_function(n) for n in functions.ROW_WISE_TABLE}
    variables = frozenset(names) - frozenset(matrices) | frozenset(vectors)
    weights_ok = frozenset(matrices) | frozenset(vectors)
    if rep.problems:  # already failing: names reported as invalid are not reported again
        variables |= frozenset(rep.rejected)
        weights_ok |= frozenset(rep.rejected)
    return Vocabulary(variables, weights_ok, calls, functions.UNSUPPORTED)


def parse_step(rep: Reporter, raw: dict, vocab: Vocabulary, bool_names) -> list[Equation]:
    """Each ``step`` entry as an :class:`Equation`: its alternatives, parsed, with conditions."""
    parsed = []
    for name, value in raw.items():
        path = ("step", name)
        if not valid_identifier(rep, name, path, "equation"):
            continue
        if name in RESERVED or name.endswith("_prev") or name.startswith("d_"):
            rep.err(path, f"equation name '{name}' collides with a name the generated code uses")
            continue
        single = isinstance(value, str)
        alternatives, texts = [], []
        for i, alt in enumerate([{"eq": value}] if single else value):
            when_path = path if single else (*path, i, "when")
            when = read_condition(rep, alt.get("when", True), when_path, bool_names)
            try:
                rhs = parse_equation(alt["eq"], vocab)
            except GrammarError as e:
                rep.err(path if single else (*path, i, "eq"), e.message, offset=e.offset)
                continue
            alternatives.append((when, rhs))
            texts.append(alt["eq"])
        parsed.append(Equation(name, tuple(alternatives), tuple(texts)))
    return parsed


def check_combination(rep: Reporter, parsed, combo, weights, sizes, vectors, states, reported):
    """Check the equations under one combination of options; returns every size it knows.

    Definitions, order and cycles, sizes under the layouts in force, constants left by absent
    weights, and state sizes. A problem already reported under another combination (a key in
    ``reported``) is not reported again. An equation that fails is reported where it is;
    equations that read it are not blamed for it (its size is unknown, not cyclic).
    """
    resolved, absent = resolve_weights(weights, combo)
    blocks = {b.name: b for w in resolved for b in w.blocks}
    absent_blocks = {n for w in weights for n in block_names(w)} & absent
    eq_names = [eq.name for eq in parsed]
    when = _describe(combo)

    def once(key, path, message):
        if key not in reported:
            reported.add(key)
            rep.err(path, message)

    known = dict(sizes)
    failed: set[str] = set()
    reads = {
        eq.name: {str(v) for v in rhs.free_symbols} & set(eq_names)
        for eq in parsed
        if (rhs := eq.rhs(combo)) is not None
    }
    for eq in parsed:
        path = ("step", eq.name)
        rhs = eq.rhs(combo)
        if rhs is None:
            failed.add(eq.name)
            once(
                (eq.name, "none"),
                path,
                f"no alternative applies when {when}; add one without 'when'",
            )
            continue
        if check_order(rep, eq, rhs, known, failed, reads, eq_names, states, reported):
            failed.add(eq.name)
            continue
        size = expr_size(rep, rhs, known, blocks, vectors, path, reported, when)
        if size is None:
            failed.add(eq.name)
        else:
            known[eq.name] = size
        for call in _constant_calls(rhs, absent_blocks):
            once(
                (eq.name, "constant call", call),
                path,
                f"'{call}' is a constant when {when}; "
                "write its value, or apply the function to a tensor",
            )
        if _vanishes(rhs, absent_blocks):
            once(
                (eq.name, "constant"),
                path,
                f"'{eq.name}' is a constant when {when} (the absent weights remove every "
                "term); it must depend on x, a state or a present weight",
            )
    for s in states:
        if s in known and known[s] != symbol_size("units"):
            once(
                (s, "size"),
                ("step", s),
                f"state '{s}' has size {known[s]}, but states have size units",
            )
    return known


def check_order(rep: Reporter, eq, rhs, known, failed, reads, eq_names, states, reported) -> bool:
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
            rep.err(("step", eq.name), f"'{n}' {why}")
        return True
    return False


def expr_size(rep: Reporter, expr, known, blocks, vectors, path, reported, when="always"):
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
        if isinstance(e, RowReduction):  # the result has the size of its argument
            sa = size(e.args[0])
            if sa is None and not e.args[0].free_symbols:
                raise _SizeError(
                    f"'{e.call_name}({_src(e.args[0])})' reduces a constant: "
                    "its argument must be a vector"
                )
            return sa
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
            rep.err(path, str(e))
        return None


def _liveness(equations, states, output, weights, bool_names):
    """Over every option combination: the live equations, who reads each equation, and every
    name (weights included) that a live equation reads (absent weights' terms removed)."""
    names = [eq.name for eq in equations]
    live: set[str] = set()
    read: set[str] = set()
    readers: dict[str, set[str]] = {n: set() for n in names}
    for vals in product([True, False], repeat=len(bool_names)):
        combo = dict(zip(sorted(bool_names), vals, strict=True))
        _, absent = resolve_weights(weights, combo)
        needed = set(states) | {output}
        for eq in reversed(equations):
            rhs = eq.rhs(combo)
            if rhs is None:
                continue
            reduced = _reduce(rhs, set(absent))
            used = {str(v) for v in reduced.free_symbols}
            used |= {str(wp.args[1]) for wp in reduced.atoms(WeightProduct)}
            for n in used & set(names):
                readers[n].add(eq.name)
            if eq.name in needed:
                live.add(eq.name)
                needed |= used & set(names)
                read |= used
    return live, readers, read


def unread_equations(equations, states, output, weights, bool_names) -> list[tuple[str, str]]:
    """(equation, problem) for each equation nothing reads under any option combination.

    An equation is read when it is a state or the output, or a read equation uses it (with the
    absent weights' terms removed). One dead under only some combinations is fine: the
    derivation leaves it out of those variants.
    """
    live, readers, _ = _liveness(equations, states, output, weights, bool_names)
    out = []
    for n in (eq.name for eq in equations):
        if n in live:
            continue
        written = [
            eq.name
            for eq in equations
            if eq.name != n and any(re.search(rf"\b{re.escape(n)}\b", s) for s in eq.text)
        ]
        if readers[n]:
            users = ", ".join(f"'{r}'" for r in sorted(readers[n]))
            why = f"it is only used by {users}, which nothing reads"
        elif written:
            where = ", ".join(f"'{w}'" for w in written)
            why = f"it cancels out of {where}, where it is written (as in 'a + {n} - {n}')"
        else:
            why = "it is not a state or the output and no later equation uses it"
        out.append((n, f"nothing reads '{n}': {why}; remove it or use it"))
    return out


def unread_weights(equations, states, output, weights, bool_names) -> list[tuple[str, str]]:
    """(weight, problem) for each declared weight that no read equation uses under any option
    combination: its gradient would always be zero, so it is almost surely a mistake."""
    _, _, read = _liveness(equations, states, output, weights, bool_names)
    return [
        (
            w.name,
            f"no equation reads weight '{w.name}'"
            + (f" (nor its blocks {', '.join(repr(b) for b in blocks)})" if blocks else "")
            + "; remove it or use it in the step",
        )
        for w in weights
        if not ({w.name} | set(blocks := [b for b in block_names(w) if b != w.name])) & read
    ]


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
        str(c)
        for c in _reduce(rhs, absent).atoms(sp.Function)
        if functions.is_call(c) and not c.args[0].free_symbols
    )


def _describe(combo: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in combo.items()) or "always"


def symbol_size(name: str) -> sp.Expr:
    return sp.Symbol(name, real=True)
