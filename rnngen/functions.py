"""The elementwise function table: every function an equation may call, as data.

Each entry knows how to print itself for NumPy, TensorFlow and LaTeX, and how to
differentiate itself. Where the derivative can be written in terms of the
function's *output* (tanh' = 1 - y**2, sigmoid' = y (1 - y)), it is, so the
backward pass reuses the forward values instead of keeping pre-activations.

Functions that a spec option selects at run time (``activation``,
``recurrent_activation``) are printed as calls to a local name bound from this
table, with their derivative as ``<option>_grad(y)``; every activation that an
option may name therefore has an output-form derivative.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import sympy as sp


@dataclass(frozen=True)
class Elementwise:
    """One elementwise function.

    ``numpy``/``tf`` are the bodies of ``def name(u)`` in the generated module;
    ``grad`` is the body of ``def name_grad(y)`` (``grad_from="output"``, y = f(u))
    or ``def name_grad(u)`` (``grad_from="input"``). ``tf_grad`` likewise.
    """

    name: str
    latex: str
    numpy: str
    tf: str
    grad: str
    tf_grad: str
    grad_latex: str
    grad_from: str = "output"
    activation: bool = True  # may be chosen by an activation option
    differentiable: bool = True


# fmt: off
TABLE: dict[str, Elementwise] = {e.name: e for e in [
    Elementwise("linear", r"\operatorname{id}", "u", "u",
                "np.ones_like(y)", "tf.ones_like(y)", "1"),
    Elementwise("tanh", r"\tanh", "np.tanh(u)", "tf.tanh(u)",
                "1 - y * y", "1 - y * y", "1 - y^{2}"),
    Elementwise("sigmoid", r"\sigma", "0.5 + 0.5 * np.tanh(0.5 * u)", "tf.sigmoid(u)",
                "y * (1 - y)", "y * (1 - y)", "y (1 - y)"),
    Elementwise("hard_sigmoid", r"\sigma_{hard}", "np.clip(u / 6 + 0.5, 0, 1)",
                "tf.clip_by_value(u / 6 + 0.5, 0, 1)",
                "((y > 0) & (y < 1)) / 6", "tf.cast((y > 0) & (y < 1), y.dtype) / 6",
                r"\tfrac{1}{6}[0 < y < 1]"),
    Elementwise("relu", r"\operatorname{relu}", "np.maximum(u, 0)", "tf.nn.relu(u)",
                "(y > 0).astype(y.dtype)", "tf.cast(y > 0, y.dtype)", "[y > 0]"),
    Elementwise("relu6", r"\operatorname{relu6}", "np.clip(u, 0, 6)", "tf.nn.relu6(u)",
                "((y > 0) & (y < 6)).astype(y.dtype)", "tf.cast((y > 0) & (y < 6), y.dtype)",
                "[0 < y < 6]"),
    Elementwise("elu", r"\operatorname{elu}", "np.where(u > 0, u, np.expm1(np.minimum(u, 0)))",
                "tf.nn.elu(u)", "np.where(y > 0, 1, y + 1)",
                "tf.where(y > 0, tf.ones_like(y), y + 1)",
                "[y > 0] + [y \\le 0](y + 1)"),
    Elementwise("selu", r"\operatorname{selu}",
                "1.0507009873554805 * np.where(u > 0, u, "
                "1.6732632423543772 * np.expm1(np.minimum(u, 0)))",
                "tf.nn.selu(u)",
                "np.where(y > 0, 1.0507009873554805, y + 1.7580993408473766)",
                "tf.where(y > 0, 1.0507009873554805 * tf.ones_like(y), y + 1.7580993408473766)",
                r"[y > 0]\lambda + [y \le 0](y + \lambda\alpha)"),
    Elementwise("softplus", r"\operatorname{softplus}", "np.logaddexp(0, u)", "tf.nn.softplus(u)",
                "-np.expm1(-y)", "-tf.math.expm1(-y)", "1 - e^{-y}"),
    Elementwise("softsign", r"\operatorname{softsign}", "u / (1 + np.abs(u))", "tf.nn.softsign(u)",
                "(1 - np.abs(y)) ** 2", "tf.square(1 - tf.abs(y))", "(1 - |y|)^{2}"),
    Elementwise("exponential", r"\exp", "np.exp(u)", "tf.exp(u)", "y", "y", "y"),
    Elementwise("exp", r"\exp", "np.exp(u)", "tf.exp(u)", "y", "y", "y", activation=False),
    Elementwise("abs", r"\operatorname{abs}", "np.abs(u)", "tf.abs(u)", "np.sign(u)", "tf.sign(u)",
                r"\operatorname{sign}(u)", grad_from="input", activation=False),
    Elementwise("silu", r"\operatorname{silu}",
                "u * (0.5 + 0.5 * np.tanh(0.5 * u))", "tf.nn.silu(u)",
                "(0.5 + 0.5 * np.tanh(0.5 * u)) * (1 + u * (0.5 - 0.5 * np.tanh(0.5 * u)))",
                "tf.sigmoid(u) * (1 + u * (1 - tf.sigmoid(u)))",
                r"\sigma(u)(1 + u(1 - \sigma(u)))", grad_from="input", activation=False),
]}
# fmt: on

#: Spellings accepted for an activation option, as Keras accepts them.
ALIASES = {None: "linear", "None": "linear", "swish": "silu"}

#: Functions a spec may name that exist but cannot be used, with the reason.
UNSUPPORTED = {
    "sign": "its derivative is zero almost everywhere and undefined at 0",
    "round": "it is not differentiable",
    "floor": "it is not differentiable",
    "ceil": "it is not differentiable",
    "max": "use relu(a - b) + b",
    "min": "use b - relu(b - a)",
    "log": "it is undefined for non-positive inputs; use softplus of a positive expression",
    "sqrt": "use a power with a constant exponent, e.g. a ** 0.5",
    "softmax": "it is not elementwise",
}

ACTIVATIONS = tuple(sorted(n for n, e in TABLE.items() if e.activation))


class _Printed(sp.Function):
    """A one-argument function printed as ``call_name(arg)`` in code and ``latex_name`` in LaTeX."""

    call_name: str
    latex_name: str
    nargs = 1

    def _numpycode(self, printer):
        return f"{self.call_name}({printer._print(self.args[0])})"

    _tensorflowcode = _numpycode
    _pythoncode = _numpycode

    def _latex(self, printer, exp=None):
        """``f(a)``; as the base of a power (SymPy's Pow printer passes ``exp``): ``(f(a))^{e}``."""
        call = rf"{self.latex_name}\left({printer._print(self.args[0])}\right)"
        return call if exp is None else rf"\left({call}\right)^{{{exp}}}"


class _Call(_Printed):
    """Base of the SymPy function classes made from the table."""

    entry: Elementwise

    def fdiff(self, argindex=1):
        if argindex != 1:
            raise sp.ArgumentIndexError(self, argindex)
        grad = grad_function(self.call_name, self.entry.name)
        return grad(self) if self.entry.grad_from == "output" else grad(self.args[0])


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


@cache
def function(call_name: str, entry_name: str) -> type[_Call]:
    """The SymPy function class printed as ``call_name(u)``, behaving as ``entry_name``.

    ``call_name`` is an option name (``activation``) for a function chosen at run
    time, or the table name itself for a fixed one. For an option, ``entry_name``
    is the default activation: it fixes how the function behaves symbolically,
    and every allowed value shares its derivative form (from the output).
    """
    entry = TABLE[entry_name]
    return type(
        call_name,
        (_Call,),
        {"entry": entry, "call_name": call_name, "latex_name": _latex_of(call_name, entry)},
    )


def resolve_activation(name):
    """Canonical table name for an activation spelling, or None if unknown."""
    name = ALIASES.get(name, name)
    return name if name in TABLE and TABLE[name].activation else None
