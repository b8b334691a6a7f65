"""The equation language: a whitelist over Python's ``ast``, turned into SymPy objects.

Nothing here evaluates user text: the string is parsed by ``ast.parse`` (which
runs nothing) and every node outside the whitelist is an error. Names become
real SymPy symbols, calls become functions from :mod:`rnngen.functions`, and
``a @ w`` becomes an unevaluated :class:`WeightProduct` whose right side is a weight.
"""

from __future__ import annotations

import ast
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import sympy as sp

MAX_EQUATION_CHARS = 2000
MAX_NODES = 500
MAX_EXPONENT = 16


class WeightProduct(sp.Function):
    """``WeightProduct(a, w)`` is the row-vector product ``a @ w`` with a weight ``w``."""

    nargs = 2

    def _latex(self, printer):
        a, w = self.args
        left = printer._print(a)
        if not isinstance(a, sp.Symbol):
            left = rf"\left({left}\right)"
        return rf"{left} {printer._print(w)}"


class RowReduction(sp.Function):
    """A reduction across the units (last) axis, broadcast back to the size of its argument.

    Its vector-Jacobian product is the same reduction of the adjoint (every entry of the
    result reads every entry of the argument with weight 1, or 1/n for the mean), applied by
    the derivation (:mod:`rnngen.symbolic`), never by ``sympy.diff``.
    """

    nargs = 1
    call_name: str
    np_reduce: str
    tf_reduce: str
    latex_name: str

    @classmethod
    def eval(cls, a):
        if a == 0:
            return sp.S.Zero
        return None

    def fdiff(self, argindex=1):
        raise NotImplementedError(
            f"{self.call_name}() is differentiated by the derivation's reduction rule"
        )

    def _numpycode(self, printer):
        a = printer._print(self.args[0])
        return f"(np.zeros_like({a}) + np.{self.np_reduce}({a}, axis=-1, keepdims=True))"

    def _tensorflowcode(self, printer):
        a = printer._print(self.args[0])
        return f"tf.broadcast_to(tf.{self.tf_reduce}({a}, axis=-1, keepdims=True), tf.shape({a}))"

    def _latex(self, printer, exp=None):
        call = rf"{self.latex_name}\left({printer._print(self.args[0])}\right)"
        return call if exp is None else rf"\left({call}\right)^{{{exp}}}"


class RowSum(RowReduction):
    """``sum(a)``: every entry is the sum of ``a`` across units."""

    call_name, np_reduce, tf_reduce, latex_name = "sum", "sum", "reduce_sum", r"\sum_{j}"


class RowMean(RowReduction):
    """``mean(a)``: every entry is the mean of ``a`` across units."""

    call_name, np_reduce, tf_reduce = "mean", "mean", "reduce_mean"
    latex_name = r"\operatorname{mean}_{j}"

    @classmethod
    def eval(cls, a):
        if a.is_Number:
            return a
        return None


#: spec-language reductions across the units axis, by the name an equation calls
REDUCTIONS = {"sum": RowSum, "mean": RowMean}


def _dtype_of(printer, a, b) -> str:
    """Source for the dtype of whichever argument is not a number."""
    return f"{printer.parenthesize(b if a.is_Number else a, 100)}.dtype"


class Wins(sp.Function):
    """``1`` where ``a`` wins the comparison ``op`` against ``b``, else ``0``: the derivative of
    ``max``/``min`` with respect to one argument (a step: its own derivative is zero)."""

    nargs = 2
    op: str

    def fdiff(self, argindex=1):
        return sp.S.Zero

    def _numpycode(self, printer):
        a, b = (printer._print(v) for v in self.args)
        return f"({a} {self.op} {b}).astype({_dtype_of(printer, *self.args)})"

    def _tensorflowcode(self, printer):
        a, b = (printer._print(v) for v in self.args)
        return f"tf.cast({a} {self.op} {b}, {_dtype_of(printer, *self.args)})"

    def _latex(self, printer, exp=None):
        a, b = (printer._print(v) for v in self.args)
        call = rf"\left[{a} {self.tex} {b}\right]"
        return call if exp is None else rf"\left({call}\right)^{{{exp}}}"


class _GreaterEqual(Wins):
    op, tex = ">=", r"\geq"


class _Greater(Wins):
    op, tex = ">", r">"


class _LessEqual(Wins):
    op, tex = "<=", r"\leq"


class _Less(Wins):
    op, tex = "<", r"<"


