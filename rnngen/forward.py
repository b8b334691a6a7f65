"""The forward program of one step: equations -> named values and grouped weight products.

Weight products ``a @ w`` become symbols; products that share an operand and are blocks of one
fused weight are grouped so they run as one matrix product; groups whose operand depends only
on ``x`` are *hoisted* out of the time loop, with the biases added next to them folded in;
nested calls, reductions and the left sides of nested products become named values; values of
the weights alone are found (they run once, before the loop).
"""

from __future__ import annotations

from collections import defaultdict

import sympy as sp

from . import functions, naming
from .grammar import RowReduction, WeightProduct, symbol
from .ir import Assign, Group, GroupProduct
from .resolve import Block, resolve
from .spec import CellSpec

NAME_LIMIT = naming.LIMIT


def static_expr(expr: sp.Expr, allowed: set[str]) -> bool:
    """True when ``expr`` reads only ``allowed`` names (the right side of '@' is a weight)."""
    if isinstance(expr, WeightProduct):
        return static_expr(expr.args[0], allowed)
    if isinstance(expr, sp.Symbol):
        return str(expr) in allowed
    return all(static_expr(a, allowed) for a in expr.args)


def static_equations(spec: CellSpec, equations: list, vector_blocks: set[str]) -> set[str]:
    """Equations of weights alone (``e: sigmoid(v)``): the same at every step and for every
    example. States and the output always have a batch axis, so they are never static."""
    static: set[str] = set()
    for name, rhs in equations:
        if name not in spec.states and name != spec.output:
            if static_expr(rhs, vector_blocks | static):
                static.add(name)
    return static


def static_values(spec: CellSpec, resolved, groups, vector_blocks: set[str]) -> set[str]:
    """Names of every value the prelude computes: static equations and named calls, the
    left sides of static products and the products themselves."""
    static = {p for g in groups if g.static for p, _ in g.products}
    static |= {g.operand for g in groups if g.static and str(g.operand) not in vector_blocks}
    for name, rhs in resolved:
        if name not in spec.states and name != spec.output:
            if static_expr(rhs, vector_blocks | static):
                static.add(name)
    return static


def is_static(stmt, static: set[str]) -> bool:
    if isinstance(stmt, GroupProduct):
        return stmt.group.static
    return stmt.target in static


def value_sizes(spec: CellSpec, groups, resolved, blocks, in_force=()) -> dict:
    """The size of every named vector of one step (``in_force``: the sizes under its options)."""
    sizes = {**dict(spec.sizes), **dict(in_force)}
    for g in groups:
        sizes.setdefault(g.operand, _operand_size(spec, g, blocks))
        for p, b in g.products:
            sizes[p] = b.stop - b.start
    for name, rhs in resolved:
        if name not in sizes:  # named nested calls: same size as their argument
            sizes[name] = next(sizes[str(a)] for a in rhs.free_symbols if str(a) in sizes)
    return sizes


def read_equations(spec: CellSpec, equations: list) -> list:
    """The equations something reads in this variant: states, the output, and what they read.

    The spec refuses an equation nothing reads under any options; one that is dead only under
    some (read only by an alternative that is not in force) is left out of those variants.
    """
    needed = set(spec.states) | {spec.output}
    live = []
    for name, rhs in reversed(equations):
        if name in needed:
            live.append((name, rhs))
            needed |= {str(s) for s in rhs.free_symbols}
    return live[::-1]


def unnest_products(equations: list, taken: set) -> tuple[list, list[str]]:
    """A product inside the left side of another (``tanh(h_prev @ W1) @ W2``): the left side
    becomes an intermediate of its own, named after its math (``tanh_h_prev_W1``) and placed
    just before the equation, so every product's left side is a plain expression."""
    out: list = []
    names: dict[sp.Expr, sp.Symbol] = {}

    def unnest(expr: sp.Expr) -> sp.Expr:
        if isinstance(expr, sp.Symbol | sp.Number) or not expr.args:
            return expr
        args = [unnest(a) for a in expr.args]
        if isinstance(expr, WeightProduct) and args[0].atoms(WeightProduct):
            if args[0] not in names:
                names[args[0]] = symbol(naming.fresh(_math_name(args[0]), taken))
                out.append((str(names[args[0]]), args[0]))
            args[0] = names[args[0]]
        return expr.func(*args)

    for name, rhs in equations:
        out.append((name, unnest(rhs)))
    return out, [str(n) for n in names.values()]


