"""The elementwise function table: every function an equation may call, as data.

Each function is written once, as a SymPy expression of its input ``u`` (a
``Piecewise`` where Keras's definition is one), with the NumPy and TensorFlow
source of its forward pass and its LaTeX name. Its derivative is ``sympy.diff``
of that expression, never written by hand.

Where the derivative can be written in terms of the function's *output*
``y = f(u)`` (tanh' = 1 - y**2), the entry states that output form as a rewrite
hint, and the backward pass reuses the forward values instead of keeping
pre-activations; ``tests/test_activations.py`` checks every hint against the
derived derivative. Where it cannot (gelu, silu, mish, ...), the derivative is
printed as a function of the input, and the derivation keeps the pre-activation.

Functions that a spec option selects at run time (``activation``,
``recurrent_activation``) are printed as calls to a local name bound at run
time, with their derivative as ``<option>_grad(y)``; a variant derived "from the
inputs" (``<option>_grad(u)``) serves the values that have no output form and
user callables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache, cached_property

import sympy as sp
from sympy.codegen.cfunctions import expm1
from sympy.printing.latex import LatexPrinter
from sympy.printing.str import StrPrinter

from .functions_torch import TORCH, TORCH_VJP
from .rowwise import ROW_WISE_TABLE, RowWise  # noqa: F401  (the table's row-wise part)

u = sp.Symbol("u", real=True)  # a function's input
y = sp.Symbol("y", real=True)  # its output


# -- primitives with stable printing -------------------------------------------------------------


class Sigmoid(sp.Function):
    """1 / (1 + exp(-a)), printed with a stable formula."""

    nargs = 1

    def fdiff(self, argindex=1):
        return self * (1 - self)

    def _eval_rewrite_as_exp(self, a, **kwargs):
        return 1 / (1 + sp.exp(-a))

    def _latex(self, printer, exp=None):
        call = rf"\sigma\left({printer._print(self.args[0])}\right)"
        return call if exp is None else rf"\left({call}\right)^{{{exp}}}"


class Softplus(sp.Function):
    """log(1 + exp(a)), printed with a stable formula."""

    nargs = 1

    def fdiff(self, argindex=1):
        return Sigmoid(self.args[0])

    def _eval_rewrite_as_exp(self, a, **kwargs):
        return sp.log(1 + sp.exp(a))

    def _latex(self, printer, exp=None):
        call = rf"\operatorname{{softplus}}\left({printer._print(self.args[0])}\right)"
        return call if exp is None else rf"\left({call}\right)^{{{exp}}}"


class _Code(StrPrinter):
    """Python source for a derivative expression: ``np.``/``tf.`` calls, ``where`` for Piecewise.

    Numbers print as Python floats (float32 arrays stay float32); a branch of a
    Piecewise that is a number keeps the dtype of the variable ``var``.
    """

    lib = "np"
    calls = {
        "tanh": "np.tanh", "exp": "np.exp", "Abs": "np.abs", "sign": "np.sign",
        "expm1": "np.expm1", "log": "np.log", "erf": "_erf",
    }  # fmt: skip

    def __init__(self, var: str):
        super().__init__({"order": "none"})
        self.var = var

    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_Rational(self, expr):
        return str(expr.p) if expr.q == 1 else repr(float(expr))

    def _print_NumberSymbol(self, expr):
        return repr(float(expr))

    _print_Pi = _print_NumberSymbol
    _print_Exp1 = _print_NumberSymbol

    def _print_Mul(self, expr):
        coeff, rest = expr.as_independent(*expr.free_symbols, as_Add=False)
        if coeff.is_number and coeff not in (1, -1) and not coeff.is_Rational and rest != 1:
            return f"{repr(float(coeff))}*{self.parenthesize(rest, 50)}"
        return super()._print_Mul(expr)

    def _print_Pow(self, expr, rational=False):
        if expr.is_number:
            return repr(float(expr))
        base, exp = expr.as_base_exp()
        if exp == sp.Rational(1, 2):
            return f"{self.lib}.sqrt({self._print(base)})"
        if exp.is_Integer and exp < 0:
            return f"1/{self.parenthesize(base**-exp, 60)}"
        power = str(exp) if exp.is_Integer else repr(float(exp))
        return f"{self.parenthesize(base, 60)}**{power}"

    def _print_Function(self, expr):
        name = type(expr).__name__
        if name not in self.calls:
            raise NotImplementedError(f"no {self.lib} spelling for {name}")
        return f"{self.calls[name]}({self._print(expr.args[0])})"

    def _print_Sigmoid(self, expr):
        return f"(0.5 + 0.5 * np.tanh(0.5 * {self.parenthesize(expr.args[0], 50)}))"

    def _print_Softplus(self, expr):
        return f"np.logaddexp(0, {self._print(expr.args[0])})"

    def _print_Max(self, expr):
        a, b = expr.args
        return f"{self.lib}.maximum({self._print(a)}, {self._print(b)})"

    def _print_Relational(self, expr):
        op = {"==": "==", "!=": "!="}.get(expr.rel_op, expr.rel_op)
        return f"({self._print(expr.lhs)} {op} {self._print(expr.rhs)})"

    def _print_And(self, expr):
        return " & ".join(self._print(a) for a in expr.args)

    def _print_Or(self, expr):
        return " | ".join(self._print(a) for a in expr.args)

    def _number(self, value):
        return f"{self.lib}.zeros_like({self.var}) + {self._print(value)}"

    def _print_Piecewise(self, expr):
        pairs = list(expr.args)
        if pairs[-1].cond != sp.true:
            raise NotImplementedError("a Piecewise needs a default branch")
        values = [v for v, _ in pairs]
        if all(v.is_number for v in values) and len(pairs) == 2 and values[1] == 0:
            ind = self._indicator(pairs[0].cond)
            return ind if values[0] == 1 else f"{self._print(values[0])} * {ind}"
        out = self._branch(values[-1])
        for v, c in reversed(pairs[:-1]):
            out = f"{self.lib}.where({self._print(c)}, {self._branch(v)}, {out})"
        return out

    def _branch(self, v):
        return self._number(v) if v.is_number else self._print(v)

    def _indicator(self, cond):
        text = self._print(cond)
        text = (
            text if text.startswith("(") and text.endswith(")") and "&" not in text else f"({text})"
        )
        return f"{text}.astype({self.var}.dtype)"


class _TfCode(_Code):
    lib = "tf"
    calls = {
        "tanh": "tf.tanh", "exp": "tf.exp", "Abs": "tf.abs", "sign": "tf.sign",
        "expm1": "tf.math.expm1", "log": "tf.math.log", "erf": "tf.math.erf",
    }  # fmt: skip

    def _print_Sigmoid(self, expr):
        return f"tf.sigmoid({self._print(expr.args[0])})"

    def _print_Softplus(self, expr):
        return f"tf.nn.softplus({self._print(expr.args[0])})"

    def _indicator(self, cond):
        return f"tf.cast({self._print(cond)}, {self.var}.dtype)"


class _TorchCode(_Code):
    lib = "torch"
    calls = {
        "tanh": "torch.tanh", "exp": "torch.exp", "Abs": "torch.abs", "sign": "torch.sign",
        "expm1": "torch.expm1", "log": "torch.log", "erf": "torch.erf",
    }  # fmt: skip

    def _print_Sigmoid(self, expr):
        return f"torch.sigmoid({self._print(expr.args[0])})"

    def _print_Softplus(self, expr):
        a = self._print(expr.args[0])
        return f"torch.logaddexp({a}, torch.zeros_like({a}))"

    def _print_Max(self, expr):
        """``torch.maximum`` takes tensors only: a number bound is a clamp."""
        a, b = expr.args
        if a.is_number or b.is_number:
            bound, value = (a, b) if a.is_number else (b, a)
            return f"torch.clamp({self._print(value)}, min={self._print(bound)})"
        return f"torch.maximum({self._print(a)}, {self._print(b)})"

    def _indicator(self, cond):
        return f"({self._print(cond)}).to({self.var}.dtype)"


@dataclass(frozen=True)
class Elementwise:
    """One elementwise function: its SymPy expression of ``u`` and its printed forms.

    ``numpy``/``tf`` are the bodies of ``def name(u)`` in the generated module.
    ``output_form``, when given, is f'(u) written in ``y = f(u)``: a rewrite hint
    the backward pass uses so that it reads the output (checked against
    ``derivative`` by the tests). ``keras`` says whether Keras's activation of that
    name is this function (``keras.activations.get(name)``).
    """

    name: str
    expr: sp.Expr
    latex: str
    numpy: str
    tf: str
    output_form: sp.Expr | None = None
    activation: bool = True  # may be chosen by an activation option
    keras: bool = True
    differentiable: bool = True
    helpers: tuple[str, ...] = field(default=())  # module-level NumPy helpers the code uses

    @cached_property
    def derivative(self) -> sp.Expr:
        """d f / d u, from SymPy."""
        return sp.diff(self.expr, u)

    @property
    def grad_from(self) -> str:
        return "output" if self.output_form is not None else "input"

    @property
    def _grad_expr(self) -> sp.Expr:
        return self.output_form if self.output_form is not None else self.derivative

    @property
    def _var(self) -> str:
        return "y" if self.output_form is not None else "u"

    @cached_property
    def grad(self) -> str:
        """NumPy body of ``def name_grad(y)`` (output form) or ``name_grad(u)``."""
        return _Code(self._var).doprint(self._grad_expr)

    @cached_property
    def tf_grad(self) -> str:
        return _TfCode(self._var).doprint(self._grad_expr)

    @property
    def torch(self) -> str:
        """PyTorch body of ``def name(u)`` (from ``functions_torch.TORCH``)."""
        return TORCH[self.name]

    @cached_property
    def torch_grad(self) -> str:
        return _TorchCode(self._var).doprint(self._grad_expr)

    @property
    def torch_vjp(self) -> str:
        """PyTorch body of ``def name_vjp(y, d)`` (or ``(u, d)``): ``d`` times the derivative,
        as one of torch's own backward kernels where it has one (``functions_torch.TORCH_VJP``)."""
        return TORCH_VJP.get(self.name, f"d * {self.name}_grad({self._var})")

    @cached_property
    def grad_latex(self) -> str:
        return LatexPrinter().doprint(self._grad_expr)


