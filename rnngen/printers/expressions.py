"""Expression printers: SymPy expressions as NumPy, TensorFlow and LaTeX source.

Table functions print themselves (``_numpycode``, ``_tensorflowcode``, ``_latex`` in
:mod:`rnngen.functions`); the statement printers of each backend subclass these.
"""

from __future__ import annotations

import sympy as sp
from sympy.printing.latex import LatexPrinter
from sympy.printing.numpy import NumPyPrinter

from .. import grammar, symbolic


class NumpyCode(NumPyPrinter):
    """NumPy printer whose numbers stay Python scalars, so float32 arrays stay float32."""

    _default_settings = {**NumPyPrinter._default_settings, "fully_qualified_modules": False}

    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_Rational(self, expr):
        return repr(float(expr)) if expr.q != 1 else str(expr.p)

    def _print_Pow(self, expr, rational=False):
        """Python's ``**`` for every constant exponent (never ``sqrt``, which is unbound)."""
        base, exp = expr.as_base_exp()
        if exp.is_Integer and exp < 0:
            return f"1/{self.parenthesize(base**-exp, 60)}"
        power = str(exp) if exp.is_Integer else repr(float(exp))
        if exp.is_negative:
            power = f"({power})"
        return f"{self.parenthesize(base, 60)}**{power}"


class TensorflowCode(NumpyCode):
    """TensorFlow source: the same arithmetic; table functions print their TF names.

    (SymPy's own TensorflowPrinter imports TensorFlow; printing must not.)
    """

    printmethod = "_tensorflowcode"

    def __init__(self, settings=None):
        super().__init__(settings)
        self.printmethod = "_tensorflowcode"  # NumPyPrinter sets its own in __init__


def py(expr) -> str:
    """NumPy source for an expression (spaces around + and -)."""
    if isinstance(expr, str):
        return expr
    return NumpyCode().doprint(sp.sympify(expr))


def tfpy(expr) -> str:
    if isinstance(expr, str):
        return expr
    return TensorflowCode().doprint(sp.sympify(expr))


def pyfactor(expr) -> str:
    """NumPy source for the right operand of ``*``: parenthesized when it is a sum."""
    expr = sp.sympify(expr)
    return f"({py(expr)})" if isinstance(expr, sp.Add) else py(expr)


def tfpyfactor(expr) -> str:
    expr = sp.sympify(expr)
    return f"({tfpy(expr)})" if isinstance(expr, sp.Add) else tfpy(expr)


def tex(expr, names: dict | None = None) -> str:
    """LaTeX for an expression; ``names`` maps symbol names to LaTeX (``h_prev`` -> ``h_{t-1}``,
    a weight product -> ``h_{t-1} U``), and any other name prints as an identifier."""
    expr = sp.sympify(expr)
    names = names or {}
    symbol_names = {s: names.get(str(s)) or tex_ident(str(s)) for s in expr.free_symbols}
    return LatexPrinter({"symbol_names": symbol_names, "mul_symbol": "dot"}).doprint(expr)


def tex_ident(name: str) -> str:
    """An identifier: one letter in italics; a one-letter suffix (a gate) as a subscript (one
    level: ``tanh_b_e`` is ``\\mathrm{tanh\\_b}_{e}``, never a double subscript)."""
    if len(name) == 1:
        return name
    base, _, last = name.rpartition("_")
    if base and len(last) == 1:
        head = base if len(base) == 1 else rf"\mathrm{{{base}}}".replace("_", r"\_")
        return rf"{head}_{{{last}}}"
    return rf"\mathrm{{{name}}}".replace("_", r"\_")


def tex_products(v: symbolic.Variant, names: dict | None = None) -> dict[str, str]:
    """LaTeX for a variant's product symbols and operands: the product itself, ``h_{t-1} U_z``."""
    out: dict[str, str] = {}
    for g in v.groups + v.static_groups:
        operand = tex(g.operand_expr, names)
        if not isinstance(g.operand_expr, sp.Symbol):
            operand = rf"\left({operand}\right)"
        out[g.operand] = operand
        for p, b in g.products:
            out[p] = rf"{operand} \, {tex_ident(b.name)}"
        weight = tex_ident(g.weight)
        if not g.full:
            weight = rf"{weight}[{tex(g.start)}:{tex(g.stop)}]"
        out[g.name] = rf"{operand} \, {weight}"
    return out


class TorchCode(NumpyCode):
    """PyTorch source: the same arithmetic; table functions print as calls of the module's own
    functions (``_torchcode``), and the spec language's reductions and extrema print as torch
    calls here (their classes in :mod:`rnngen.grammar` know NumPy and TF only)."""

    printmethod = "_torchcode"

    def __init__(self, settings=None):
        super().__init__(settings)
        self.printmethod = "_torchcode"

    def _print_Function(self, expr):
        """SymPy dispatches a ``Function`` subclass on its own name only, so the spec
        language's reductions, extrema and their derivatives are recognised here."""
        for cls, method in (
            (grammar.RowReduction, self._row_reduction),
            (grammar.Wins, self._wins),
            (grammar.Extremum, self._extremum),
        ):
            if isinstance(expr, cls):
                return method(expr)
        return super()._print_Function(expr)

    def _row_reduction(self, expr):
        a = self._print(expr.args[0])
        return f"torch.{expr.np_reduce}({a}, -1, keepdim=True).expand_as({a})"

    def _wins(self, expr):
        a, b = expr.args
        tensor = b if a.is_Number else a
        return (
            f"({self._print(a)} {expr.op} {self._print(b)})"
            f".to({self.parenthesize(tensor, 100)}.dtype)"
        )

    def _extremum(self, expr):
        a, b = expr.args
        if a.is_Number or b.is_Number:  # torch.maximum takes tensors only
            bound, value = (a, b) if a.is_Number else (b, a)
            side = "min" if expr.call_name == "max" else "max"
            return f"torch.clamp({self._print(value)}, {side}={self._print(bound)})"
        return f"torch.{expr.np_name}({self._print(a)}, {self._print(b)})"