def name_reductions(equations: list, taken: set) -> tuple[list, dict[str, str]]:
    """Every reduction (``sum(a)``, ``mean(a)``) becomes a statement of its own, like a weight
    product: ``mean_c = mean(c)``, innermost first, placed just before the equation that reads
    it; an argument that is neither a name nor a product is named too (``arg_...``), so the
    reduction reads one value and its adjoint reaches that value by the reduction rule.
    An equation that is a reduction of a name stays as it is. Returns the equations and
    the comment of each new name."""
    out: list = []
    names: dict[sp.Expr, sp.Symbol] = {}
    comments: dict[str, str] = {}

    def name_of(expr: sp.Expr, stem: str, comment: str) -> sp.Symbol:
        if expr not in names:
            names[expr] = symbol(naming.fresh(naming.short(stem), taken))
            out.append((str(names[expr]), expr))
            comments[str(names[expr])] = comment
        return names[expr]

    def visit(expr: sp.Expr, top: bool = False) -> sp.Expr:
        if isinstance(expr, sp.Symbol | sp.Number) or not expr.args:
            return expr
        args = [visit(a) for a in expr.args]
        if not isinstance(expr, RowReduction):
            return expr.func(*args)
        a = args[0]
        if not isinstance(a, sp.Symbol | WeightProduct):
            a = name_of(a, f"{_math_name(a)}_arg", f"argument of {expr.call_name}()")
        node = expr.func(a)
        if top or not isinstance(node, RowReduction):
            return node
        return name_of(node, f"{expr.call_name}_{_math_name(a)}", f"{expr.call_name} across units")

    for name, rhs in equations:
        top = isinstance(rhs, RowReduction)
        out.append((name, visit(rhs, top)))
    return out, comments


def _math_name(expr: sp.Expr, limit: int = NAME_LIMIT) -> str:
    """A readable identifier for an expression: ``tanh(h_prev @ W1)`` -> ``tanh_h_prev_W1``."""

    def name(e) -> str:
        if isinstance(e, sp.Symbol):
            return str(e)
        if isinstance(e, WeightProduct):
            return f"{name(e.args[0])}_{e.args[1]}"
        if functions.is_call(e) or isinstance(e, RowReduction):
            return f"{type(e).call_name}_{name(e.args[0])}"
        parts = [name(a) for a in sorted(e.args, key=sp.default_sort_key) if not a.is_Number]
        return "_".join(p for p in parts if p)

    text = name(expr) or "operand"
    return text if len(text) <= limit else text[:limit].rstrip("_")


def name_option_inputs(equations: list, option_names: set, taken: set) -> list:
    """The input-form twin: every option activation is differentiated from its input, and an
    input that is not a plain name becomes an intermediate of its own (``h_in``), so the
    backward keeps that one value per step rather than every term of it."""
    out: list = []
    for name, rhs in equations:
        rhs = functions.from_input(rhs, option_names)
        while True:
            calls = [
                c
                for c in rhs.atoms(functions._Call)
                if c.call_name in option_names
                and not isinstance(c.args[0], sp.Symbol)
                and not any(d.call_name in option_names for d in c.args[0].atoms(functions._Call))
            ]
            if not calls:
                break
            call = min(calls, key=sp.default_sort_key)
            var = symbol(naming.fresh(f"{name}_in", taken))
            out.append((str(var), call.args[0]))
            rhs = rhs.xreplace({call: type(call)(var)})
        out.append((name, rhs))
    return out


def prev_names(spec: CellSpec) -> set[str]:
    return {naming.prev(s) for s in spec.states}