def _pw(*pairs):
    return sp.Piecewise(*pairs)


_HALF = sp.Rational(1, 2)
_SELU_ALPHA = sp.Float("1.6732632423543772848170429916717", 30)
_SELU_SCALE = sp.Float("1.0507009873554804934193349852946", 30)
_ERF = ("_erf",)

# fmt: off
_ENTRIES = [
    Elementwise("linear", u, r"\operatorname{id}", "u", "u", output_form=sp.Integer(1)),
    Elementwise("tanh", sp.tanh(u), r"\tanh", "np.tanh(u)", "tf.tanh(u)",
                output_form=1 - y**2),
    Elementwise("sigmoid", Sigmoid(u), r"\sigma", "0.5 + 0.5 * np.tanh(0.5 * u)",
                "tf.sigmoid(u)", output_form=y * (1 - y)),
    # Keras 3: hard_sigmoid(x) = relu6(x + 3) / 6
    Elementwise("hard_sigmoid", _pw((0, u <= -3), (1, u >= 3), (u / 6 + _HALF, True)),
                r"\sigma_{hard}", "np.clip(u + 3, 0, 6) / 6", "tf.nn.relu6(u + 3) / 6",
                output_form=_pw((sp.Rational(1, 6), (y > 0) & (y < 1)), (0, True))),
    Elementwise("hard_silu", _pw((0, u <= -3), (u, u >= 3), (u * (u + 3) / 6, True)),
                r"\operatorname{hard\_silu}", "u * (np.clip(u + 3, 0, 6) / 6)",
                "u * (tf.nn.relu6(u + 3) / 6)"),
    Elementwise("relu", _pw((u, u > 0), (0, True)), r"\operatorname{relu}",
                "np.maximum(u, 0)", "tf.nn.relu(u)", output_form=_pw((1, y > 0), (0, True))),
    Elementwise("relu6", _pw((0, u <= 0), (6, u >= 6), (u, True)), r"\operatorname{relu6}",
                "np.clip(u, 0, 6)", "tf.nn.relu6(u)",
                output_form=_pw((1, (y > 0) & (y < 6)), (0, True))),
    Elementwise("leaky_relu", _pw((u, u > 0), (u / 5, True)), r"\operatorname{leaky\_relu}",
                "np.where(u > 0, u, 0.2 * u)", "tf.where(u > 0, u, 0.2 * u)",
                output_form=_pw((1, y > 0), (sp.Rational(1, 5), True))),
    Elementwise("elu", _pw((u, u > 0), (sp.exp(u) - 1, True)), r"\operatorname{elu}",
                "np.where(u > 0, u, np.expm1(np.minimum(u, 0)))", "tf.nn.elu(u)",
                output_form=_pw((1, y > 0), (y + 1, True))),
    Elementwise("celu", _pw((u, u > 0), (sp.exp(u) - 1, True)), r"\operatorname{celu}",
                "np.maximum(u, 0) + np.expm1(np.minimum(u, 0))",
                "tf.maximum(u, 0.0) + tf.math.expm1(tf.minimum(u, 0.0))",
                output_form=_pw((1, y > 0), (y + 1, True))),
    Elementwise("selu", _pw((_SELU_SCALE * u, u > 0),
                            (_SELU_SCALE * _SELU_ALPHA * (sp.exp(u) - 1), True)),
                r"\operatorname{selu}",
                "1.0507009873554805 * np.where(u > 0, u, "
                "1.6732632423543772 * np.expm1(np.minimum(u, 0)))",
                "tf.nn.selu(u)",
                output_form=_pw((_SELU_SCALE, y > 0), (y + _SELU_SCALE * _SELU_ALPHA, True))),
    Elementwise("softplus", Softplus(u), r"\operatorname{softplus}", "np.logaddexp(0, u)",
                "tf.nn.softplus(u)", output_form=-expm1(-y)),
    Elementwise("softsign", u / (1 + sp.Abs(u)), r"\operatorname{softsign}",
                "u / (1 + np.abs(u))", "tf.nn.softsign(u)", output_form=(1 - sp.Abs(y)) ** 2),
    Elementwise("exponential", sp.exp(u), r"\exp", "np.exp(u)", "tf.exp(u)", output_form=y),
    Elementwise("silu", u * Sigmoid(u), r"\operatorname{silu}",
                "u * (0.5 + 0.5 * np.tanh(0.5 * u))", "tf.nn.silu(u)"),
    Elementwise("gelu", u / 2 * (1 + sp.erf(u / sp.sqrt(2))), r"\operatorname{gelu}",
                "0.5 * u * (1 + _erf(u * 0.7071067811865476))",
                # erf, not tf.nn.gelu (its float64 erfc is ~5e-9 off)
                "0.5 * u * (1 + tf.math.erf(u * 0.7071067811865476))", helpers=_ERF),
    Elementwise("mish", u * sp.tanh(Softplus(u)), r"\operatorname{mish}",
                "u * np.tanh(np.logaddexp(0, u))", "u * tf.tanh(tf.nn.softplus(u))"),
    Elementwise("hard_tanh", _pw((-1, u <= -1), (1, u >= 1), (u, True)),
                r"\operatorname{hard\_tanh}", "np.clip(u, -1, 1)",
                "tf.clip_by_value(u, -1.0, 1.0)",
                output_form=_pw((1, (y > -1) & (y < 1)), (0, True))),
    Elementwise("hard_shrink", _pw((u, sp.Abs(u) > _HALF), (0, True)),
                r"\operatorname{hard\_shrink}", "np.where(np.abs(u) > 0.5, u, 0 * u)",
                "tf.where(tf.abs(u) > 0.5, u, tf.zeros_like(u))",
                output_form=_pw((1, sp.Ne(y, 0)), (0, True))),
    Elementwise("soft_shrink", _pw((u - _HALF, u > _HALF), (u + _HALF, u < -_HALF), (0, True)),
                r"\operatorname{soft\_shrink}",
                "np.where(u > 0.5, u - 0.5, np.where(u < -0.5, u + 0.5, 0 * u))",
                "tf.where(u > 0.5, u - 0.5, tf.where(u < -0.5, u + 0.5, tf.zeros_like(u)))",
                output_form=_pw((1, sp.Ne(y, 0)), (0, True))),
    Elementwise("tanh_shrink", u - sp.tanh(u), r"\operatorname{tanh\_shrink}",
                "u - np.tanh(u)", "u - tf.tanh(u)"),
    Elementwise("log_sigmoid", -Softplus(-u), r"\log\sigma", "-np.logaddexp(0, -u)",
                "tf.math.log_sigmoid(u)", output_form=-expm1(y)),
    Elementwise("sparse_plus", _pw((0, u <= -1), (u, u >= 1), ((u + 1) ** 2 / 4, True)),
                r"\operatorname{sparse\_plus}",
                "np.where(u <= -1, 0 * u, np.where(u < 1, 0.25 * (u + 1) ** 2, u))",
                "tf.where(u <= -1, tf.zeros_like(u), tf.where(u < 1, 0.25 * tf.pow(u + 1, 2), u))",
                output_form=_pw((0, y <= 0), (1, y >= 1), (sp.sqrt(sp.Max(y, 0)), True))),
    Elementwise("sparse_sigmoid", _pw((0, u <= -1), (1, u >= 1), ((u + 1) / 2, True)),
                r"\operatorname{sparse\_sigmoid}",
                "np.where(u <= -1, 0 * u, np.where(u >= 1, 0 * u + 1, 0.5 * (u + 1)))",
                "tf.where(u <= -1, tf.zeros_like(u), tf.where(u >= 1, tf.ones_like(u), "
                "0.5 * (u + 1)))",
                output_form=_pw((_HALF, (y > 0) & (y < 1)), (0, True))),
    Elementwise("squareplus", (u + sp.sqrt(u**2 + 4)) / 2, r"\operatorname{squareplus}",
                "(u + np.sqrt(u * u + 4)) / 2", "(u + tf.sqrt(tf.square(u) + 4)) / 2",
                output_form=y**2 / (y**2 + 1)),
    # not activations: functions an equation may call
    Elementwise("exp", sp.exp(u), r"\exp", "np.exp(u)", "tf.exp(u)", output_form=y,
                activation=False, keras=False),
    Elementwise("abs", sp.Abs(u), r"\operatorname{abs}", "np.abs(u)", "tf.abs(u)",
                activation=False, keras=False),
    # domain a >= 0 (the derivative is infinite at 0, as in TF); log: a > 0
    Elementwise("sqrt", sp.sqrt(u), r"\sqrt", "np.sqrt(u)", "tf.sqrt(u)",
                output_form=1 / (2 * y), activation=False, keras=False),
    Elementwise("log", sp.log(u), r"\log", "np.log(u)", "tf.math.log(u)",
                output_form=sp.exp(-y), activation=False, keras=False),
]
# fmt: on
TABLE: dict[str, Elementwise] = {e.name: e for e in _ENTRIES}

