"""What every backend printer shares: statement dispatch, indented source, and questions
about a variant's program (which values a function reads), answered once from the IR.

A backend is a subclass of SymPy's code printer that adds one ``_print_<Node>`` method per
IR statement (see :mod:`rnngen.symbolic`), as SymPy's ``codegen.ast`` nodes are printed by
``printing/pycode.py``. SymPy's ``Printer._print`` dispatches on the class name of any object,
so statements and expressions go through the same printer.
"""

from __future__ import annotations

import sympy as sp

from .. import naming, symbolic
from ..spec import CellSpec


class Source:
    """Lines of Python at a current indentation level (4 spaces a level)."""

    def __init__(self, level: int = 0):
        self.lines: list[str] = []
        self.level = level

    def __call__(self, *texts: str) -> Source:
        """Add each text (one or more lines) at the current level; ``""`` is a blank line."""
        for text in texts:
            for line in text.split("\n") if text else [""]:
                self.lines.append("    " * self.level + line if line else "")
        return self

    def indented(self, texts, by: int = 1) -> Source:
        """Add lines (already printed, relative indentation kept) one or more levels deeper."""
        self.level += by
        self(*texts)
        self.level -= by
        return self

    def __enter__(self) -> Source:
        self.level += 1
        return self

    def __exit__(self, *exc) -> None:
        self.level -= 1

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


class StatementPrinter:
    """Mixin for a SymPy printer: ``emit(statements)`` prints IR statements as source lines.

    ``spec`` and ``variant`` are the cell and the variant whose program is printed; the
    statement methods read them for names and shapes.
    """

    spec: CellSpec
    variant: symbolic.Variant
    #: printing the forward step inside the loop (hoisted values are read at this step)
    in_step = False

    def _print_Symbol(self, expr):
        """A name, recorded in ``read`` (the names a function printed, so that it binds only
        the sizes it reads)."""
        self.__dict__.setdefault("read", set()).add(expr.name)
        return super()._print_Symbol(expr)

    def bind_sizes(self, src: Source, first_state: str, x: str = "x") -> None:
        """Bind ``units`` and ``input_dim`` where the printed lines read them."""
        read = self.__dict__.get("read", set())
        if "units" in read:
            src(f"units = {first_state}.shape[-1]")
        if "input_dim" in read:
            src(f"input_dim = {x}.shape[-1]")

    def emit(self, statements, in_step: bool = False) -> list[str]:
        """Source lines for a sequence of IR statements (each node prints itself)."""
        out: list[str] = []
        self.in_step = in_step
        try:
            for s in statements:
                text = self._print(s)
                if text:
                    out.extend(text.split("\n"))
        finally:
            self.in_step = False
        return out

    def value(self, e) -> str:
        """An assigned value: inside the forward step, hoisted groups are read at this step."""
        return self.step_expr(e) if self.in_step else self.expr(e)

    def expr(self, e) -> str:
        """Source of an expression (a name passes through)."""
        return e if isinstance(e, str) else self.doprint(sp.sympify(e))

    def factor(self, e) -> str:
        """Source of the right operand of ``*``: parenthesized when it is a sum."""
        e = sp.sympify(e)
        return f"({self.expr(e)})" if isinstance(e, sp.Add) else self.expr(e)

    def step_expr(self, e) -> str:
        """An expression inside the loop, where a one-product hoisted group is ``<name>_t``."""
        return self.expr(hoisted_t(self.variant, e))

    def hoisted_operands(self) -> list[str]:
        """Hoisted operands other than ``x`` (computed once, kept for the backward pass)."""
        return list(dict.fromkeys(g.operand for g in self.variant.hoisted if g.operand != "x"))

    def hoisted_operand_gradients(self, src, terms: list[dict], every_step) -> dict[str, str]:
        """Group name -> the source of its operand's gradient over every step
        (``every_step(group)``): bound to a name where several terms (or a VJP) read it,
        written inline where one term does."""
        uses: dict[str, int] = {}
        for term in terms:
            uses[term["group"].name] = uses.get(term["group"].name, 0) + 1
        out: dict[str, str] = {}
        for term in terms:
            g = term["group"]
            if g.name in out:
                continue
            through_vjp = any(t["factor"] is None for t in terms if t["group"] is g)
            if uses[g.name] > 1 or through_vjp:
                out[g.name] = naming.hoisted_seed(g)
                src(f"{out[g.name]} = {every_step(g)}")
            else:
                out[g.name] = every_step(g)
        return out

    def hoisted_term(self, term: dict, d_op: str, product: bool = False) -> str:
        """What a hoisted operand's gradient ``d_op`` gives ``x`` or a vector weight: ``d_op *
        factor``, or (through a run-time or row-wise function) the printed VJP, which reads
        ``d_op`` by its name. ``product``: always a product, even for a factor of 1."""
        if term["factor"] is None:
            return self.expr(term["value"])
        if term["factor"] == 1 and not product:
            return d_op
        return f"{d_op} * {self.factor(term['factor'])}"

    # -- slices of weights, written the same way by every array backend ----------------------

    def weight_slice(self, g: symbolic.Group) -> str:
        """The columns of ``g.weight`` that group ``g`` multiplies."""
        if g.full:
            return g.weight
        return f"{g.weight}[:, {self.expr(g.start)} : {self.expr(g.stop)}]"

    def block_index(self, b) -> str:
        """``[row, start : stop]`` of a block inside its weight; empty for a whole weight."""
        if b.full:
            return ""
        row = f"{b.row}, " if b.row is not None else ""
        return f"[{row}{self.expr(b.start)} : {self.expr(b.stop)}]"

    def block_value(self, b) -> str:
        return b.weight + self.block_index(b)

    def columns(self, g: symbolic.Group, b) -> str:
        """The columns of block ``b`` inside the result of group ``g``."""
        return f"{self.expr(b.start - g.start)} : {self.expr(b.stop - g.start)}"


