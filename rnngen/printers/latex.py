"""The derivation document's printer: each IR statement as one line of an ``aligned`` block.

Every name's LaTeX comes from what the IR says it is (a state before the step, the gradient of
a value, the part of a gradient that comes back through a weight), never from its spelling.
"""

from __future__ import annotations

import sympy as sp
from sympy.printing.latex import LatexPrinter

from .. import naming, symbolic
from ..spec import CellSpec
from .expressions import tex_ident, tex_products


class DerivationPrinter(LatexPrinter):
    """LaTeX for one variant: ``forward``, ``backward``, ``after_loop`` ... give the lines of
    each ``aligned`` block of ``templates/derivation.md.j2``."""

    def __init__(self, spec: CellSpec, variant: symbolic.Variant):
        self.spec = spec
        self.variant = variant
        self.names = tex_names(spec, variant)
        symbols = {}  # filled per expression (SymPy wants Symbol keys)
        super().__init__({"symbol_names": symbols, "mul_symbol": "dot"})
        self._symbol_names = symbols

    # -- names and expressions -----------------------------------------------------------------

    def name(self, name: str) -> str:
        return self.names.get(name) or tex_ident(name)

    def gradient(self, value: str) -> str:
        """LaTeX for the gradient of ``value``."""
        return self.name(naming.adjoint(value))

    def tex(self, expr) -> str:
        expr = sp.sympify(expr)
        self._symbol_names.clear()
        self._symbol_names.update({s: self.name(s.name) for s in expr.free_symbols})
        return self.doprint(expr)

    def weight(self, g) -> str:
        w = tex_ident(g.weight)
        return w if g.full else rf"{w}[{self.tex(g.start)}:{self.tex(g.stop)}]"

    # -- statements ------------------------------------------------------------------------------

    def _print_Assign(self, s: symbolic.Assign) -> str:
        line = rf"{self.name(s.target)} &= {self.tex(s.expr)}"
        if self.with_comments and s.comment:
            line += rf" && \text{{({s.comment})}}"
        return line + r" \\"

    def _print_GroupProduct(self, s: symbolic.GroupProduct) -> str:
        g = s.group
        operand = self.tex(g.operand_expr)
        return "\n".join(
            rf"{self.names[p]} &\leftarrow {operand} \, {tex_ident(b.name)} \\"
            for p, b in g.products
        )

    def _print_StoreAdjoint(self, s: symbolic.StoreAdjoint) -> str:
        return "\n".join(
            rf"\delta\left({self.names[p]}\right) &= {self.tex(value)} \\"
            for (p, _), value in zip(s.group.products, s.values, strict=True)
        )

    def _print_OperandVJP(self, s: symbolic.OperandVJP) -> str:
        g = s.group
        return (
            rf"{self.name(s.target)} &= \delta\left({self.names[g.name]}\right) \, "
            rf"{self.weight(g)}^\top && \text{{(transpose rule)}} \\"
        )

    def _print_Accumulate(self, s: symbolic.Accumulate) -> str:
        return (
            rf"\delta {tex_ident(s.block.name)} &\mathrel{{+}}= "
            rf"\textstyle\sum_{{\text{{batch}}}} {self.tex(s.expr)} \\"
        )

    def _print_AccumulateStatic(self, s: symbolic.AccumulateStatic) -> str:
        return (
            rf"\delta {self.name(s.name)} &\mathrel{{+}}= \textstyle\sum_{{\text{{batch}}}} "
            rf"{self.tex(s.expr)} && \text{{(summed over steps)}} \\"
        )

    def _print_StaticVJP(self, s: symbolic.StaticVJP) -> str:
        block, product = tex_ident(s.block.name), self.names[s.product]
        return (
            rf"\delta {block} &\mathrel{{+}}= {self.names[s.group.operand]}^\top \, "
            rf"\delta\left({product}\right) \\"
            "\n"
            rf"{self.name(s.target)} &= \delta\left({product}\right) \, {block}^\top"
            r" && \text{(transpose rule)} \\"
        )

    def _print_StaticGrad(self, s: symbolic.StaticGrad) -> str:
        return rf"\delta {tex_ident(s.block.name)} &\mathrel{{+}}= {self.tex(s.expr)} \\"

    def _print_Reduce(self, r: symbolic.Reduce) -> str:
        return (
            rf"\delta {tex_ident(r.block.name)} &\mathrel{{+}}= "
            rf"\textstyle\sum_{{t,\,\text{{batch}}}} \delta\left({self.names[r.product]}\right) \\"
        )

    def lines(self, statements, with_comments: bool = False) -> str:
        self.with_comments = with_comments
        return "\n".join(filter(None, (self._print(s) for s in statements)))

    # -- the blocks of the document --------------------------------------------------------------

    def hoisted(self) -> str:
        """Before the loop: each hoisted product, with the biases folded into it."""
        out = []
        for g in self.variant.hoisted:
            folded = dict(g.folded)
            for p, b in g.products:
                biases = "".join(f" + {tex_ident(fb.name)}" for fb in folded.get(p, ()))
                operand = self.tex(g.operand_expr)
                out.append(
                    rf"{self.names[p]} &\leftarrow {operand} \, {tex_ident(b.name)}{biases} \\"
                )
        return "\n".join(out)

    def prelude(self) -> str:
        return self.lines(self.variant.prelude)

    def forward(self) -> str:
        assigns = [s for s in self.variant.forward if isinstance(s, symbolic.Assign)]
        return self.lines(assigns, with_comments=True)

    def backward(self) -> str:
        v = self.variant
        lines = [self.lines(v.backward)] if v.backward else []
        for state, expr in v.state_grads:
            lines.append(rf"\delta {self.name(naming.prev(state))} &= {self.tex(expr)} \\")
        return "\n".join(lines)

    def after_loop(self) -> str:
        out = []
        for g in self.variant.groups:
            out.append(
                rf"\delta {self.weight(g)} &\mathrel{{+}}= \textstyle\sum_t "
                rf"\left({self.names[g.operand]}\right)^\top "
                rf"\delta\left({self.names[g.name]}\right) \\"
            )
        if self.variant.reductions:
            out.append(self.lines(self.variant.reductions))
        return "\n".join(out)

    def static_backward(self) -> str:
        return self.lines(self.variant.static_backward)


