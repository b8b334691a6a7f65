"""Options resolved once: which weights exist, the layout in force, where every block lives.

A spec's weights may depend on its boolean options twice over: a weight exists only
when its ``when`` holds, and its storage is the first of its ``layouts`` whose ``when``
holds. Every later stage asks the same questions for one combination of options: is
this block present, is it a vector, which rows and columns of which weight hold it,
what gate is it, what size does a product with it have. :func:`resolve` answers them
all, once, as plain frozen data. The parser's size checks (:mod:`rnngen.spec_equations`),
the derivation (:mod:`rnngen.symbolic`), codegen and the templates (initializer overrides,
``input_dim`` sources) and the verifier's interpreter read it.

Sizes are SymPy expressions in the symbols ``units`` and ``input_dim``. A weight's
shape is one or two of them (``[input_dim, 3 * units]``); a *stacked* layout has
shape ``[rows, N * units]`` and one row of blocks per entry of axis 0.

Usage (the verifier's interpreter, a test, a backend)::

    r = resolve(spec, {"reset_after": False})     # missing boolean options take defaults
    for w in r.weights:                            # present weights, spec order
        for b in w.blocks:                         # b.row, b.start, b.stop, b.shape, b.gate
            value = arrays[w.name][b.index(units, input_dim)]
    r.absent                                       # names that read as zero
    r.size("hh"), dict(r.equations)["hh"]          # sizes and right sides in force

This module reads the spec's data classes but does not import them at run time
(:mod:`rnngen.spec_types` imports it), so there is no import cycle.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sympy as sp

from .grammar import holds

__all__ = [
    "Block",
    "Resolved",
    "ResolvedWeight",
    "layout_blocks",
    "layout_conditions",
    "layout_in_force",
    "placements",
    "resolve",
    "resolve_weights",
]

if TYPE_CHECKING:  # pragma: no cover - types only
    from .spec_types import CellSpec, Layout, Weight


@dataclass(frozen=True)
class Block:
    """One named block of a weight, as stored under the layout in force.

    The block is ``weight[row, start:stop]`` for a stacked layout (``row`` is an int),
    else ``weight[..., start:stop]`` (``row`` is None). ``shape`` is the block's own
    shape: ``(rows, cols)`` for a matrix block, where ``rows`` is the weight's axis 0
    (``input_dim`` or ``units``) and ``cols = stop - start``; ``(cols,)`` for a vector
    block (a 1-D weight, or one row of a stacked weight). ``gate`` is the block's
    position in its row (0 for an unfused weight): the index of its per-gate dropout
    mask. ``full`` is true when the block is the whole weight (an unfused weight).
    """

    name: str
    weight: str
    row: int | None
    start: sp.Expr
    stop: sp.Expr
    full: bool
    gate: int
    shape: tuple[sp.Expr, ...]

    @property
    def vector(self) -> bool:
        """True for a 1-D block, used elementwise; False for a matrix, used right of ``@``."""
        return len(self.shape) == 1

    @property
    def size(self) -> sp.Expr:
        """Columns: the size of the vector, or of the product ``a @ block``."""
        return self.shape[-1]

    @property
    def rows(self) -> sp.Expr | None:
        """Rows of a matrix block: the size the left side of ``a @ block`` must have."""
        return None if self.vector else self.shape[0]

    def index(self, units: int, input_dim: int) -> tuple:
        """The NumPy/TF index of this block in its weight array, for concrete sizes.

        ``weight[block.index(U, D)]`` is the block: ``(row, slice(start, stop))`` for a
        stacked layout, ``(Ellipsis, slice(start, stop))`` for a part of the last axis,
        ``(Ellipsis,)`` for a block that is the whole weight.
        """
        if self.full:
            return (Ellipsis,)
        sizes = {sp.Symbol("units", real=True): units, sp.Symbol("input_dim", real=True): input_dim}
        cols = slice(
            int(sp.sympify(self.start).subs(sizes)), int(sp.sympify(self.stop).subs(sizes))
        )
        return (self.row, cols) if self.row is not None else (Ellipsis, cols)


@dataclass(frozen=True)
class ResolvedWeight:
    """A weight present under some options: its layout in force and its blocks, in order."""

    name: str
    layout: Layout
    blocks: tuple[Block, ...]

    @property
    def shape(self) -> tuple[sp.Expr, ...]:
        return self.layout.shape

    def covers(self, stop: sp.Expr) -> bool:
        """True when columns ``0:stop`` of a one-row layout are the whole weight."""
        return len(self.layout.blocks) == 1 and sp.simplify(self.shape[-1] - stop) == 0


@dataclass(frozen=True)
class Resolved:
    """A spec under one combination of boolean options.

    ``options``: every boolean option of the spec and its value. ``weights``: the weights
    present, in the spec's order. ``absent``: every weight and block name the spec
    declares (in any layout) that is not present under these options; it reads as zero.
    ``equations``: each step equation's right side in force (None when no alternative
    applies). ``sizes``: the size of every vector name (``x``, ``<state>_prev``, vector
    blocks, equations) under these options; an equation's size may depend on them.
    """

    options: tuple[tuple[str, bool], ...]
    weights: tuple[ResolvedWeight, ...]
    absent: frozenset[str]
    equations: tuple[tuple[str, sp.Expr | None], ...] = ()
    sizes: tuple[tuple[str, sp.Expr], ...] = ()

    def size(self, name: str) -> sp.Expr | None:
        """The size of vector ``name`` under these options (None if it has none)."""
        return dict(self.sizes).get(name)

    @property
    def blocks(self) -> tuple[Block, ...]:
        """Every present block, weight by weight, row by row."""
        return tuple(b for w in self.weights for b in w.blocks)

    def block(self, name: str) -> Block | None:
        """The present block called ``name`` (an unfused weight is its own block), or None."""
        return next((b for b in self.blocks if b.name == name), None)

    def weight(self, name: str) -> ResolvedWeight | None:
        return next((w for w in self.weights if w.name == name), None)

    @property
    def present(self) -> frozenset[str]:
        """Names of the present blocks."""
        return frozenset(b.name for b in self.blocks)

    @property
    def vectors(self) -> frozenset[str]:
        """Names of the present vector blocks."""
        return frozenset(b.name for b in self.blocks if b.vector)


def layout_in_force(weight: Weight, options: Mapping[str, bool]) -> Layout | None:
    """The first layout of ``weight`` whose ``when`` holds, or None if the weight is absent."""
    if not holds(weight.when, options):
        return None
    return next((lay for lay in weight.layouts if holds(lay.when, options)), None)


def layout_blocks(weight: str, layout: Layout) -> tuple[Block, ...]:
    """The blocks of ``weight`` stored with ``layout``, with positions and shapes.

    The last axis is split into equal parts, one per block of a row: for shape
    ``[input_dim, 3 * units]`` and blocks ``[k_z, k_r, k_h]`` each block has shape
    ``(input_dim, units)`` and columns ``0:units``, ``units:2*units``, ``2*units:3*units``.
    """
    stacked = len(layout.blocks) > 1
    cols = layout.shape[-1] / len(layout.blocks[0])
    shape = (cols,) if stacked else (*layout.shape[:-1], cols)
    return tuple(
        Block(
            name,
            weight,
            r if stacked else None,
            cols * c,
            cols * (c + 1),
            not stacked and len(row) == 1,
            c,
            shape,
        )
        for r, row in enumerate(layout.blocks)
        for c, name in enumerate(row)
    )


def declared_names(weights: Iterable[Weight]) -> frozenset[str]:
    """Every weight and block name the weights declare, in any layout."""
    return frozenset(
        n for w in weights for n in (w.name, *(n for lay in w.layouts for n in lay.names()))
    )


def resolve_weights(
    weights: Iterable[Weight], options: Mapping[str, bool]
) -> tuple[tuple[ResolvedWeight, ...], frozenset[str]]:
    """(present weights with their layout in force, absent names) for these option values.

    ``options`` must give every boolean option the conditions name. Used by the parser
    before a :class:`~rnngen.spec.CellSpec` exists; later stages call :func:`resolve`.
    """
    weights = tuple(weights)
    present = []
    for w in weights:
        lay = layout_in_force(w, options)
        if lay is not None:
            present.append(ResolvedWeight(w.name, lay, layout_blocks(w.name, lay)))
    names = {b.name for w in present for b in w.blocks} | {w.name for w in present}
    return tuple(present), declared_names(weights) - names


def resolve(spec: CellSpec, options: Mapping[str, object] | None = None) -> Resolved:
    """Resolve ``spec`` for one combination of boolean options.

    ``options`` maps option names to values; boolean options it leaves out take their
    defaults, and activation options are ignored (they change no weight). An unknown
    option name is a ValueError.
    """
    options = dict(options or {})
    known = {o.name for o in spec.options}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for spec '{spec.name}'; known: {sorted(known)}"
        )
    values = {o.name: bool(options.get(o.name, o.default)) for o in spec.bool_options}
    weights, absent = resolve_weights(spec.weights, values)
    equations = tuple((eq.name, eq.rhs(values)) for eq in spec.equations)
    in_force = dict(spec.combination_sizes).get(tuple(sorted(values.items())))
    sizes = in_force if in_force is not None else spec.sizes
    return Resolved(tuple(values.items()), weights, absent, equations, tuple(sizes))


def layout_conditions(weight: Weight) -> tuple[tuple[sp.Basic, Layout], ...]:
    """Each layout of ``weight`` with exactly when it is in force, given the weight is present.

    A layout is in force when its ``when`` holds and no earlier layout's does; the
    condition is a SymPy boolean over the option symbols (``sympy.true`` for a layout
    always in force). Generated code that picks a layout at run time branches on these;
    a layout whose condition is false can never be in force and is left out.
    """
    out = []
    earlier: list[sp.Basic] = []
    for lay in weight.layouts:
        cond = sp.And(lay.when, *(sp.Not(e) for e in earlier))
        if cond.free_symbols:
            cond = sp.simplify_logic(cond)
        if cond is not sp.false:
            out.append((cond, lay))
        earlier.append(lay.when)
    return tuple(out)


def placements(weight: Weight, block: str) -> tuple[tuple[sp.Basic, Block], ...]:
    """Where ``block`` lives under each layout of ``weight`` that can hold it.

    Each entry is (condition, block) with the condition of :func:`layout_conditions`
    (the weight is assumed present). Generated code that must place a block without
    knowing the options, such as an initializer override, branches on these.
    """
    return tuple(
        (cond, next(b for b in layout_blocks(weight.name, lay) if b.name == block))
        for cond, lay in layout_conditions(weight)
        if block in lay.names()
    )