# -- questions about a variant's program ---------------------------------------------------------


def names_in(exprs) -> set[str]:
    out: set[str] = set()
    for e in exprs:
        out |= {str(s) for s in sp.sympify(e).free_symbols}
    return out


def forward_exprs(v: symbolic.Variant) -> list:
    exprs = [s.expr for s in v.forward + v.prelude if isinstance(s, symbolic.Assign)]
    return exprs + [g.operand_expr for g in v.groups + v.static_groups]


def backward_exprs(v: symbolic.Variant) -> list:
    exprs = []
    for s in v.backward + v.static_backward:
        if isinstance(s, symbolic.Assign | symbolic.Accumulate | symbolic.AccumulateStatic):
            exprs.append(s.expr)
        elif isinstance(s, symbolic.StaticGrad):
            exprs.append(s.expr)
        elif isinstance(s, symbolic.StaticVJP):
            exprs.append(symbolic.symbol(s.group.operand))
        elif isinstance(s, symbolic.StoreAdjoint):
            exprs.extend(s.values)
    exprs += [e for _, e in v.state_grads]
    if v.x_grad is not None:
        exprs.append(v.x_grad)
    return exprs


def static_reads(v: symbolic.Variant) -> list[str]:
    """Prelude values (the same at every step) that a backward function reads."""
    names = names_in(backward_exprs(v))
    return [n for n in v.static_values if n in names]


def adjoint_buffers(v: symbolic.Variant) -> list[tuple[str, sp.Expr]]:
    """Per-step buffers of product gradients, ``(name, width)``, one per distinct adjoint."""
    seen: dict[str, sp.Expr] = {}
    for g in v.groups:
        seen.setdefault(g.adjoint, g.width)
    return list(seen.items())


def needs_input_dim(v: symbolic.Variant) -> bool:
    """Whether a NumPy function of the variant allocates a buffer of ``input_dim`` columns."""
    sizes = [size for _, size in v.stored] + [w for _, w in adjoint_buffers(v)]
    sizes += [s.size for s in v.backward if isinstance(s, symbolic.AccumulateStatic)]
    sizes += [
        s.block.stop - s.block.start for s in v.backward if isinstance(s, symbolic.Accumulate)
    ]
    return any("input_dim" in {str(x) for x in sp.sympify(e).free_symbols} for e in sizes)


def reads_x_t(v: symbolic.Variant, backward: bool = False) -> bool:
    """Whether the forward (or backward) loop reads this step's input ``x_t``."""
    exprs = (
        backward_exprs(v)
        if backward
        else [s.expr for s in v.forward if isinstance(s, symbolic.Assign)]
    )
    return naming.X_T in names_in(exprs)


def accumulators(v: symbolic.Variant) -> list:
    """Per-step sums kept across the backward loop, in order: vector weights, then values
    that do not change over time."""
    return [s for s in v.backward if isinstance(s, symbolic.Accumulate | symbolic.AccumulateStatic)]


def hoisted_terms(v: symbolic.Variant) -> list[dict]:
    """After the loop: how each hoisted operand's gradient reaches ``x`` and vector weights."""
    blocks = {b.name: b for b in v.blocks}
    terms, seen_x = [], False
    for g, var, value in v.hoisted_grads:
        seed = symbolic.symbol(naming.hoisted_seed(g))
        factor = value / seed  # the common case: seed times an elementwise factor
        terms.append(
            {
                "group": g,
                "var": var,
                "value": value,
                # None where the seed goes through a vector-Jacobian product
                "factor": None if seed in factor.free_symbols else factor,
                "block": blocks.get(var),
                "first_x": var == "x" and not seen_x and v.x_grad is None,
            }
        )
        seen_x = seen_x or var == "x"
    return terms