def tex_names(spec: CellSpec, v: symbolic.Variant) -> dict[str, str]:
    """LaTeX for every name a variant's program reads or writes that is not a plain identifier:
    states before the step, gradients (by what they are the gradient of), products."""
    names: dict[str, str] = {}
    for s in spec.states:
        names[naming.prev(s)] = _prev(tex_ident(s))
    names |= tex_products(v, names)

    def gradient(of: str, pre: bool = False) -> str:
        inner = names.get(of) or tex_ident(of)
        if " " in inner:  # a product
            inner = rf"\left({inner}\right)"
        return rf"\delta {inner}^{{\mathrm{{pre}}}}" if pre else rf"\delta {inner}"

    for s in spec.states:
        names[naming.adjoint(s)] = gradient(s)
        names[naming.adjoint(naming.prev(s))] = gradient(naming.prev(s))
    names[naming.adjoint(spec.output)] = gradient(spec.output)
    for s in v.backward + v.static_backward:
        if isinstance(s, symbolic.Assign) and s.gradient_of:
            names[s.target] = gradient(s.gradient_of, s.pre)
        elif isinstance(s, symbolic.OperandVJP):
            names[s.target] = rf"\delta {names.get(s.group.operand) or tex_ident(s.group.operand)}"
            names[s.target] += rf"^{{({tex_ident(s.group.weight)})}}"
        elif isinstance(s, symbolic.StaticVJP):
            operand = names.get(s.group.operand) or tex_ident(s.group.operand)
            names[s.target] = rf"\delta {operand}^{{({tex_ident(s.block.name)})}}"
        elif isinstance(s, symbolic.AccumulateStatic):
            names[naming.adjoint(s.name)] = gradient(s.name)
    return names


def _prev(ident: str) -> str:
    return f"{{{ident}}}_{{t-1}}" if "_{" in ident else f"{ident}_{{t-1}}"
