"""The parsed spec: plain frozen data classes (see :mod:`rnngen.spec` for how they are built)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sympy as sp

from .grammar import holds
from .resolve import layout_in_force


@dataclass(frozen=True)
class Option:
    name: str
    kind: str  # "bool" | "activation"
    default: Any
    values: tuple[str, ...] = ()
    doc: str = ""


@dataclass(frozen=True)
class Layout:
    """One possible storage of a weight: its shape and, if fused, its named blocks.

    ``blocks`` is a tuple of rows; a weight split only along its last axis has one row.
    ``shape`` entries are SymPy expressions in ``units``/``input_dim``.
    """

    when: sp.Basic
    shape: tuple[sp.Expr, ...]
    blocks: tuple[tuple[str, ...], ...]

    def names(self) -> tuple[str, ...]:
        return tuple(n for row in self.blocks for n in row)


@dataclass(frozen=True)
class Weight:
    name: str
    argument: str  # <argument>_initializer / _regularizer / _constraint
    initializer: Any  # the Keras default for <argument>_initializer
    when: sp.Basic
    layouts: tuple[Layout, ...]
    block_initializers: tuple[tuple[str, sp.Basic, Any], ...] = ()
    doc: str = ""

    def layout(self, values) -> Layout | None:
        """The layout in force for these option values, or None if the weight is absent."""
        return layout_in_force(self, values)


@dataclass(frozen=True)
class Equation:
    name: str
    alternatives: tuple[tuple[sp.Basic, sp.Expr], ...]  # (when, rhs); the first that holds wins
    text: tuple[str, ...]

    def rhs(self, values) -> sp.Expr | None:
        for when, rhs in self.alternatives:
            if holds(when, values):
                return rhs
        return None

    def described(self) -> tuple[str, ...]:
        """One line per alternative, as written in the spec, with the condition it holds under:
        ``h = cand  (otherwise)``."""
        out = []
        for i, ((when, _), text) in enumerate(zip(self.alternatives, self.text, strict=True)):
            line = f"{self.name} = {text}"
            if when is not sp.true:
                line += f"  (when {condition_text(when)})"
            elif i:
                line += "  (otherwise)"
            out.append(line)
        return tuple(out)


def condition_text(cond) -> str:
    """A condition in the spec's own words: ``gated and not use_bias``."""
    if isinstance(cond, sp.Not):
        return f"not {condition_text(cond.args[0])}"
    if isinstance(cond, sp.And | sp.Or):
        word = " and " if isinstance(cond, sp.And) else " or "
        args = sorted(cond.args, key=sp.default_sort_key)
        return word.join(
            f"({condition_text(a)})" if isinstance(a, sp.And | sp.Or) else condition_text(a)
            for a in args
        )
    return str(cond)


@dataclass(frozen=True)
class CellSpec:
    name: str
    class_name: str
    reference: str | None
    doc: str
    options: tuple[Option, ...]
    weights: tuple[Weight, ...]
    states: tuple[str, ...]
    output: str
    dropout: tuple[tuple[str, str], ...]  # (tensor, rate argument)
    full_dropout: str
    equations: tuple[Equation, ...]
    source: str
    sizes: tuple[tuple[str, sp.Expr], ...]  # every vector name -> its size (first combination)
    #: per combination of boolean options (sorted (name, value) pairs): every vector's size in
    #: force under it; read through :func:`rnngen.resolve.resolve`
    combination_sizes: tuple = ()

    def option(self, name: str) -> Option:
        return next(o for o in self.options if o.name == name)

    @property
    def bool_options(self) -> tuple[Option, ...]:
        return tuple(o for o in self.options if o.kind == "bool")

    @property
    def activation_options(self) -> tuple[Option, ...]:
        return tuple(o for o in self.options if o.kind == "activation")

    def defaults(self) -> dict[str, Any]:
        return {o.name: o.default for o in self.options}

    def size(self, name: str) -> sp.Expr:
        return dict(self.sizes)[name]