class Extremum(sp.Function):
    """``max(a, b)``/``min(a, b)`` elementwise. At a kink the derivative goes to the winning
    argument, ties to the first, as TensorFlow's gradients of ``tf.maximum``/``tf.minimum``."""

    nargs = 2
    call_name: str
    first: type[Wins]  # where the first argument wins (ties included)
    second: type[Wins]

    @classmethod
    def eval(cls, a, b):
        if a.is_Number and b.is_Number:
            return sp.Max(a, b) if cls.call_name == "max" else sp.Min(a, b)
        return None

    def fdiff(self, argindex=1):
        a, b = self.args
        return self.first(a, b) if argindex == 1 else self.second(a, b)

    def _numpycode(self, printer):
        a, b = (printer._print(v) for v in self.args)
        return f"np.{self.np_name}({a}, {b})"

    def _tensorflowcode(self, printer):
        a, b = (printer._print(v) for v in self.args)
        return f"tf.{self.np_name}({a}, {b})"

    def _latex(self, printer, exp=None):
        a, b = (printer._print(v) for v in self.args)
        call = rf"\{self.call_name}\left({a}, {b}\right)"
        return call if exp is None else rf"\left({call}\right)^{{{exp}}}"


class Maximum(Extremum):
    call_name, np_name, first, second = "max", "maximum", _GreaterEqual, _Less


class Minimum(Extremum):
    call_name, np_name, first, second = "min", "minimum", _LessEqual, _Greater


#: two-argument elementwise functions, by the name an equation calls
EXTREMA = {"max": Maximum, "min": Minimum}


@dataclass(frozen=True)
class GrammarError(Exception):
    """A problem at character ``offset`` of the parsed text."""

    offset: int
    message: str


def symbol(name: str) -> sp.Symbol:
    return sp.Symbol(name, real=True)


def check_text(text: str) -> None:
    """Reject text that cannot be an equation before parsing it."""
    if len(text) > MAX_EQUATION_CHARS:
        raise GrammarError(
            0, f"equation is {len(text)} characters long; the limit is {MAX_EQUATION_CHARS}"
        )
    for i, ch in enumerate(text):
        if ch == "#":
            raise GrammarError(i, "comments ('#') are not allowed in equations")
        if ch in "\"'\\":
            raise GrammarError(
                i, f"strings and escapes are not allowed in equations (found {ch!r})"
            )
        if ord(ch) < 32 and ch not in "\n\t":
            raise GrammarError(i, f"control character U+{ord(ch):04X} is not allowed")
        if ord(ch) > 127:
            plain = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
            hint = f" (did you mean '{plain}'?)" if plain else ""
            name = unicodedata.name(ch, "unknown")
            raise GrammarError(
                i, f"non-ASCII character {ch!r} (U+{ord(ch):04X} {name}); names must be ASCII{hint}"
            )


def _parse(text: str, forbid: bool = True) -> ast.expr:
    """Parse ``text`` as one Python expression, bounded in size.

    With ``forbid``, syntax that equations refuse (``_FORBIDDEN``) is refused anywhere in
    the tree first; a condition passes ``forbid=False`` and checks its own, smaller whitelist.
    """
    check_text(text)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise GrammarError(max((err.offset or 1) - 1, 0), f"syntax error: {err.msg}") from None
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_NODES:
        raise GrammarError(0, f"equation has more than {MAX_NODES} syntax nodes")
    # refuse forbidden syntax anywhere before interpreting names, so the message names the
    # real problem (a lambda inside an unknown call is reported as a lambda)
    for node in nodes if forbid else ():
        for kind, why in _FORBIDDEN.items():
            if isinstance(node, kind):
                raise GrammarError(getattr(node, "col_offset", 0), why)
    return tree.body


_BINOPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}

_FORBIDDEN = {
    ast.Attribute: "attribute access is not allowed",
    ast.Subscript: "subscripts are not allowed",
    ast.Lambda: "lambda is not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.Starred: "starred expressions are not allowed",
    ast.IfExp: "conditional expressions are not allowed",
    ast.Compare: "comparisons are not allowed",
    ast.BoolOp: "'and'/'or' are not allowed in equations (boolean logic belongs in 'when:' "
    "conditions)",
    ast.NamedExpr: "assignment expressions are not allowed",
    ast.JoinedStr: "strings are not allowed",
    ast.List: "lists are not allowed",
    ast.Tuple: "tuples are not allowed",
    ast.Dict: "dicts are not allowed",
    ast.Set: "sets are not allowed",
    ast.Await: "await is not allowed",
    ast.Yield: "yield is not allowed",
}


