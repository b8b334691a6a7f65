"""The Keras 3 backend-independent step: a printer that writes each variant's ``_step_v<k>`` with
``keras.ops`` (``from keras import ops``), so the Keras layer's loop runs on TensorFlow, JAX and
PyTorch alike; its gradient is the backend's autodiff.

Only the forward step is printed here (the loop implementation of ``keras.layers.RNN``); the
TensorFlow fused op, with its derived backward pass, is :mod:`rnngen.printers.tf`'s. The table
functions print as ``keras.ops`` calls (``ops.tanh(a)``), or as a module-level helper
``_ops_<name>(a)`` where Keras's function is not one ``ops`` call of its input
(:data:`FUNCTIONS`, :func:`helpers`).
"""

from __future__ import annotations

import re

from .. import functions, grammar, naming, symbolic
from . import base
from .base import Source, StatementPrinter
from .expressions import NumpyCode

#: table function -> its forward pass in keras.ops, the body of ``def _ops_<name>(u)``, as Keras
#: computes the activation of that name (``keras.activations.<name>``) on every backend
# fmt: off
FUNCTIONS = {
    "linear": "u", "tanh": "ops.tanh(u)", "sigmoid": "ops.sigmoid(u)",
    "hard_sigmoid": "ops.hard_sigmoid(u)", "hard_silu": "ops.hard_silu(u)",
    "relu": "ops.relu(u)", "relu6": "ops.relu6(u)",
    # the table's formula: ops.leaky_relu keeps its slope in float32 on TF (1.5e-8 off in float64)
    "leaky_relu": "ops.where(u > 0, u, 0.2 * u)",
    "elu": "ops.elu(u)", "celu": "ops.celu(u)", "selu": "ops.selu(u)",
    "softplus": "ops.softplus(u)", "softsign": "ops.softsign(u)",
    "exponential": "ops.exp(u)", "silu": "ops.silu(u)",
    # erf, as the TF table does: TF's exact gelu is ~5e-9 off in float64 (its erfc)
    "gelu": "0.5 * u * (1 + ops.erf(u * 0.7071067811865476))",
    "mish": "u * ops.tanh(ops.softplus(u))",
    "hard_tanh": "ops.hard_tanh(u)", "hard_shrink": "ops.hard_shrink(u)",
    "soft_shrink": "ops.soft_shrink(u)", "tanh_shrink": "ops.tanh_shrink(u)",
    "log_sigmoid": "ops.log_sigmoid(u)", "sparse_plus": "ops.sparse_plus(u)",
    "sparse_sigmoid": "ops.sparse_sigmoid(u)", "squareplus": "ops.squareplus(u)",
    "exp": "ops.exp(u)", "abs": "ops.abs(u)", "sqrt": "ops.sqrt(u)", "log": "ops.log(u)",
}
#: row-wise table function -> its keras.ops call (across the units axis)
ROW_WISE = {
    "softmax": "ops.softmax(u, axis=-1)", "log_softmax": "ops.log_softmax(u, axis=-1)",
    "sparsemax": "ops.sparsemax(u, axis=-1)",
}
# fmt: on

_ONE_CALL = re.compile(r"^(ops\.\w+)\(u\)$")


def callee(name: str) -> str:
    """How the step calls table function ``name``: ``ops.tanh`` where Keras's function is that
    one call of its input, else the module-level helper ``_ops_<name>``."""
    body = {**FUNCTIONS, **ROW_WISE}[name]
    one = _ONE_CALL.match(body)
    return one.group(1) if one else f"_ops_{name}"


def helpers(names) -> list[tuple[str, str]]:
    """``(name, body)`` of the module-level helpers ``_ops_<name>(u)`` that functions ``names``
    need (those that are not one ``ops`` call), in the order given."""
    table = {**FUNCTIONS, **ROW_WISE}
    return [(n, table[n]) for n in dict.fromkeys(names) if not _ONE_CALL.match(table[n])]


def missing() -> list[str]:
    """Table functions without a keras.ops spelling (the tests require none)."""
    return sorted(set(functions.TABLE) - set(FUNCTIONS)) + sorted(
        set(functions.ROW_WISE_TABLE) - set(ROW_WISE)
    )