def used_vectors(v: symbolic.Variant, backward: bool = False) -> set[str]:
    """Vector blocks a forward (or backward) function reads."""
    if backward:
        return names_in(backward_exprs(v) + [f for _, _, f in v.hoisted_grads])
    names = names_in(forward_exprs(v))
    return names | {b.name for g in v.hoisted for _, bs in g.folded for b in bs}


def sliced_vectors(v: symbolic.Variant, backward: bool = False) -> list:
    """Vector blocks bound to their own name because a function reads them."""
    used = used_vectors(v, backward)
    return [b for b in v.blocks if (not b.full or b.name != b.weight) and b.name in used]


def backward_weights(v: symbolic.Variant) -> list[str]:
    """Weights a backward function reads: product weights and parents of used vectors."""
    vectors = used_vectors(v, backward=True)
    names = {g.weight for g in v.groups} | {b.weight for b in v.blocks if b.name in vectors}
    names |= {s.group.weight for s in v.static_backward if isinstance(s, symbolic.StaticVJP)}
    return [w for w, _ in v.weights if w in names]


def backward_masks(v: symbolic.Variant) -> list:
    """Dropout masks ``(name, gate, tensor)`` the backward function reads."""
    names = names_in(backward_exprs(v)) | names_in(f for _, _, f in v.hoisted_grads)
    return [m for m in v.masks if m[0] in names]


def backward_states(spec: CellSpec, v: symbolic.Variant) -> list[str]:
    names = names_in(backward_exprs(v))
    seqs = {operand_seq(spec, g) for g in v.groups}
    return [
        s
        for s in spec.states
        if s in names
        or naming.prev(s) in names
        or {naming.seq_before(s), naming.seq_after(s)} & seqs
    ]


def hoisted_t(v: symbolic.Variant, expr):
    """Inside the loop a single-product hoisted group is read as ``<name>_t``."""
    reps = {
        symbolic.symbol(g.name): symbolic.symbol(naming.at_step(g.name))
        for g in v.hoisted
        if len(g.products) == 1
    }
    expr = symbolic.symbol(expr) if isinstance(expr, str) else sp.sympify(expr)
    return expr.xreplace(reps)


def backward_reads(spec: CellSpec, v: symbolic.Variant) -> list[str]:
    """Lines binding the forward values one backward step reads."""
    names = names_in(backward_exprs(v))
    lines = []
    for s in spec.states:
        if naming.prev(s) in names:
            lines.append(f"{naming.prev(s)} = {naming.seq(s)}[t]")
        if s in names:
            lines.append(f"{s} = {naming.seq(s)}[t + 1]")
    for name, _ in v.stored:
        if name in names:
            lines.append(f"{name} = {naming.seq(name)}[t]")
    if naming.X_T in names:
        lines.append(f"{naming.X_T} = x[t]")
    return lines


def operand_seq(spec: CellSpec, g: symbolic.Group) -> str:
    """The operand of a group for every step, as an array (T, B, rows)."""
    if g.hoisted:
        return g.operand
    if g.operand in {naming.prev(s) for s in spec.states}:
        state = next(s for s in spec.states if naming.prev(s) == g.operand)
        return naming.seq_before(state)
    if g.operand in spec.states:  # this step's new state: the buffer's steps after the first
        return naming.seq_after(g.operand)
    return naming.seq(g.operand)


def first_operand(v: symbolic.Variant, g: symbolic.Group) -> bool:
    """Whether ``g`` is the first hoisted group of its operand (which computes the operand)."""
    return next(h for h in v.hoisted if h.operand == g.operand) is g


def gates(d: symbolic.Derivation, tensor: str) -> int:
    """How many per-gate dropout masks a tensor has in any variant."""
    return max((gate + 1 for v in d.variants for _, gate, t in v.masks if t == tensor), default=1)


def activation_arguments(spec: CellSpec, derivative=naming.derivative) -> list[str]:
    """Run-time activation arguments of every variant function: each option and its derivative
    (``derivative``: how a backend names it, ``<o>_grad`` or ``<o>_vjp``)."""
    out = []
    for o in spec.activation_options:
        out += [o.name, derivative(o.name)]
    return out


def signature(name: str, arguments: list[str]) -> str:
    return f"def {name}({', '.join(arguments)}):"


def vjp_target(s: symbolic.OperandVJP) -> str:
    """Where a backend writes a transpose-rule product: ``d_<state>`` itself when it is all of
    that state's gradient, else its own name."""
    return naming.adjoint(s.into_state) if s.into_state else s.target


def written_by_vjp(v: symbolic.Variant) -> set[str]:
    """States whose gradient for the step before is written by a transpose-rule product."""
    return {s.into_state for s in v.backward if isinstance(s, symbolic.OperandVJP) and s.into_state}


def count(n: int, noun: str) -> str:
    """``one array``, ``2 arrays``: for docstrings."""
    return f"one {noun}" if n == 1 else f"{n} {noun}s"