@dataclass(frozen=True)
class Vocabulary:
    """What names mean in an equation.

    ``variables``: names usable as vectors; ``weights``: names usable right of ``@``;
    ``calls``: function name -> SymPy function class (table functions and option
    activations); ``unsupported``: known functions that are refused, with why.
    """

    variables: frozenset[str]
    weights: frozenset[str]
    calls: Mapping[str, type]
    unsupported: Mapping[str, str]


def parse_equation(text: str, vocab: Vocabulary) -> sp.Expr:
    """Parse one right-hand side into a SymPy expression (raises GrammarError)."""
    return _Equation(vocab).visit(_parse(text))


class _Equation:
    def __init__(self, vocab: Vocabulary):
        self.vocab = vocab

    def visit(self, node: ast.AST) -> sp.Expr:
        off = getattr(node, "col_offset", 0)
        for kind, why in _FORBIDDEN.items():
            if isinstance(node, kind):
                raise GrammarError(off, why)
        method: Callable | None = getattr(self, f"visit_{type(node).__name__}", None)
        if method is None:
            raise GrammarError(off, f"'{type(node).__name__}' syntax is not allowed in equations")
        return method(node)

    def visit_Constant(self, node: ast.Constant) -> sp.Expr:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise GrammarError(node.col_offset, f"{type(value).__name__} constants are not allowed")
        if abs(value) > 1e6:
            raise GrammarError(node.col_offset, f"constant {value!r} is too large (limit 1e6)")
        return sp.Integer(value) if isinstance(value, int) else sp.Float(value, 17)

    def visit_Name(self, node: ast.Name) -> sp.Expr:
        name = node.id
        if name.startswith("__"):
            raise GrammarError(node.col_offset, f"dunder name '{name}' is not allowed")
        if name in self.vocab.variables:
            return symbol(name)
        if name in self.vocab.weights:
            raise GrammarError(
                node.col_offset,
                f"'{name}' is a 2-D weight: it may only appear right of '@' "
                f"(as in 'h_prev @ {name}')",
            )
        if name in self.vocab.calls or name in self.vocab.unsupported:
            raise GrammarError(node.col_offset, f"function '{name}' must be called, e.g. {name}(x)")
        from .errors import suggest

        known = self.vocab.variables | self.vocab.weights
        raise GrammarError(node.col_offset, f"unknown name '{name}'{suggest(name, known)}")

    def visit_UnaryOp(self, node: ast.UnaryOp) -> sp.Expr:
        if isinstance(node.op, ast.USub):
            return -self.visit(node.operand)
        if isinstance(node.op, ast.UAdd):
            return self.visit(node.operand)
        if isinstance(node.op, ast.Not):
            raise GrammarError(
                node.col_offset,
                "'not' is not allowed in equations (boolean logic belongs in 'when:' conditions)",
            )
        raise GrammarError(node.col_offset, f"operator '{type(node.op).__name__}' is not allowed")

    def visit_BinOp(self, node: ast.BinOp) -> sp.Expr:
        if isinstance(node.op, ast.MatMult):
            right = node.right
            if not isinstance(right, ast.Name) or right.id not in self.vocab.weights:
                what = right.id if isinstance(right, ast.Name) else ast.unparse(right)
                raise GrammarError(
                    right.col_offset,
                    f"the right side of '@' must be a weight, not '{what}'",
                )
            return WeightProduct(self.visit(node.left), symbol(right.id))
        if isinstance(node.op, ast.Pow):
            base = self.visit(node.left)
            return base ** self._exponent(node.right)
        op = _BINOPS.get(type(node.op))
        if op is None:
            raise GrammarError(
                node.col_offset, f"operator '{type(node.op).__name__}' is not allowed"
            )
        return op(self.visit(node.left), self.visit(node.right))

    def _exponent(self, node: ast.expr) -> sp.Expr:
        sign = 1
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            sign = -1 if isinstance(node.op, ast.USub) else 1
            node = node.operand
        if (
            not isinstance(node, ast.Constant)
            or isinstance(node.value, bool)
            or not isinstance(node.value, int | float)
        ):
            raise GrammarError(
                node.col_offset, "the exponent must be a number literal such as 2 or 0.5"
            )
        if abs(node.value) > MAX_EXPONENT:
            raise GrammarError(
                node.col_offset,
                f"exponent {node.value!r} is out of range (|exponent| <= {MAX_EXPONENT})",
            )
        value = node.value * sign
        return sp.Integer(value) if isinstance(value, int) else sp.nsimplify(value)

    def visit_Call(self, node: ast.Call) -> sp.Expr:
        from .errors import suggest

        if isinstance(node.func, ast.Attribute):
            raise GrammarError(node.func.col_offset, "attribute access is not allowed")
        if not isinstance(node.func, ast.Name):
            raise GrammarError(node.col_offset, "only named functions can be called")
        name = node.func.id
        if name in REDUCTIONS and self.vocab.calls:
            if node.keywords or len(node.args) != 1:
                raise GrammarError(
                    node.col_offset,
                    f"'{name}' takes exactly one argument, a vector expression "
                    f"(as in '{name}(h_prev * h_prev)'): the {name} across the units axis",
                )
            return REDUCTIONS[name](self.visit(node.args[0]))
        if name in EXTREMA and self.vocab.calls:
            if node.keywords or len(node.args) != 2:
                raise GrammarError(
                    node.col_offset,
                    f"'{name}' takes exactly two arguments of equal size "
                    f"(as in '{name}(h_prev, 0)'): the elementwise {name}imum",
                )
            return EXTREMA[name](*(self.visit(a) for a in node.args))
        if name in self.vocab.unsupported:
            raise GrammarError(
                node.col_offset,
                f"function '{name}' is not supported: {self.vocab.unsupported[name]}",
            )
        if name not in self.vocab.calls:
            raise GrammarError(
                node.col_offset,
                f"unknown function '{name}'{suggest(name, self.vocab.calls)}",
            )
        if node.keywords:
            raise GrammarError(node.col_offset, f"'{name}' takes no keyword arguments")
        if len(node.args) != 1:
            raise GrammarError(node.col_offset, f"'{name}' takes exactly one argument")
        return self.vocab.calls[name](self.visit(node.args[0]))


