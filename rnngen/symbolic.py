"""Symbolic derivation: one time step's forward program and its vector-Jacobian products.

For each *variant* of a spec (a combination of its boolean options, with or
without dropout masks) this module turns the step equations into a small
program over named vectors:

* weight products ``a @ w`` become symbols; products that share an operand and
  are blocks of one fused weight are grouped so they run as one matrix product,
  and groups whose operand depends only on ``x`` are *hoisted* out of the time
  loop (one GEMM over all steps), with the biases added next to them folded in;
* the backward program is reverse-mode differentiation of that program, one
  statement per forward statement, by ``sympy.diff``. Derivatives of table
  functions are written in terms of their outputs where possible (tanh' = 1 - y²),
  and a product's operand gets its gradient by the transpose rule
  (``d_a = d_p @ w.T``), so no derivative is ever 4-D.

The time loop is not unrolled here: the printers write it around one step. Everything
returned is plain frozen data holding SymPy expressions (:mod:`rnngen.ir`). The forward
program is built in :mod:`rnngen.forward`, its reverse in :mod:`rnngen.reverse`.
"""

from __future__ import annotations

from itertools import product as cartesian

import sympy as sp

from . import naming
from .forward import (
    fold_and_name,
    forward_order,
    forward_program,
    group_products,
    is_static,
    name_option_inputs,
    name_reductions,
    prev_names,
    read_equations,
    static_equations,
    static_expr,
    static_values,
    unnest_products,
    value_sizes,
)
from .grammar import WeightProduct, symbol
from .ir import (  # noqa: F401  (the IR is read through this module by the printers)
    Accumulate,
    AccumulateStatic,
    Assign,
    Derivation,
    Group,
    GroupProduct,
    OperandVJP,
    Reduce,
    StaticGrad,
    StaticVJP,
    StoreAdjoint,
    Variant,
)
from .resolve import resolve
from .reverse import operand_vjp, reverse, stored_values
from .spec import CellSpec

UNITS = symbol("units")
NAME_LIMIT = naming.LIMIT


# -- building ----------------------------------------------------------------------------------


def derive(spec: CellSpec) -> Derivation:
    """Derive every variant of ``spec``."""
    bools = _step_options(spec)
    dropouts = (False, True) if spec.dropout else (False,)
    variants = []
    # a twin of every variant whose option activations read their inputs in the backward,
    # for run-time values without an output-form derivative (gelu, callables)
    forms = (False, True) if spec.activation_options else (False,)
    for values in cartesian((True, False), repeat=len(bools)):
        options = dict(zip(bools, values, strict=True))
        for with_dropout in dropouts:
            for general in forms:
                variants.append(
                    _derive_variant(spec, options, with_dropout, len(variants), general)
                )
    return Derivation(spec, tuple(variants), bools)


def _step_options(spec: CellSpec) -> tuple[str, ...]:
    """Boolean options that change the step (weights present, layouts, equations).

    Options that only change initial values (``unit_forget_bias``) need no variant of their own.
    """
    used: set[str] = set()
    for w in spec.weights:
        used |= {str(s) for s in w.when.free_symbols}
        for lay in w.layouts:
            used |= {str(s) for s in lay.when.free_symbols}
    for eq in spec.equations:
        for when, _ in eq.alternatives:
            used |= {str(s) for s in when.free_symbols}
    return tuple(o.name for o in spec.bool_options if o.name in used)


def _substitute_absent(expr: sp.Expr, absent: set[str]) -> sp.Expr:
    """Absent weights are zero: drop their products and set absent vectors to 0."""
    reps = {wp: sp.Integer(0) for wp in expr.atoms(WeightProduct) if str(wp.args[1]) in absent}
    reps |= {s: sp.Integer(0) for s in expr.free_symbols if str(s) in absent}
    return expr.xreplace(reps) if reps else expr


