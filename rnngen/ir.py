"""The derivation's IR: one step of a cell as a small program over named vectors.

Statements are plain frozen dataclasses holding SymPy expressions. Each backend prints them
with one ``_print_<Statement>`` method (see :mod:`rnngen.printers`).

Forward statements: :class:`Assign`, :class:`GroupProduct`. Backward (one step, in the
loop): :class:`Assign`, :class:`StoreAdjoint`, :class:`OperandVJP`, :class:`Accumulate`,
:class:`AccumulateStatic`. After the loop: :class:`Reduce`, and for values of the weights
alone :class:`StaticVJP` and :class:`StaticGrad`.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .resolve import Block
from .spec import CellSpec, Layout


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
    # (group, variable, value): a hoisted operand's gradient reaches ``x`` or a vector weight
    # as ``value``, an expression of the operand's gradient ``naming.hoisted_seed(group)``
    # (``seed * d operand / d variable`` where the operand is elementwise), over all steps
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