def group_products(spec, options, equations, blocks, dropout_tensors, taken, constant=()):
    """Weight products -> groups: same operand, consecutive blocks of one weight, one GEMM.

    With dropout, each tensor in ``dropout_tensors`` is multiplied by its gate's mask where it
    is the left side of a product. Returns (groups, product -> symbol, masks).
    """
    masks: dict[tuple[str, int], sp.Symbol] = {}

    def masked(operand: sp.Expr, gate: int) -> sp.Expr:
        reps = {}
        for s in operand.free_symbols:
            if str(s) in dropout_tensors:
                m = masks.setdefault((str(s), gate), symbol(naming.mask(str(s), gate)))
                reps[s] = s * m
        return operand.xreplace(reps) if reps else operand

    by_key: dict[tuple, list] = defaultdict(list)  # (operand, weight, row) -> [(product, block)]
    for _, rhs in equations:
        for wp in sorted(rhs.atoms(WeightProduct), key=sp.default_sort_key):
            block = blocks[str(wp.args[1])]
            key = (masked(wp.args[0], _gate_index(spec, block)), block.weight, block.row)
            if all(b is not block for _, b in by_key[key]):
                by_key[key].append((wp, block))

    loop_vars = prev_names(spec) | {eq for eq, _ in equations}
    operand_names: dict[sp.Expr, str] = {}
    groups: list[Group] = []
    product_symbol: dict[sp.Expr, sp.Symbol] = {}
    for (operand, weight, _row), members in by_key.items():
        members.sort(key=lambda m: sp.default_sort_key(m[1].start))
        runs: list[list] = [[members[0]]]
        for m in members[1:]:
            if sp.simplify(m[1].start - runs[-1][-1][1].stop) == 0:
                runs[-1].append(m)
            else:
                runs.append([m])
        if operand not in operand_names:
            is_symbol = isinstance(operand, sp.Symbol)
            operand_names[operand] = (
                str(operand) if is_symbol else naming.fresh(_operand_name(operand, masks), taken)
            )
        oname = operand_names[operand]
        static = static_expr(operand, set(constant))
        hoisted = not static and not ({str(s) for s in operand.free_symbols} & loop_vars)
        for run in runs:
            first, last = run[0][1], run[-1][1]
            full = first.start == 0 and (
                all(b.full for _, b in run) or _covers(spec, weight, options, last.stop)
            )
            if full:
                gname = naming.fresh(naming.product(oname, weight), taken)
            elif len(run) == 1:  # one block: its name says which part of the weight
                gname = naming.fresh(naming.product(oname, first.name), taken)
            else:
                suffix = "".join(_block_suffix(b.name, weight) for _, b in run)
                gname = naming.fresh(naming.product(oname, f"{weight}_{suffix}"), taken)
            prods = []
            for wp, block in run:
                pname = (
                    gname
                    if len(run) == 1
                    else naming.fresh(naming.product(oname, block.name), taken)
                )
                product_symbol[wp] = symbol(pname)
                prods.append((pname, block))
            groups.append(
                Group(
                    gname,
                    oname,
                    operand,
                    weight,
                    first.start,
                    last.stop,
                    full,
                    tuple(prods),
                    hoisted,
                    static=static,
                )
            )
    return groups, product_symbol, masks


def fold_and_name(equations, groups, product_symbol, blocks, vector_blocks, taken):
    """Products become symbols; biases added to a hoisted product are folded into it.

    Function calls nested inside an equation (``tanh(c)`` in ``o * tanh(c)``) become named
    nodes of their own, so the backward pass can reuse their values.
    """
    # a bias can only be folded into a product that no other term reads
    uses: dict[str, int] = defaultdict(int)
    for _, rhs in equations:
        for sym in sp.preorder_traversal(rhs.xreplace(product_symbol)):
            if isinstance(sym, sp.Symbol):
                uses[str(sym)] += 1
    hoisted_products = {p for g in groups if g.hoisted for p, _ in g.products if uses[p] == 1}
    folded: dict[str, list[Block]] = defaultdict(list)

    def fold(expr):
        if isinstance(expr, sp.Add):
            args = [fold(a) for a in expr.args]
            hp = [a for a in args if isinstance(a, sp.Symbol) and str(a) in hoisted_products]
            if not hp:
                return sp.Add(*args)
            keep = []
            for a in args:
                if isinstance(a, sp.Symbol) and str(a) in vector_blocks:
                    folded[str(hp[0])].append(blocks[str(a)])
                else:
                    keep.append(a)
            return sp.Add(*keep)
        if expr.args and not isinstance(expr, sp.Symbol | sp.Number):
            return expr.func(*[fold(a) for a in expr.args])
        return expr

    resolved = []
    for name, rhs in equations:
        rhs = fold(rhs.xreplace(product_symbol))
        while calls := _nested_calls(rhs):  # innermost first, so outer calls see the names
            call = min(calls, key=lambda c: (sp.count_ops(c), sp.default_sort_key(c)))
            node = naming.fresh(
                naming.short(f"{type(call).__name__}_{_operand_name(call.args[0])}"), taken
            )
            resolved.append((node, call))
            rhs = rhs.xreplace({call: symbol(node)})
        resolved.append((name, rhs))
    groups = [
        Group(
            **{
                **g.__dict__,
                "folded": tuple((p, tuple(folded[p])) for p, _ in g.products if folded.get(p)),
            }
        )
        for g in groups
    ]
    return resolved, groups