def _derive_variant(
    spec: CellSpec, options: dict, with_dropout: bool, index: int, general: bool = False
) -> Variant:
    """Resolve, group, fold, order, differentiate: one variant, step by step."""
    res = resolve(spec, options)
    blocks = {b.name: b for b in res.blocks}
    all_weight_names = {n for w in spec.weights for lay in w.layouts for n in lay.names()}
    absent = set(res.absent)
    equations = [(name, _substitute_absent(rhs, absent)) for name, rhs in res.equations]
    taken = set(all_weight_names) | {n for n, _ in equations} | prev_names(spec) | {"x"}
    equations, intermediates = unnest_products(read_equations(spec, equations), taken)
    equations, reduced = name_reductions(equations, taken)
    if general:  # option activations differentiated from their (named) inputs
        option_names = {o.name for o in spec.activation_options}
        equations = name_option_inputs(equations, option_names, taken)
    dropout_tensors = set(dict(spec.dropout)) if with_dropout else set()

    vector_blocks = set(res.vectors)
    static_eqs = static_equations(spec, equations, vector_blocks)
    groups, product_symbol, masks = group_products(
        spec, options, equations, blocks, dropout_tensors, taken, vector_blocks | static_eqs
    )
    resolved, groups = fold_and_name(
        equations, groups, product_symbol, blocks, vector_blocks, taken
    )
    comments = dict.fromkeys(intermediates, "left side of a nested product")
    comments |= reduced
    forward, operand_nodes = forward_program(resolved, groups, comments)
    node_values = dict(resolved) | operand_nodes
    static = static_values(spec, resolved, groups, vector_blocks)
    prelude = [st for st in forward if is_static(st, static)]
    forward = [st for st in forward if not is_static(st, static)]
    sizes = value_sizes(spec, groups, resolved, blocks, res.sizes)
    backward, state_grads, x_grad, reductions, static_backward = reverse(
        spec, forward, node_values, groups, blocks, vector_blocks, prelude, sizes
    )
    stored = stored_values(
        spec, forward, backward, state_grads, x_grad, groups, masks, blocks, sizes, static
    )
    # inside the loop ``x`` is this step's input: the templates bind ``x_t = x[t]``
    forward, backward = _step_input(forward), _step_input(backward)
    state_grads = [(st, _at_step(e)) for st, e in state_grads]
    x_grad = None if x_grad is None else _at_step(x_grad)

    hoisted_grads = tuple(
        (g, str(var), operand_vjp(g.operand_expr, var, symbol(naming.hoisted_seed(g))))
        for g in groups
        if g.hoisted
        for var in sorted(g.operand_expr.free_symbols, key=str)
        if str(var) == "x" or str(var) in vector_blocks
    )
    return Variant(
        index=index,
        options=tuple(options.items()),
        dropout=with_dropout,
        weights=tuple((w.name, w.layout) for w in res.weights),
        blocks=tuple(blocks.values()),
        hoisted=tuple(g for g in groups if g.hoisted),
        forward=tuple(forward),
        stored=stored,
        backward=tuple(backward),
        state_grads=tuple(state_grads),
        x_grad=x_grad,
        hoisted_grads=hoisted_grads,
        reductions=tuple(reductions),
        groups=tuple(sorted((g for g in groups if not g.static), key=lambda g: not g.hoisted)),
        masks=tuple((str(m), gate, t) for (t, gate), m in sorted(masks.items())),
        general=general,
        prelude=tuple(prelude),
        static_groups=tuple(g for g in groups if g.static),
        static_backward=tuple(static_backward),
        static_values=tuple(n for n in forward_order(prelude) if n in static),
        broadcast=tuple(
            name
            for name, rhs in resolved
            if name in (*spec.states, spec.output) and static_expr(rhs, vector_blocks | static)
        ),
    )


X_T = {symbol("x"): symbol(naming.X_T)}


def _at_step(expr: sp.Expr) -> sp.Expr:
    return sp.sympify(expr).xreplace(X_T)


def _step_input(statements: list) -> list:
    """In-loop statements with ``x`` read as ``x_t`` (this step's rows of the input)."""
    out = []
    for st in statements:
        if isinstance(st, Assign | Accumulate | AccumulateStatic):
            st = type(st)(**{**st.__dict__, "expr": _at_step(st.expr)})
        elif isinstance(st, StoreAdjoint):
            st = StoreAdjoint(st.group, tuple(_at_step(e) for e in st.values))
        out.append(st)
    return out