#: Spellings accepted for an activation option, as Keras accepts them.
ALIASES = {None: "linear", "None": "linear", "swish": "silu", "hard_swish": "hard_silu"}

#: Keras activations that take a whole row (the units axis), not one value at a time.
ROW_WISE = ("softmax", "log_softmax", "sparsemax", "glu")

#: Keras activations a name alone cannot configure.
NEEDS_ARGUMENTS = {
    "threshold": "keras.activations.threshold(x, threshold, default_value) has no defaults "
    "for its arguments, so the name alone cannot be called (Keras's own layers fail too); "
    "pass a callable, e.g. lambda x: keras.activations.threshold(x, 0.0, 0.0)",
}

#: Functions a spec may name that exist but cannot be used, with the reason.
UNSUPPORTED = {
    "sign": "its derivative is zero almost everywhere and undefined at 0",
    "round": "it is not differentiable",
    "floor": "it is not differentiable",
    "ceil": "it is not differentiable",
    **{
        n: "it works across the units axis (a row), not elementwise; row-wise "
        "functions are not supported yet"
        for n in ROW_WISE
        if n not in ("softmax", "log_softmax", "sparsemax")
    },
    **NEEDS_ARGUMENTS,
}

ACTIVATIONS = tuple(sorted(n for n, e in TABLE.items() if e.activation))


