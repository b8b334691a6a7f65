"""Reverse mode through one step's forward program: the per-step vector-Jacobian products.

One backward statement per forward statement, by ``sympy.diff``. Derivatives of table
functions are written in terms of their outputs where possible (tanh' = 1 - y²), and a
product's operand gets its gradient by the transpose rule (``d_a = d_p @ w.T``), so no
derivative is ever 4-D. Values of the weights alone collect their gradients summed over the
batch in the loop, and one reverse pass after the loop takes them to the weights.
"""

from __future__ import annotations

from collections import defaultdict

import sympy as sp

from . import functions, naming
from .forward import forward_order, prev_names
from .grammar import RowReduction, symbol
from .ir import (
    Accumulate,
    AccumulateStatic,
    Assign,
    Group,
    OperandVJP,
    Reduce,
    StaticGrad,
    StaticVJP,
    StoreAdjoint,
)


def stored_values(
    spec, forward, backward, state_grads, x_grad, groups, masks, blocks, sizes, static
):
    """The per-step forward values the backward reads that are not otherwise at hand."""
    available = prev_names(spec) | set(spec.states) | {"x"} | {str(m) for m in masks.values()}
    available |= set(blocks) | static
    exprs: list[sp.Expr] = []
    for stmt in backward:
        if isinstance(stmt, Assign | Accumulate | AccumulateStatic):
            exprs.append(stmt.expr)
        elif isinstance(stmt, StoreAdjoint):
            exprs.extend(stmt.values)
    exprs += [e for _, e in state_grads]
    if x_grad is not None:  # the per-step input gradient reads forward values too
        exprs.append(x_grad)
    needed = {str(s) for e in exprs for s in e.free_symbols}
    # an in-loop operand that is not a state is needed for its weight gradient after the loop
    needed |= {
        g.operand for g in groups if not (g.hoisted or g.static) and g.operand not in available
    }
    hoisted_products = [p for g in groups if g.hoisted for p, _ in g.products]
    return tuple(
        (n, sizes[n])
        for n in hoisted_products + forward_order(forward)
        if n in needed and n not in available
    )


