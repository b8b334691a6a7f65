"""The JAX backend: a printer that writes each variant's step, forward and BPTT functions.

``_step_v<k>`` is one step, for the plain ``lax.scan`` that JAX differentiates
(``implementation="scan"``). ``_forward_v<k>``/``_backward_v<k>`` are the two halves of the
fused ``jax.custom_vjp``: the forward hoists the input projection out of the scan and returns,
besides the outputs, only what the backward reads; the backward is the derived BPTT as a
reverse ``lax.scan`` whose carry holds the state gradients and the weight gradients summed so
far (each step adds its products' terms: no per-step buffer of product gradients is kept), and
whose output is each step's input gradient (the step bodies are :mod:`.jax_parts`). Arrays are
time-major inside these functions: ``x`` is (T, B, input_dim) and every state buffer is
(T + 1, B, units). The module skeleton around them
is ``templates/jax_module.py.j2``.

Expressions print as NumPy source with ``jnp`` for ``np`` (what SymPy's own ``JaxPrinter``
is: its NumPy printer with another module name); the spec language's reductions, extrema and
table calls are handled here, as :class:`~rnngen.printers.expressions.TorchCode` does.
"""

from __future__ import annotations

import re

import sympy as sp

from .. import functions, grammar, naming, symbolic
from . import base
from .base import Source, StatementPrinter
from .expressions import NumpyCode
from .jax_parts import BackwardStep, tuple_of

# -- expressions ---------------------------------------------------------------------------------


class JaxCode(NumpyCode):
    """``jax.numpy`` source: NumPy's arithmetic; table functions print as calls of the module's
    own functions, the spec language's reductions and extrema as ``jnp`` calls."""

    printmethod = "_jaxcode"

    def __init__(self, settings=None):
        super().__init__(settings)
        self.printmethod = "_jaxcode"

    def _print(self, expr, **kwargs):
        # table and row-wise calls, and VJPs, print by name before SymPy's known-function
        # dispatch (a table function called ``exp`` is the module's ``exp``, not numpy's)
        if isinstance(expr, functions._Printed | functions._VJP):
            return expr._numpycode(self)
        for cls, method in (
            (grammar.RowReduction, self._row_reduction),
            (grammar.Wins, self._wins),
            (grammar.Extremum, self._extremum),
        ):
            if isinstance(expr, cls):
                return method(expr)
        return super()._print(expr, **kwargs)

    def _row_reduction(self, expr):
        a = self._print(expr.args[0])
        return f"jnp.broadcast_to(jnp.{expr.np_reduce}({a}, axis=-1, keepdims=True), {a}.shape)"

    def _wins(self, expr):
        a, b = expr.args
        tensor = b if a.is_Number else a
        return (
            f"({self._print(a)} {expr.op} {self._print(b)})"
            f".astype({self.parenthesize(tensor, 100)}.dtype)"
        )

    def _extremum(self, expr):
        a, b = expr.args
        return f"jnp.{expr.np_name}({self._print(a)}, {self._print(b)})"


class _JaxGradCode(functions._Code):
    """A table function's derivative as ``jnp`` source (the table's own derivative printer)."""

    lib = "jnp"
    calls = {
        "tanh": "jnp.tanh", "exp": "jnp.exp", "Abs": "jnp.abs", "sign": "jnp.sign",
        "expm1": "jnp.expm1", "log": "jnp.log", "erf": "lax.erf",
    }  # fmt: skip

    def _print_Sigmoid(self, expr):
        return f"jax.nn.sigmoid({self._print(expr.args[0])})"

    def _print_Softplus(self, expr):
        return f"jnp.logaddexp({self._print(expr.args[0])}, 0.0)"


def function_body(name: str) -> str:
    """``jnp`` body of ``def name(u)``: the table's NumPy body in ``jnp`` (every NumPy call the
    table uses exists in ``jax.numpy`` with the same meaning; NumPy's ``_erf`` is ``lax.erf``)."""
    body = re.sub(r"\bnp\.", "jnp.", functions.TABLE[name].numpy)
    return body.replace("_erf(", "lax.erf(")