#: Keras activation names rnngen refuses as an option value, with why (printed into the
#: generated modules for their error messages).
REFUSED = {
    **{n: "row-wise (it works across the units axis); not supported yet" for n in ROW_WISE},
    "threshold": "it needs threshold= and default_value=; pass a callable",
}


def why_not_activation(name) -> str:
    """Why ``name`` is not an activation this table has (for error messages)."""
    if name in REFUSED:
        return f"{name!r}: {REFUSED[name]}"
    return f"unknown activation {name!r}"


class _Printed(sp.Function):
    """A one-argument function printed as ``call_name(arg)`` in code and ``latex_name`` in LaTeX."""

    call_name: str
    latex_name: str
    nargs = 1

    def _numpycode(self, printer):
        return f"{self.call_name}({printer._print(self.args[0])})"

    _tensorflowcode = _numpycode
    _torchcode = _numpycode
    _pythoncode = _numpycode

    def _latex(self, printer, exp=None):
        """``f(a)``; as the base of a power (``exp`` given, by SymPy's Pow printer):
        ``(f(a))^{e}``."""
        call = rf"{self.latex_name}\left({printer._print(self.args[0])}\right)"
        return call if exp is None else rf"\left({call}\right)^{{{exp}}}"


class _Call(_Printed):
    """Base of the SymPy function classes made from the table."""

    entry: Elementwise
    from_input: bool = False  # derivative printed as <name>_grad(u) whatever the entry says

    def fdiff(self, argindex=1):
        if argindex != 1:
            raise sp.ArgumentIndexError(self, argindex)
        grad = grad_function(self.call_name, self.entry.name)
        if self.from_input:
            return grad(self.args[0])
        # an option's function is chosen at run time: the variant that is not the input-form
        # twin runs only when every chosen value has an output form, whatever the default's is
        if self.entry.grad_from == "output" or self.call_name != self.entry.name:
            return grad(self)
        return grad(self.args[0])