def reverse(spec, forward, node_values, groups, blocks, vector_blocks, prelude=(), sizes=None):
    """Reverse-mode differentiation of one step's forward program.

    Values of the ``prelude`` (the same at every step) collect their adjoints summed over the
    batch in the loop (:class:`AccumulateStatic`); one reverse pass over the prelude after the
    loop then carries them to the weights (``static_backward``).
    """
    adj: dict[str, list[sp.Expr]] = defaultdict(list)
    states = set(spec.states)
    for s in spec.states:
        adj[s].append(symbol(naming.adjoint(s)))
    if spec.output not in states:
        adj[spec.output].append(symbol(naming.adjoint(spec.output)))
    forward_values = {name: expr for name, expr in node_values.items()}
    backward: list = []
    diff_vars = set(node_values) | prev_names(spec) | {"x"} | vector_blocks
    diff_vars |= {p for g in groups for p, _ in g.products}
    reverse_subs = _reverse_substitutions(forward_values)
    group_values: dict[str, tuple] = {}
    vjp_names: set[str] = set()

    def reverse_assign(stmt: Assign, out: list) -> None:
        terms = adj.pop(stmt.target, [])
        if not terms:
            return
        d_y = symbol(naming.adjoint(stmt.target))
        total = sp.Add(*terms)
        if isinstance(total, sp.Symbol):
            d_y = total
        elif total != d_y:
            out.append(Assign(naming.adjoint(stmt.target), total, gradient_of=stmt.target))
        seed, arg, pre = d_y, stmt.expr, None
        if isinstance(arg, RowReduction):
            # y = sum(a) broadcast: d_a = sum(d_y) broadcast (the mean: mean(d_y))
            seed, arg = arg.func(d_y), arg.args[0]
        elif isinstance(arg, functions._RowCall) or functions.is_option_call(arg):
            # a function chosen at run time, maybe across the row (softmax): its
            # vector-Jacobian product, read from its output (or its input, in the input-form
            # variant), then the linear part
            if isinstance(arg, functions._RowCall):  # a row-wise table function
                reads_output = functions.ROW_WISE_TABLE[arg.call_name].reads_output
                at = symbol(stmt.target) if reads_output else arg.args[0]
                vjp = functions.row_vjp_function(arg.call_name)(at, d_y)
            else:
                at = arg.args[0] if arg.from_input else symbol(stmt.target)
                vjp = functions.vjp_function(arg.call_name)(at, d_y)
            if isinstance(arg.args[0], sp.Symbol):
                if str(arg.args[0]) in diff_vars:
                    adj[str(arg.args[0])].append(vjp)
                return
            pre = symbol(naming.pre_adjoint(stmt.target))
            through = f"through {arg.call_name}"
            out.append(Assign(str(pre), vjp, through, gradient_of=stmt.target, pre=True))
            seed, arg = pre, arg.args[0]
        elif isinstance(arg, functions._Call) and not isinstance(arg.args[0], sp.Symbol):
            # y = f(pre): d_pre = d_y * f'(.) once, then the linear part
            pre = symbol(naming.pre_adjoint(stmt.target))
            grad = _simplify(arg.fdiff(1).xreplace({arg: symbol(stmt.target)}), reverse_subs)
            through = f"through {type(arg).__name__}"
            out.append(Assign(str(pre), d_y * grad, through, gradient_of=stmt.target, pre=True))
            seed, arg = pre, arg.args[0]
        for v in sorted(arg.free_symbols, key=str):
            if str(v) not in diff_vars:
                continue
            partial = _simplify(sp.diff(arg, v), reverse_subs)
            if partial != 0:
                adj[str(v)].append(seed * partial)

    for stmt in reversed(forward):
        if isinstance(stmt, Assign):
            reverse_assign(stmt, backward)
        else:  # Product
            g = stmt.group
            values = tuple(sp.Add(*adj.pop(p, [])) for p, _ in g.products)
            group_values[g.name] = values
            backward.append(StoreAdjoint(g, values))
            target = naming.fresh(naming.operand_adjoint(g.operand, g.weight), vjp_names)
            backward.append(OperandVJP(target, g))
            adj[g.operand].append(symbol(target))

    # hoisted groups: their products' adjoints are stored too
    for g in groups:
        if g.hoisted:
            values = tuple(sp.Add(*adj.pop(p, [])) for p, _ in g.products)
            group_values[g.name] = values
            backward.append(StoreAdjoint(g, values))

    # share an adjoint buffer between groups whose stored values are identical
    # (the owner is the group stored first, so reads in the same step follow its write)
    # The per-step value is named after what it holds: the stored value itself when that is
    # one named gradient (``d_h_pre``), else ``d_<group>``; the buffer is ``<that>_seq``.
    first_with: dict = {}
    renamed, owners, buffers, bound = {}, set(), set(), set()
    store_order = [s.group for s in backward if isinstance(s, StoreAdjoint)]
    for g in store_order:
        key = (group_values[g.name], g.start, g.stop)
        if key not in first_with:
            values = group_values[g.name]
            name = naming.adjoint(g.name)
            if (
                len(values) == 1
                and isinstance(values[0], sp.Symbol)
                and str(values[0]) not in buffers
            ):
                name = str(values[0])
                bound.add(name)
            buffers.add(name)
            first_with[key] = name
            owners.add(g.name)
        renamed[g.name] = first_with[key]
    backward = [_with_adjoint(s, renamed, owners, bound) for s in backward]
    groups[:] = [g if g.static else _regroup(g, renamed, owners, bound) for g in groups]

    # vector weights: reduce from a stored adjoint buffer when equal, else accumulate per step
    reductions = []
    for name in sorted(vector_blocks):
        terms = adj.pop(name, [])
        if not terms:
            continue
        total = sp.Add(*terms)
        for g in (g for g in groups if not g.static):
            hit = next(
                (
                    p
                    for (p, _), v in zip(g.products, group_values[g.name], strict=True)
                    if v == total
                ),
                None,
            )
            if hit is not None:
                reductions.append(Reduce(blocks[name], g, hit))
                break
        else:
            backward.append(Accumulate(blocks[name], total))
    for g in groups:
        for p, folded in g.folded:
            for b in folded:
                reductions.append(Reduce(b, g, p))

    # values that do not change over time: sum their per-step adjoints over the batch in the
    # loop, then reverse the prelude once after it (products: an outer product for the weight,
    # the transpose rule for the left side), down to the vector weights
    static_backward: list = []
    for name in forward_order(prelude):
        terms = adj.pop(name, [])
        if terms:
            backward.append(AccumulateStatic(name, sizes[name], sp.Add(*terms)))
            adj[name] = [symbol(naming.adjoint(name))]
    for stmt in reversed(prelude):
        if isinstance(stmt, Assign):
            reverse_assign(stmt, static_backward)
            continue
        g = stmt.group
        for p, b in g.products:
            terms = adj.pop(p, [])
            if not terms:
                continue
            total = sp.Add(*terms)
            if total != symbol(naming.adjoint(p)):
                static_backward.append(Assign(naming.adjoint(p), total, gradient_of=p))
            target = naming.fresh(naming.operand_adjoint(g.operand, b.name), vjp_names)
            static_backward.append(StaticVJP(p, b, g, target))
            adj[g.operand].append(symbol(target))
    for name in sorted(vector_blocks):
        terms = adj.pop(name, [])
        if terms:
            static_backward.append(StaticGrad(blocks[name], sp.Add(*terms)))

    state_grads = [(s, sp.Add(*adj.pop(naming.prev(s), []))) for s in spec.states]
    # the templates assign d_<state> = <its d_<state>_prev expression> state by state: one that
    # reads the d_<state> of a state assigned before it (``c: m_prev`` passes d_c straight on)
    # is computed into a temporary first
    for i, (_, e) in enumerate(state_grads):
        earlier = {naming.adjoint(o) for o, _ in state_grads[:i]}
        if earlier & {str(v) for v in e.free_symbols}:
            for j, (o, eo) in enumerate(state_grads[i:], start=i):
                if eo != 0:
                    prev = naming.prev(o)
                    backward.append(Assign(naming.adjoint(prev), eo, gradient_of=prev))
                    state_grads[j] = (o, symbol(naming.adjoint(naming.prev(o))))
            break
    x_terms = adj.pop("x", [])
    x_grad = sp.Add(*x_terms) if x_terms else None
    _vjps_into_states(backward, state_grads, x_grad)
    return backward, state_grads, x_grad, reductions, static_backward