# -- shapes and conditions -----------------------------------------------------------------

SIZE_NAMES = ("units", "input_dim")


def parse_dimension(text) -> sp.Expr:
    """``3 * units`` -> ``3*units``: a positive multiple of units or input_dim, or an int."""
    if isinstance(text, bool):
        raise GrammarError(0, "a dimension must be 'units', 'input_dim', 'N * units' or an integer")
    if isinstance(text, int):
        if text <= 0:
            raise GrammarError(0, f"dimension {text} must be positive")
        return sp.Integer(text)
    if not isinstance(text, str):
        raise GrammarError(0, "a dimension must be 'units', 'input_dim', 'N * units' or an integer")
    vocab = Vocabulary(frozenset(SIZE_NAMES), frozenset(), {}, {})
    try:
        expr = _Equation(vocab).visit(_parse(text))
    except GrammarError as err:
        raise GrammarError(err.offset, f"invalid dimension: {err.message}") from None
    poly = sp.Poly(expr, *[symbol(n) for n in SIZE_NAMES]) if expr.free_symbols else None
    if poly is None or poly.total_degree() != 1 or len(poly.terms()) != 1:
        raise GrammarError(0, f"dimension '{text}' must be a positive integer multiple of one size")
    coeff = poly.terms()[0][1]
    if not (coeff.is_integer and coeff > 0):
        raise GrammarError(0, f"dimension '{text}' must be a positive integer multiple of one size")
    return expr


def parse_condition(text, options: frozenset[str]) -> sp.Basic:
    """``use_bias and not reset_after`` -> a SymPy boolean over option symbols."""
    if isinstance(text, bool):
        return sp.true if text else sp.false
    if not isinstance(text, str):
        raise GrammarError(0, "a condition must be a boolean option name, or and/or/not of them")
    tree = _parse(text, forbid=False)

    def visit(node):
        if isinstance(node, ast.Name):
            if node.id not in options:
                from .errors import suggest

                raise GrammarError(
                    node.col_offset,
                    f"unknown boolean option '{node.id}'{suggest(node.id, options)}",
                )
            return sp.Symbol(node.id)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return sp.Not(visit(node.operand))
        if isinstance(node, ast.BoolOp):
            parts = [visit(v) for v in node.values]
            return sp.And(*parts) if isinstance(node.op, ast.And) else sp.Or(*parts)
        raise GrammarError(
            getattr(node, "col_offset", 0),
            "a condition may only use boolean option names with and/or/not",
        )

    return visit(tree)


def holds(condition: sp.Basic, values: Mapping[str, bool]) -> bool:
    result = condition.subs({sp.Symbol(k): bool(v) for k, v in values.items()})
    return bool(result)


def matmuls(expr: sp.Basic) -> list[WeightProduct]:
    return sorted(expr.atoms(WeightProduct), key=sp.default_sort_key)