class _Grad(_Printed):
    """Derivative of a table function, as a function of its output (or input)."""


@cache
def grad_function(call_name: str, entry_name: str) -> type[_Grad]:
    entry = TABLE[entry_name]
    latex = rf"{_latex_of(call_name, entry)}'"
    return type(
        f"{call_name}_grad", (_Grad,), {"call_name": f"{call_name}_grad", "latex_name": latex}
    )


def _latex_of(call_name: str, entry: Elementwise) -> str:
    if call_name == entry.name:
        return entry.latex
    return rf"\operatorname{{{call_name}}}".replace("_", r"\_")


def function(call_name: str, entry_name: str, from_input: bool = False) -> type[_Call]:
    """The SymPy function class printed as ``call_name(u)``, behaving as ``entry_name``.

    ``call_name`` is an option name (``activation``) for a function chosen at run
    time, or the table name itself for a fixed one. For an option, ``entry_name``
    is the default activation: it fixes how the function behaves symbolically.
    ``from_input`` makes the derivative read the input (``<option>_grad(u)``), for
    run-time values that have no output form.
    """
    return _function(call_name, entry_name, bool(from_input))


@cache
def _function(call_name: str, entry_name: str, from_input: bool) -> type[_Call]:
    entry = TABLE[entry_name]
    return type(
        call_name,
        (_Call,),
        {
            "entry": entry,
            "call_name": call_name,
            "latex_name": _latex_of(call_name, entry),
            "from_input": from_input,
        },
    )