class KerasOpsPrinter(StatementPrinter, NumpyCode):
    """Prints one variant's forward step with ``keras.ops`` (imported as ``ops``): plain Python
    for slices and arithmetic, a ``keras.ops`` call for every other tensor operation. The
    forward IR holds two statement kinds, ``Assign`` and ``GroupProduct``."""

    printmethod = "_kerasopscode"  # no class has it: calls are recognised in ``_print``

    def __init__(self, spec, variant, settings=None):
        super().__init__(settings)
        self.printmethod = "_kerasopscode"  # NumPyPrinter sets its own in __init__
        self.spec = spec
        self.variant = variant
        self.read: set[str] = set()  # symbols printed (so sizes know what to bind)

    # -- expressions ---------------------------------------------------------------------------

    def _print(self, expr, **kwargs):
        """Table functions, the spec language's reductions and extrema as keras.ops calls.

        SymPy dispatches a ``Function`` subclass on its own class name first (a table
        function's class is named ``tanh``, which NumPy's printer knows as ``numpy.tanh``), so
        they are recognised here, before that dispatch."""
        if isinstance(expr, functions._Call):
            arg = self._print(expr.args[0])
            if functions.is_option_call(expr):  # chosen at run time: the step's argument
                return f"{expr.call_name}({arg})"
            return self._call(expr.call_name, arg)
        if isinstance(expr, functions._RowCall):
            return self._call(expr.call_name, self._print(expr.args[0]))
        if isinstance(expr, functions._Grad | functions._VJP):
            raise NotImplementedError(
                f"{type(expr).__name__}: a derivative, which the keras.ops step never prints "
                "(its gradient is the backend's autodiff)"
            )
        if isinstance(expr, grammar.RowReduction):
            a = self._print(expr.args[0])
            reduce = "sum" if expr.np_reduce == "sum" else "mean"
            return f"ops.broadcast_to(ops.{reduce}({a}, axis=-1, keepdims=True), ops.shape({a}))"
        if isinstance(expr, grammar.Wins):
            a, b = (self._print(v) for v in expr.args)
            return f"ops.cast({a} {expr.op} {b}, {grammar._dtype_of(self, *expr.args)})"
        if isinstance(expr, grammar.Extremum):
            a, b = (self._print(v) for v in expr.args)
            return f"ops.{expr.np_name}({a}, {b})"
        return super()._print(expr, **kwargs)

    def _call(self, name: str, arg: str) -> str:
        return f"{callee(name)}({arg})"

    # -- statements ----------------------------------------------------------------------------

    def _print_Assign(self, s: symbolic.Assign) -> str:
        line = f"{s.target} = {self.value(s.expr)}"
        if self.in_step and s.target in self.variant.broadcast:
            first = naming.prev(self.spec.states[0])
            shape = f"ops.shape({first})"
            line += f"\n{s.target} = ops.broadcast_to({s.target}, {shape})  # weights alone"
        return line

    def _print_GroupProduct(self, s: symbolic.GroupProduct) -> str:
        g = s.group
        # a 1-D operand (weights alone, before the loop) gives a 1-D product
        lines = [f"{g.name} = ops.matmul({g.operand}, {self.weight_slice(g)})"]
        axis = "..." if g.static else ":"
        if len(g.products) > 1:
            lines += [f"{p} = {g.name}[{axis}, {self.columns(g, b)}]" for p, b in g.products]
        return "\n".join(lines)

    def hoist(self, g: symbolic.Group, seq: bool, first: bool, target: str = "") -> list[str]:
        """This step's input projection of ``g`` into ``target``, biases folded in."""
        if seq:
            raise NotImplementedError("the keras.ops printer writes the step, not a sequence op")
        target = target or g.name
        lines = []
        if g.operand != "x" and first:
            lines.append(f"{g.operand} = {self.expr(g.operand_expr)}")
        product = f"ops.matmul({g.operand}, {self.weight_slice(g)})"
        if not g.folded:
            return [*lines, f"{target} = {product}"]
        if len(g.products) == 1:
            (_, folded), *_ = g.folded
            return [*lines, f"{target} = {product}" + "".join(f" + {b.name}" for b in folded)]
        folded = dict(g.folded)
        lines.append(f"{target} = {product} + ops.concatenate(")
        lines.append("    [")
        for p, b in g.products:
            if folded.get(p):
                lines.append("        " + " + ".join(fb.name for fb in folded[p]) + ",")
            else:
                width = self.expr(b.stop - b.start)
                lines.append(f"        ops.zeros(({width},), dtype={g.operand}.dtype),")
        lines.append("    ],")
        lines.append("    0,")
        lines.append(")")
        return lines

    # -- the function ----------------------------------------------------------------------------

    def emit(self, statements, in_step: bool = False) -> list[str]:
        for s in statements:
            if not isinstance(s, symbolic.Assign | symbolic.GroupProduct):
                raise NotImplementedError(f"the keras.ops step prints no {type(s).__name__}")
        return super().emit(statements, in_step)

    def bindings(self, src: Source, vectors) -> None:
        for b in vectors:
            src(f"{b.name} = {self.block_value(b)}")

    def step_function(self) -> str:
        v, spec = self.variant, self.spec
        states = spec.states
        args = ["x", "states", "weights", "masks", *(o.name for o in spec.activation_options)]
        self.read = set()
        body = Source()
        for name, _ in v.weights:
            body(f'{name} = weights["{name}"]')
        self.bindings(body, base.sliced_vectors(v))
        for m, gate, tensor in v.masks:
            body(f'{m} = masks["{tensor}"][{gate}]')
        body(*self.emit(v.prelude))
        for g in v.hoisted:
            if len(g.products) > 1:
                body(*self.hoist(g, False, base.first_operand(v, g)))
                for p, b in g.products:
                    body(f"{p} = {g.name}[:, {self.columns(g, b)}]")
            else:  # read in the step as this step's slice of the projection
                body(*self.hoist(g, False, base.first_operand(v, g), naming.at_step(g.name)))
        body(*self.emit(v.forward, in_step=True))

        src = Source()
        src(base.signature(f"_step_{v.name}", args))
        with src:
            src(
                '"""One step in keras.ops (every Keras backend). Returns (output, new states).',
                "",
                f"Variant: {v.describe()}.",
                '"""',
            )
            prevs = ", ".join(naming.prev(s) for s in states)
            src(f"{prevs}{',' if len(states) == 1 else ''} = states")
            self.bind_sizes(src, naming.prev(states[0]))
            if base.reads_x_t(v):
                src(f"{naming.X_T} = x")
            src(*body.lines)
            src(f"return {spec.output}, [{', '.join(states)}]")
        return src.text()


def step_function(spec, variant) -> str:
    """The keras.ops ``_step_<variant>`` source (a template global)."""
    return KerasOpsPrinter(spec, variant).step_function().rstrip()