def _statement_reads(stmt) -> set[str]:
    exprs = []
    if isinstance(stmt, Assign | Accumulate | AccumulateStatic):
        exprs = [stmt.expr]
    elif isinstance(stmt, StoreAdjoint):
        exprs = list(stmt.values)
    elif isinstance(stmt, OperandVJP):
        return {stmt.group.adjoint}
    return {str(s) for e in exprs for s in sp.sympify(e).free_symbols}


def _vjps_into_states(backward: list, state_grads: list, x_grad) -> None:
    """Where a state's gradient is exactly one transpose-rule product (``d_h =
    d_h_prev_via_recurrent_kernel``), the product is written to ``d_<state>`` directly, as
    min-char-rnn's ``dhnext = np.dot(Whh.T, dhraw)``, unless something after it in the step
    still reads the old ``d_<state>``. (Backends may write stored gradients and per-step sums
    at the end of the step, so those count as read after it.)"""
    late = set().union(
        *(_statement_reads(s) for s in backward if isinstance(s, StoreAdjoint | Accumulate)),
        *(_statement_reads(s) for s in backward if isinstance(s, AccumulateStatic)),
    )
    if x_grad is not None:
        late |= {str(s) for s in x_grad.free_symbols}
    for i, (state, grad) in enumerate(state_grads):
        if not isinstance(grad, sp.Symbol):
            continue
        at = next(
            (
                k
                for k, s in enumerate(backward)
                if isinstance(s, OperandVJP) and s.target == grad.name
            ),
            None,
        )
        if at is None:
            continue
        d_state = naming.adjoint(state)
        others = [e for j, (_, e) in enumerate(state_grads) if j != i]
        after = set().union(*(_statement_reads(s) for s in backward[at + 1 :]))
        after |= late | {str(s) for e in others for s in sp.sympify(e).free_symbols}
        before = set().union(*(_statement_reads(s) for k, s in enumerate(backward) if k != at))
        if d_state in after or grad.name in before | after:
            continue
        backward[at] = OperandVJP(grad.name, backward[at].group, into_state=state)