def from_input(expr: sp.Expr, option_names) -> sp.Expr:
    """``expr`` with every call of an option activation differentiated from its input."""
    names = set(option_names)

    def hit(e):
        return isinstance(e, _Call) and e.call_name in names and not e.from_input

    def swap(e):
        return function(e.call_name, e.entry.name, True)(*e.args)

    return expr.replace(hit, swap)


def resolve_activation(name):
    """Canonical table name for an activation spelling, or None if unknown."""
    if not isinstance(name, str | type(None)):
        return None
    name = ALIASES.get(name, name)
    return name if name in TABLE and TABLE[name].activation else None


# the PyTorch module's activation options are elementwise (<option>_vjp(y, d) is d * f'(y))
REFUSED |= dict.fromkeys(
    ROW_WISE_TABLE, "row-wise: PyTorch activation options take elementwise functions only"
)

#: what the NumPy and TensorFlow layers refuse at run time: they take the row-wise activations
#: (through ``<option>_vjp``), which the PyTorch module and spec ``values:`` lists do not
REFUSED_AT_RUN_TIME = {n: why for n, why in REFUSED.items() if n not in ROW_WISE_TABLE}


class _VJP(sp.Function):
    """``<option>_vjp(a, d)``: the gradient through a run-time activation, given the gradient
    ``d`` of its output; ``a`` is its output (or, in the input-form variant, its input)."""

    call_name: str
    nargs = 2

    def _numpycode(self, printer):
        a, d = (printer._print(x) for x in self.args)
        return f"{self.call_name}_vjp({a}, {d})"

    _tensorflowcode = _numpycode
    _torchcode = _numpycode

    def _latex(self, printer, exp=None):
        a, d = (printer._print(x) for x in self.args)
        name = rf"\operatorname{{{self.call_name}}}".replace("_", r"\_")
        return rf"\left(\partial {name}\left({a}\right)\right)^{{\top}} {d}"


