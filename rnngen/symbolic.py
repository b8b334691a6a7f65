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

The time loop is not unrolled here: the templates write it around one step.
Everything returned is plain frozen data holding SymPy expressions.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from itertools import product as cartesian

import sympy as sp

from . import functions, naming
from .grammar import RowReduction, WeightProduct, symbol
from .resolve import Block, resolve
from .spec import CellSpec, Layout

UNITS = symbol("units")
NAME_LIMIT = naming.LIMIT


# -- the program -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """Products ``operand @ block`` for consecutive blocks of one weight, run as one GEMM.

    ``products`` pairs each product symbol with its block. ``folded`` lists, per
    product, the bias vectors added to it (only for hoisted groups).
    """

    name: str
    operand: str
    operand_expr: sp.Expr
    weight: str
    start: sp.Expr
    stop: sp.Expr
    full: bool
    products: tuple[tuple[str, Block], ...]
    hoisted: bool
    folded: tuple[tuple[str, tuple[Block, ...]], ...] = ()
    # the gradient of the group's products at one step: a name the backward step binds (the
    # buffer of every step is ``naming.seq(adjoint)``); groups whose gradients are equal share
    # it, and only the first of them (``writes_adjoint``) stores it
    adjoint: str = ""
    writes_adjoint: bool = True
    # the adjoint is a value the backward step computes anyway (``d_h_pre``), not a new one
    adjoint_bound: bool = False
    # the operand does not change over time (weights only): computed once, before the loop
    static: bool = False

    @property
    def width(self) -> sp.Expr:
        return self.stop - self.start


@dataclass(frozen=True)
class Assign:
    """``target = expr`` (elementwise).

    ``gradient_of``: for a backward statement, the value whose gradient ``target`` is, and
    ``pre``: whether it is the gradient with respect to the argument of that value's function.
    """

    target: str
    expr: sp.Expr
    comment: str = ""
    gradient_of: str = ""
    pre: bool = False


@dataclass(frozen=True)
class GroupProduct:
    """Forward: compute a group's products for this step."""

    group: Group


@dataclass(frozen=True)
class StoreAdjoint:
    """Backward: write the adjoint of each product of ``group`` into its per-step buffer."""

    group: Group
    values: tuple[sp.Expr, ...]


@dataclass(frozen=True)
class OperandVJP:
    """Backward: ``target = d_<group> @ weight[..., cols].T`` (the transpose rule).

    ``into_state``: the target is all of that state's gradient for the step before, so a
    backend may write it straight into ``d_<state>`` (nothing later in the step reads the old
    value) and skip the state's own assignment.
    """

    target: str
    group: Group
    into_state: str = ""


@dataclass(frozen=True)
class Accumulate:
    """Backward: ``d_<block> += expr.sum(axis=0)`` for a vector weight used elementwise."""

    block: Block
    expr: sp.Expr


@dataclass(frozen=True)
class AccumulateStatic:
    """Backward: ``d_<name> += expr.sum(axis=0)`` for a value that does not change over time."""

    name: str
    size: sp.Expr
    expr: sp.Expr


@dataclass(frozen=True)
class StaticVJP:
    """After the loop, a product ``a @ block`` of a static left side ``a`` (1-D):
    ``d_<weight>[:, block] += outer(a, d_<product>)`` and ``target = block @ d_<product>``."""

    product: str
    block: Block
    group: Group
    target: str


@dataclass(frozen=True)
class StaticGrad:
    """After the loop: ``d_<block> += expr`` (a 1-D gradient of a vector weight)."""

    block: Block
    expr: sp.Expr


@dataclass(frozen=True)
class Reduce:
    """After the loop: ``d_<block> += d_<group>[..., product cols].sum over steps and batch``."""

    block: Block
    group: Group
    product: str