def _with_adjoint(stmt, renamed, owners, bound):
    if isinstance(stmt, StoreAdjoint | OperandVJP):
        group = _regroup(stmt.group, renamed, owners, bound)
        return type(stmt)(**{**stmt.__dict__, "group": group})
    return stmt


def _regroup(g: Group, renamed, owners, bound) -> Group:
    name = renamed[g.name]
    changes = {"adjoint": name, "writes_adjoint": g.name in owners, "adjoint_bound": name in bound}
    return Group(**{**g.__dict__, **changes})


def _reverse_substitutions(values: dict[str, sp.Expr]) -> dict:
    """Map each forward right-hand side back to its name, so derivatives reuse forward values."""
    return {expr: symbol(name) for name, expr in values.items() if not isinstance(expr, sp.Symbol)}


def _simplify(expr: sp.Expr, reverse_subs: dict) -> sp.Expr:
    return expr.xreplace(reverse_subs)


def operand_vjp(expr: sp.Expr, var: sp.Symbol, seed: sp.Expr) -> sp.Expr:
    """The gradient reaching ``var`` through ``expr`` (a hoisted operand), given ``seed``, the
    gradient of ``expr``: ``seed * d expr / d var`` where ``expr`` is elementwise, and through
    the vector-Jacobian product of any run-time or row-wise function in it."""
    calls = [
        c
        for c in sp.preorder_traversal(expr)
        if isinstance(c, functions._RowCall) or functions.is_option_call(c)
    ]
    if not calls:
        return seed * sp.diff(expr, var)
    if expr == var:
        return seed
    if isinstance(expr, functions._RowCall):
        inner = expr.args[0]
        at = expr if functions.ROW_WISE_TABLE[expr.call_name].reads_output else inner
        return operand_vjp(inner, var, functions.row_vjp_function(expr.call_name)(at, seed))
    if functions.is_option_call(expr):
        inner = expr.args[0]
        at = inner if expr.from_input else expr
        return operand_vjp(inner, var, functions.vjp_function(expr.call_name)(at, seed))
    if isinstance(expr, sp.Add):
        return sp.Add(*(operand_vjp(a, var, seed) for a in expr.args if a.has(var)))
    if isinstance(expr, sp.Mul):
        return sp.Add(
            *(
                operand_vjp(f, var, seed * sp.Mul(*(o for j, o in enumerate(expr.args) if j != i)))
                for i, f in enumerate(expr.args)
                if f.has(var)
            )
        )
    if isinstance(expr, sp.Pow) and not expr.args[1].has(var):
        base, exp = expr.args
        return operand_vjp(base, var, seed * exp * base ** (exp - 1))
    if isinstance(expr, functions._Call):  # an elementwise table function around a row-wise one
        return operand_vjp(expr.args[0], var, seed * expr.fdiff(1))
    raise NotImplementedError(f"gradient through {type(expr).__name__} in a hoisted left side")