def grad_body(name: str) -> str:
    """``jnp`` body of ``def name_grad(y)`` (output form) or ``name_grad(u)``."""
    e = functions.TABLE[name]
    return _JaxGradCode(e._var).doprint(e._grad_expr)


#: the row-wise Keras activations: (body of ``name(u)``, body of ``name_vjp(y or u, d)``)
ROW_WISE = {
    "softmax": (
        "jax.nn.softmax(u, axis=-1)",
        "y * (d - (d * y).sum(axis=-1, keepdims=True))",
    ),
    "log_softmax": (
        "jax.nn.log_softmax(u, axis=-1)",
        "d - jnp.exp(y) * d.sum(axis=-1, keepdims=True)",
    ),
    "sparsemax": ("_sparsemax(u)", "_autodiff_vjp(_sparsemax, u, d)"),
}


# -- statements ----------------------------------------------------------------------------------


class JaxPrinter(BackwardStep, StatementPrinter, JaxCode):
    """Prints one variant's program as JAX (``jax.numpy`` as ``jnp``, ``jax.lax`` as ``lax``)."""

    def __init__(self, spec, variant, settings=None):
        super().__init__(settings)
        self.spec = spec
        self.variant = variant
        self.read: set[str] = set()  # symbols printed so far (so sizes know what to bind)
        self.weight_terms: dict[str, list[tuple[str, str]]] = {}
        self.summed: dict[str, bool] = {}

    def _print_Assign(self, s: symbolic.Assign) -> str:
        line = f"{s.target} = {self.value(s.expr)}"
        if self.in_step and s.target in self.variant.broadcast:
            first = naming.prev(self.spec.states[0])
            line += f"\n{s.target} = jnp.broadcast_to({s.target}, {first}.shape)  # weights alone"
        return line

    def _print_GroupProduct(self, s: symbolic.GroupProduct) -> str:
        g = s.group
        lines = [f"{g.name} = {g.operand} @ {self.weight_slice(g)}"]
        if len(g.products) > 1:
            axis = "..." if g.static else ":"
            lines += [f"{p} = {g.name}[{axis}, {self.columns(g, b)}]" for p, b in g.products]
        return "\n".join(lines)

    def _print_StoreAdjoint(self, s: symbolic.StoreAdjoint) -> str:
        """This step's gradient of a group's products, bound to its name (a scan output)."""
        g = s.group
        if not g.writes_adjoint:  # equal to the gradient another group stores
            return ""
        if len(g.products) == 1:
            value = self.expr(s.values[0])
            return "" if value == g.adjoint else f"{g.adjoint} = {value}"
        parts = []
        for (_, b), value in zip(g.products, s.values, strict=True):
            if value == 0:  # a zero block (B and dtype are bound by the backward function)
                self.uses_dtype = True
                parts.append(f"jnp.zeros((B, {self.expr(b.stop - b.start)}), dtype)")
            else:
                parts.append(self.expr(value))
        return f"{g.adjoint} = jnp.concatenate([{', '.join(parts)}], -1)"

    def _print_OperandVJP(self, s: symbolic.OperandVJP) -> str:
        return f"{s.target} = {s.group.adjoint} @ {self.transposed_name(s.group)}"

    def _print_Accumulate(self, s: symbolic.Accumulate) -> str:
        d_b = naming.adjoint(s.block.name)
        return f"{d_b} = {d_b} + ({self.expr(s.expr)}).sum(0)"

    def _print_AccumulateStatic(self, s: symbolic.AccumulateStatic) -> str:
        d_v = naming.adjoint(s.name)
        return f"{d_v} = {d_v} + ({self.expr(s.expr)}).sum(0)"

    def _print_StaticVJP(self, s: symbolic.StaticVJP) -> str:
        b = s.block
        cols = "" if b.full else f"[:, {self.expr(b.start)} : {self.expr(b.stop)}]"
        d_product = naming.adjoint(s.product)
        self.add_weight_term(b.weight, cols, f"jnp.outer({s.group.operand}, {d_product})")
        return f"{s.target} = {b.weight}{cols} @ {d_product}"

    def _print_StaticGrad(self, s: symbolic.StaticGrad) -> str:
        self.add_weight_term(s.block.weight, self.block_index(s.block), self.expr(s.expr))
        return ""

    def _print_Reduce(self, r: symbolic.Reduce) -> str:
        g = r.group
        if self.summed.get(g.adjoint):
            value = naming.adjoint_sum(g.adjoint)
        else:
            value = f"{g.adjoint}.sum(0)"
        if len(g.products) > 1:
            block = next(b for p, b in g.products if p == r.product)
            value += f"[{self.columns(g, block)}]"
        self.add_weight_term(r.block.weight, self.block_index(r.block), value)
        return ""

    def transposed_name(self, g: symbolic.Group) -> str:
        """A group's weight slice, transposed, for the per-step VJP."""
        return naming.transposed(g.name.removeprefix(g.operand + "_"))

    # -- weight gradients: each weight's terms, one expression per weight ------------------------

    def add_weight_term(self, weight: str, index: str, value: str) -> None:
        """``d_<weight>[index] += value`` (``index`` empty for the whole weight)."""
        self.weight_terms.setdefault(weight, []).append((index, value))

    def weight_gradients(self, src: Source) -> None:
        """``d_weights``: each weight's whole-weight terms summed (the backward scan's carry
        among them), then each block's terms added into its slice (``.at[...].add``)."""
        for weight, _ in self.variant.weights:
            d_w = naming.adjoint(weight)
            terms = self.weight_terms.get(weight, [])
            whole = " + ".join(value for index, value in terms if not index)
            if not whole:
                src(f'{d_w} = jnp.zeros_like(weights["{weight}"])')
            elif whole != d_w:  # (d_w alone: summed in the carry, already bound)
                src(f"{d_w} = {whole}")
            for index, value in terms:
                if index:
                    src(f"{d_w} = {d_w}.at{index}.add({value})")
        pairs = ", ".join(f'"{w}": {naming.adjoint(w)}' for w, _ in self.variant.weights)
        src(f"d_weights = {{{pairs}}}")

    # -- pieces --------------------------------------------------------------------------------

    def _bind(self, src: Source, names, vectors, masks, where: str) -> None:
        for name in names:
            src(f'{name} = weights["{name}"]')
        for b in vectors:
            src(f"{b.name} = {self.block_value(b)}")
        for m, gate, tensor in masks:
            src(f'{m} = {where}["{tensor}"][{gate}]')

    def folded_bias(self, g: symbolic.Group, like: str) -> str:
        """The bias row added to a hoisted group: its products' folded biases, in order."""
        folded = dict(g.folded)
        parts = []
        for p, b in g.products:
            names = [f.name for f in folded.get(p, ())]
            if names:
                parts.append(" + ".join(names))
            else:
                parts.append(f"jnp.zeros({self.expr(b.stop - b.start)}, {like}.dtype)")
        return parts[0] if len(parts) == 1 else f"jnp.concatenate([{', '.join(parts)}])"

    def hoist(self, src: Source, g: symbolic.Group, fold: bool = True) -> None:
        """``g``'s input projection (every step, or one step), biases folded (or, without
        ``fold``, bound to ``<group>_bias`` for each step to add: adding them to the whole
        projection would keep a second (T, B, columns) array)."""
        if g.operand != "x" and base.first_operand(self.variant, g):
            src(f"{g.operand} = {self.expr(g.operand_expr)}")
        src(f"{g.name} = {g.operand} @ {self.weight_slice(g)}")
        if g.folded:
            bias = self.folded_bias(g, g.name)
            src(f"{g.name} = {g.name} + {bias}" if fold else f"{g.name}_bias = {bias}")

    def slice_hoisted(self, src: Source) -> None:
        """Inside a step: each product of a hoisted group read from ``<group>_t``."""
        for g in self.variant.hoisted:
            if len(g.products) > 1:
                for p, b in g.products:
                    src(f"{p} = {naming.at_step(g.name)}[:, {self.columns(g, b)}]")

    # -- functions -----------------------------------------------------------------------------

    def functions(self) -> str:
        return "\n\n".join(
            [self.step_function(), self.forward_function(), self.backward_function()]
        )

    def step_function(self) -> str:
        """One step on batch rows, for the plain scan. Returns (output, new states)."""
        v, spec = self.variant, self.spec
        states = spec.states
        self.read = set()
        body = Source()
        self._bind(body, [n for n, _ in v.weights], base.sliced_vectors(v), v.masks, "masks")
        body(*self.emit(v.prelude))
        for g in v.hoisted:
            self.hoist(body, g)
            if len(g.products) == 1:
                body(f"{naming.at_step(g.name)} = {g.name}")
            else:
                for p, b in g.products:
                    body(f"{p} = {g.name}[:, {self.columns(g, b)}]")
        body(*self.emit(v.forward, in_step=True))
        src = Source()
        args = ["x", "states", "weights", "masks", *base.activation_arguments(spec, naming.vjp)]
        src(base.signature(f"_step_{v.name}", args))
        with src:
            src(f'"""One step for {v.describe()}.', "", "Returns (output, new states).", '"""')
            prevs = ", ".join(naming.prev(s) for s in states)
            src(f"{prevs}{',' if len(states) == 1 else ''} = states")
            self.bind_sizes(src, naming.prev(states[0]))
            if base.reads_x_t(v):
                src(f"{naming.X_T} = x")
            src(*body.lines)
            src(f"return {spec.output}, [{', '.join(states)}]")
        return src.text()

    def kept_states(self) -> list[str]:
        """States whose every step the forward scan returns: those the backward reads, and
        the output when it is a state (the sequence of outputs without a mask)."""
        read = base.backward_states(self.spec, self.variant)
        return [s for s in self.spec.states if s in read or s == self.spec.output]

    def forward_function(self) -> str:
        v, spec = self.variant, self.spec
        states = spec.states
        args = ["x", "weights", "initial_state", "mask", "masks", "zero_output_for_mask"]
        self.read = set()
        body = Source()
        self._bind(body, [n for n, _ in v.weights], base.sliced_vectors(v), v.masks, "masks")
        if v.prelude:
            body("", "# values of the weights alone: the same at every step, computed once")
            body(*self.emit(v.prelude))
        if v.hoisted:
            body(
                "",
                "# input projections for every step at once (T, B, columns); biases added per step",
            )
            for g in v.hoisted:
                self.hoist(body, g, fold=False)
        stream = [g.name for g in v.hoisted] + (["x"] if base.reads_x_t(v) else [])
        step_names = [naming.at_step(g.name) for g in v.hoisted]
        step_names += [naming.X_T] if base.reads_x_t(v) else []
        kept = self.kept_states()
        step = Source()
        step("def step(carry, xs):")
        with step:
            step(f"{tuple_of([naming.prev(s) for s in states])}, previous = carry")
            step(f"{tuple_of([*step_names, 'keep'])} = xs")
            for g in v.hoisted:
                if g.folded:
                    step(f"{naming.at_step(g.name)} = {naming.at_step(g.name)} + {g.name}_bias")
            self.slice_hoisted(step)
            step(*self.emit(v.forward, in_step=True))
            step(f"step_stored = {tuple_of(self.step_expr(name) for name, _ in v.stored)}")
            step("if mask is None:")
            step.indented([f"step_output = {spec.output}"])
            step("else:  # a masked step repeats the output (or zeros) and keeps the states")
            with step:
                step(
                    f"step_output = jnp.where(keep, {spec.output}, "
                    "0.0 if zero_output_for_mask else previous)"
                )
                for s in states:
                    step(f"{s} = jnp.where(keep, {s}, {naming.prev(s)})")
            out = (
                "step_output"
                if spec.output not in states
                else "None if mask is None else step_output"
            )
            carried = "None if mask is None else step_output"  # the output a masked step repeats
            step(f"return ({tuple_of(states)}, {carried}), (step_stored, {tuple_of(kept)}, {out})")
        src = Source()
        src(
            base.signature(f"_forward_{v.name}", args + base.activation_arguments(spec, naming.vjp))
        )
        with src:
            src(
                f'"""Forward pass for {v.describe()}.',
                "",
                "x: (T, B, input_dim), time-major. "
                f"initial_state: {base.count(len(states), 'array')} (B, units).",
                "mask: (T, B, 1) bool or None. Returns (outputs (T, B, units), final states,",
                "residuals: only what the backward pass reads).",
                '"""',
            )
            self.bind_sizes(src, "initial_state[0]")
            src(*body.lines)
            src("", "# the time loop: each step's stored values, kept states and output")
            src(*step.lines)
            src(
                f"carry = ({tuple_of([f'initial_state[{i}]' for i in range(len(states))])}, "
                "None if mask is None else jnp.zeros_like(initial_state[0]))"
            )
            src(f"xs = {tuple_of([*stream, 'mask'])}")
            src(
                f"({tuple_of([naming.prev(s) for s in states])}, _), "
                f"({tuple_of([naming.seq(n) for n, _ in v.stored])}, "
                f"{tuple_of([f'{s}_after' for s in kept])}, out_seq) = "
                "lax.scan(step, carry, xs, unroll=_UNROLL)"
            )
            if spec.output in states:
                src(f"outputs = {spec.output}_after if mask is None else out_seq")
            else:
                src("outputs = out_seq")
            src("residuals = {")
            with src:
                for key in ("x", "mask", "masks", "weights"):
                    src(f'"{key}": {key},')
                for s in base.backward_states(spec, v):  # the states after each step
                    src(f'"{s}": {s}_after,')
                if base.backward_states(spec, v):
                    src('"initial_state": initial_state,')
                for name, _ in v.stored:
                    src(f'"{name}": {naming.seq(name)},')
                for operand in self.hoisted_operands():
                    src(f'"{operand}": {operand},')
                for name in base.static_reads(v):
                    src(f'"{name}": {name},')
            src("}")
            src(f"return outputs, [{', '.join(naming.prev(s) for s in states)}], residuals")
        return src.text()

    def backward_function(self) -> str:
        v, spec = self.variant, self.spec
        states = spec.states
        self.read, self.weight_terms = set(), {}
        sizes: dict[str, sp.Expr] = {}  # per-step sums kept in the carry, each once, in order
        for a in base.accumulators(v):
            if isinstance(a, symbolic.Accumulate):
                sizes.setdefault(naming.adjoint(a.block.name), a.block.stop - a.block.start)
            else:
                sizes.setdefault(naming.adjoint(a.name), a.size)
        accumulators = list(sizes.items())
        self.uses_dtype = False
        streams = self.backward_streams()
        d_states = [naming.adjoint(s) for s in states]
        accs = [name for name, _ in accumulators]
        backward = self.emit(v.backward)
        in_loop = Source()
        d_x_t = self._in_loop(in_loop, streams, accs)
        summed = list(self.weight_terms)  # weights whose gradients the carry sums
        sums = [self.carried(w, accs) for w in summed]
        xs, reads = self.stream_lines(streams)
        step = Source()
        step("def step(carry, xs):")
        with step:
            step(f"{tuple_of(d_states)}, {naming.CARRY}, {tuple_of(accs + sums)} = carry")
            step(*reads)
            self._seed(step)
            step(*backward)
            step(*in_loop.lines)
            for s, e in v.state_grads:
                d_s = naming.adjoint(s)
                if e == symbolic.symbol(d_s):  # written by the transpose rule above
                    continue
                step(f"{d_s} = {self.expr(e) if e != 0 else f'jnp.zeros_like({d_s})'}")
            step("if mask is not None:")
            with step:
                for s in states:
                    step(f"{naming.adjoint(s)} = {naming.adjoint(s)} + {naming.skipped(s)}")
            step(
                f"return ({tuple_of(d_states)}, {naming.CARRY}, {tuple_of(accs + sums)}), "
                f"{'d_x' if d_x_t else 'None'}"
            )
        self.weight_terms = {w: [("", d_w)] for w, d_w in zip(summed, sums, strict=True)}
        after = Source()
        if v.static_backward:
            after("# values of the weights alone: their gradients summed over steps and batch")
            after(*self.emit(v.static_backward))
        if not d_x_t:
            after("d_x = jnp.zeros_like(x)")
        for s in v.backward:
            if isinstance(s, symbolic.Accumulate):
                b = s.block
                self.add_weight_term(b.weight, self.block_index(b), naming.adjoint(b.name))
        self.weight_gradients(after)
        # zeros like the state gradients: under shard_map they vary across the mesh as the
        # carry's updates do (a scan's carry keeps its type)
        zeros = [
            f"jnp.zeros_like(d_states[0], shape=({self.expr(size)},))" for _, size in accumulators
        ]
        zeros += [f'jnp.zeros_like(d_states[0], shape=weights["{w}"].shape)' for w in summed]

        src = Source()
        args = ["residuals", "d_outputs", "d_states", "zero_output_for_mask"]
        src(
            base.signature(
                f"_backward_{v.name}", args + base.activation_arguments(spec, naming.vjp)
            )
        )
        with src:
            src(
                f'"""BPTT for {v.describe()}.',
                "",
                "A reverse scan over the steps; its carry holds the state gradients and the",
                "weight gradients summed so far (no per-step buffer of product gradients).",
                "d_outputs: (T, B, units) gradient of each step's output, in processing order.",
                f"d_states: {base.count(len(states), 'array')} (B, units), "
                "gradients of the final states.",
                "Returns (d_x (T, B, input_dim), d_initial_state, d_weights).",
                '"""',
            )
            src('x, mask, weights = residuals["x"], residuals["mask"], residuals["weights"]')
            src("T, B, _ = x.shape")
            if self.uses_dtype:
                src("dtype = x.dtype")
            self.bind_sizes(src, "d_states[0]")
            self._bind(
                src,
                base.backward_weights(v),
                base.sliced_vectors(v, backward=True),
                base.backward_masks(v),
                'residuals["masks"]',
            )
            for s in base.backward_states(spec, v):
                src(f'{s}_after = residuals["{s}"]  # (T, B, units): the state after each step')
            for name, _ in v.stored:
                src(f'{naming.seq(name)} = residuals["{name}"]')
            for operand in self.hoisted_operands():
                src(f'{operand} = residuals["{operand}"]')
            for name in base.static_reads(v):
                src(f'{name} = residuals["{name}"]')
            for s in v.backward:
                if isinstance(s, symbolic.OperandVJP):
                    src(f"{self.transposed_name(s.group)} = {self.weight_slice(s.group)}.T")
            src("", "# the reverse scan: state gradients and weight gradients in the carry;")
            src("# each step's input gradient is its output")
            src(*step.lines)
            src(
                f"{naming.CARRY} = None if mask is None else jnp.zeros_like(d_states[0])",
                f"carry = (tuple(d_states), {naming.CARRY}, {tuple_of(zeros)})",
                f"xs = {tuple_of([*xs, 'd_outputs', 'mask'])}",
                f"({tuple_of(d_states)}, _, {tuple_of(accs + sums)}), "
                f"{'d_x' if d_x_t else '_'}"
                f" = lax.scan(step, carry, xs, reverse=True, unroll=_UNROLL)",
            )
            src("", "# the weight gradients")
            src(*after.lines)
            src(f"return d_x, [{', '.join(d_states)}], d_weights")
        return src.text()