def forward_program(resolved, groups, comments=None):
    """Equations in order; each in-loop group is emitted just before its first use."""
    comments = comments or {}
    group_of = {p: g for g in groups for p, _ in g.products}
    forward: list = []
    emitted: set[str] = set()
    operand_nodes: dict[str, sp.Expr] = {}
    for name, rhs in resolved:
        for sym in sorted(rhs.free_symbols, key=str):
            g = group_of.get(str(sym))
            if g is None or g.hoisted or g.name in emitted:
                continue
            if not isinstance(g.operand_expr, sp.Symbol) and g.operand not in operand_nodes:
                operand_nodes[g.operand] = g.operand_expr
                forward.append(Assign(g.operand, g.operand_expr, "operand of a weight product"))
            forward.append(GroupProduct(g))
            emitted.add(g.name)
        forward.append(Assign(name, rhs, comments.get(name, "")))
    return forward, operand_nodes


def _nested_calls(expr: sp.Expr) -> set:
    """Table-function calls below the top of an expression (``tanh(c)`` in ``o * tanh(c)``)."""
    inner = expr.args[0] if functions.is_call(expr) else expr
    return {a for a in sp.preorder_traversal(inner) if functions.is_call(a)}


def forward_order(forward) -> list[str]:
    out = []
    for stmt in forward:
        if isinstance(stmt, Assign):
            out.append(stmt.target)
        else:
            out.extend(p for p, _ in stmt.group.products)
    return out


def _operand_name(expr: sp.Expr, masks: dict | None = None) -> str:
    """``h_prev`` for ``h_prev``; ``x_dropped`` for ``x * x_mask_0`` (with the gate, ``x_dropped1``,
    when the tensor has a mask per gate). ``masks``: (tensor, gate) -> mask symbol."""
    masks = masks or {}
    gate_of = {m: gate for (_, gate), m in masks.items()}
    per_gate = {t for (t, gate) in masks if gate > 0}
    names = sorted(str(s) for s in expr.free_symbols if s not in gate_of)
    gates = sorted(
        str(gate_of[s])
        for s in expr.free_symbols
        if s in gate_of and _mask_tensor(masks, s) in per_gate
    )
    base = naming.short("_".join(names) or "operand", NAME_LIMIT - 12)
    if not any(s in gate_of for s in expr.free_symbols):
        return base
    return naming.dropped(base, "".join(gates))


def _mask_tensor(masks: dict, m: sp.Symbol) -> str:
    return next(t for (t, _), mm in masks.items() if mm == m)


def _block_suffix(block: str, weight: str) -> str:
    return block[len(weight) + 1 :] if block.startswith(weight + "_") else block


def _gate_index(spec: CellSpec, block: Block) -> int:
    """The block's position in its row under the layout in force: its dropout mask's gate."""
    return block.gate


def _covers(spec, weight, options, stop) -> bool:
    return resolve(spec, options).weight(weight).covers(stop)


def _operand_size(spec, g: Group, blocks) -> sp.Expr:
    """Rows of the group's weight under the layout in force: the size of its left side."""
    return g.products[0][1].rows