@dataclass(frozen=True)
class Variant:
    """One fully resolved cell: fixed boolean options, dropout on or off."""

    index: int
    options: tuple[tuple[str, bool], ...]
    dropout: bool
    weights: tuple[tuple[str, Layout], ...]  # present weights and their layout
    blocks: tuple[Block, ...]
    hoisted: tuple[Group, ...]
    forward: tuple  # Assign | GroupProduct, in order
    stored: tuple[tuple[str, sp.Expr], ...]  # per-step forward values the backward needs, with size
    backward: tuple  # Assign | StoreAdjoint | OperandVJP | Accumulate, in order
    state_grads: tuple[tuple[str, sp.Expr], ...]  # d_<state>_prev expressions
    x_grad: sp.Expr | None  # per-step elementwise contribution to d_x (rare)
    # (group, variable, factor): a hoisted operand's gradient reaches ``x`` or a vector weight
    # as ``d_operand * factor``, over all steps at once
    hoisted_grads: tuple[tuple[Group, str, sp.Expr], ...]
    reductions: tuple[Reduce, ...]
    groups: tuple[Group, ...]  # every group, hoisted first
    masks: tuple[tuple[str, int, str], ...]  # (mask symbol, gate index, tensor)
    # option activations differentiated from their inputs (values with no output form)
    general: bool = False
    # values that do not change over time (functions of weights only): computed once before
    # the loop (``prelude``); their adjoints are summed in the loop, then ``static_backward``
    prelude: tuple = ()  # Assign | GroupProduct
    static_groups: tuple = ()
    static_backward: tuple = ()  # Assign | StaticVJP | StaticGrad
    static_values: tuple[str, ...] = ()
    # states (or the output) computed from weights alone: broadcast to the batch where a
    # backend does not broadcast by itself
    broadcast: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"v{self.index}"

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.options]
        parts.append("with dropout masks" if self.dropout else "no dropout")
        if self.general:
            parts.append("input-form")  # option activations differentiated from inputs
        return ", ".join(parts)