@cache
def vjp_function(call_name: str) -> type[_VJP]:
    """The vector-Jacobian product of the run-time activation option ``call_name``."""
    return type(f"{call_name}_vjp", (_VJP,), {"call_name": call_name})


def is_option_call(expr) -> bool:
    """Whether ``expr`` calls a function an activation option chooses at run time."""
    return isinstance(expr, _Call) and expr.call_name != expr.entry.name


class _RowCall(_Printed):
    """A row-wise table function (softmax) called in an equation: ``softmax(a)``. It has no
    elementwise derivative; the backward pass calls its vector-Jacobian product."""

    def fdiff(self, argindex=1):
        raise TypeError(f"{self.call_name} works across a row: differentiate it by its VJP")


class _RowVJP(_VJP):
    """``softmax_vjp(y, d)``: the gradient through a row-wise function called in an equation
    (every backend defines it, PyTorch included)."""


@cache
def row_function(name: str) -> type[_RowCall]:
    latex = rf"\operatorname{{{name}}}".replace("_", r"\_")
    return type(name, (_RowCall,), {"call_name": name, "latex_name": latex})


@cache
def row_vjp_function(name: str) -> type[_RowVJP]:
    return type(f"{name}_vjp", (_RowVJP,), {"call_name": name})


def is_call(expr) -> bool:
    """Whether ``expr`` calls a table function, elementwise or row-wise."""
    return isinstance(expr, _Call | _RowCall)