@dataclass(frozen=True)
class Derivation:
    spec: CellSpec
    variants: tuple[Variant, ...]
    bool_options: tuple[str, ...]

    def variant_table(self) -> list[tuple[tuple[bool, ...], bool, Variant]]:
        return [(tuple(v for _, v in var.options), var.dropout, var) for var in self.variants]


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
    taken = set(all_weight_names) | {n for n, _ in equations} | _prev_names(spec) | {"x"}
    equations, intermediates = _unnest_products(_read_equations(spec, equations), taken)
    equations, reduced = _name_reductions(equations, taken)
    if general:  # option activations differentiated from their (named) inputs
        option_names = {o.name for o in spec.activation_options}
        equations = _name_option_inputs(equations, option_names, taken)
    dropout_tensors = set(dict(spec.dropout)) if with_dropout else set()

    vector_blocks = set(res.vectors)
    static_eqs = _static_equations(spec, equations, vector_blocks)
    groups, product_symbol, masks = _group_products(
        spec, options, equations, blocks, dropout_tensors, taken, vector_blocks | static_eqs
    )
    resolved, groups = _fold_and_name(
        equations, groups, product_symbol, blocks, vector_blocks, taken
    )
    comments = dict.fromkeys(intermediates, "left side of a nested product")
    comments |= reduced
    forward, operand_nodes = _forward_program(resolved, groups, comments)
    node_values = dict(resolved) | operand_nodes
    static = _static_values(spec, resolved, groups, vector_blocks)
    prelude = [st for st in forward if _is_static(st, static)]
    forward = [st for st in forward if not _is_static(st, static)]
    sizes = _value_sizes(spec, groups, resolved, blocks, res.sizes)
    backward, state_grads, x_grad, reductions, static_backward = _reverse(
        spec, forward, node_values, groups, blocks, vector_blocks, prelude, sizes
    )
    stored = _stored_values(
        spec, forward, backward, state_grads, x_grad, groups, masks, blocks, sizes, static
    )
    # inside the loop ``x`` is this step's input: the templates bind ``x_t = x[t]``
    forward, backward = _step_input(forward), _step_input(backward)
    state_grads = [(st, _at_step(e)) for st, e in state_grads]
    x_grad = None if x_grad is None else _at_step(x_grad)

    hoisted_grads = tuple(
        (g, str(var), sp.diff(g.operand_expr, var))
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
        static_values=tuple(n for n in _forward_order(prelude) if n in static),
        broadcast=tuple(
            name
            for name, rhs in resolved
            if name in (*spec.states, spec.output) and _static_expr(rhs, vector_blocks | static)
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


def _static_expr(expr: sp.Expr, allowed: set[str]) -> bool:
    """True when ``expr`` reads only ``allowed`` names (the right side of '@' is a weight)."""
    if isinstance(expr, WeightProduct):
        return _static_expr(expr.args[0], allowed)
    if isinstance(expr, sp.Symbol):
        return str(expr) in allowed
    return all(_static_expr(a, allowed) for a in expr.args)


def _static_equations(spec: CellSpec, equations: list, vector_blocks: set[str]) -> set[str]:
    """Equations of weights alone (``e: sigmoid(v)``): the same at every step and for every
    example. States and the output always have a batch axis, so they are never static."""
    static: set[str] = set()
    for name, rhs in equations:
        if name not in spec.states and name != spec.output:
            if _static_expr(rhs, vector_blocks | static):
                static.add(name)
    return static


def _static_values(spec: CellSpec, resolved, groups, vector_blocks: set[str]) -> set[str]:
    """Names of every value the prelude computes: static equations and named calls, the
    left sides of static products and the products themselves."""
    static = {p for g in groups if g.static for p, _ in g.products}
    static |= {g.operand for g in groups if g.static and str(g.operand) not in vector_blocks}
    for name, rhs in resolved:
        if name not in spec.states and name != spec.output:
            if _static_expr(rhs, vector_blocks | static):
                static.add(name)
    return static


def _is_static(stmt, static: set[str]) -> bool:
    if isinstance(stmt, GroupProduct):
        return stmt.group.static
    return stmt.target in static


def _value_sizes(spec: CellSpec, groups, resolved, blocks, in_force=()) -> dict:
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


def _read_equations(spec: CellSpec, equations: list) -> list:
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


def _unnest_products(equations: list, taken: set) -> tuple[list, list[str]]:
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


def _name_reductions(equations: list, taken: set) -> tuple[list, dict[str, str]]:
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
        if isinstance(e, functions._Call | RowReduction):
            return f"{type(e).call_name}_{name(e.args[0])}"
        parts = [name(a) for a in sorted(e.args, key=sp.default_sort_key) if not a.is_Number]
        return "_".join(p for p in parts if p)

    text = name(expr) or "operand"
    return text if len(text) <= limit else text[:limit].rstrip("_")


def _name_option_inputs(equations: list, option_names: set, taken: set) -> list:
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


def _prev_names(spec: CellSpec) -> set[str]:
    return {naming.prev(s) for s in spec.states}


def _group_products(spec, options, equations, blocks, dropout_tensors, taken, constant=()):
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

    loop_vars = _prev_names(spec) | {eq for eq, _ in equations}
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
        static = _static_expr(operand, set(constant))
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


def _fold_and_name(equations, groups, product_symbol, blocks, vector_blocks, taken):
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


def _forward_program(resolved, groups, comments=None):
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


def _stored_values(
    spec, forward, backward, state_grads, x_grad, groups, masks, blocks, sizes, static
):
    """The per-step forward values the backward reads that are not otherwise at hand."""
    available = _prev_names(spec) | set(spec.states) | {"x"} | {str(m) for m in masks.values()}
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
        for n in hoisted_products + _forward_order(forward)
        if n in needed and n not in available
    )


def _reverse(spec, forward, node_values, groups, blocks, vector_blocks, prelude=(), sizes=None):
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
    diff_vars = set(node_values) | _prev_names(spec) | {"x"} | vector_blocks
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
    for name in _forward_order(prelude):
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


def _nested_calls(expr: sp.Expr) -> set:
    """Table-function calls below the top of an expression (``tanh(c)`` in ``o * tanh(c)``)."""
    inner = expr.args[0] if isinstance(expr, functions._Call) else expr
    return {a for a in sp.preorder_traversal(inner) if isinstance(a, functions._Call)}


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


def _forward_order(forward) -> list[str]:
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
