"""The TensorFlow backend: a printer that writes each variant's fused sequence op.

``_fused_v<k>`` is the whole sequence as one ``tf.custom_gradient`` op whose gradient is the
derived BPTT. The Keras layer's step for ``keras.layers.RNN`` (``_step_v<k>``, autodiff
gradients on every Keras backend) is written in keras.ops by :mod:`rnngen.printers.keras_ops`;
both print the same forward IR. The module skeleton around them is ``templates/tf_layer.py.j2``.
"""

from __future__ import annotations

from .. import naming, symbolic
from . import base
from .base import Source, StatementPrinter
from .expressions import TensorflowCode
from .keras_ops import KerasOpsPrinter


class TensorflowPrinter(StatementPrinter, TensorflowCode):
    """Prints one variant's program as TensorFlow (``tensorflow`` imported as ``tf``)."""

    def __init__(self, spec, variant, settings=None):
        super().__init__(settings)
        self.spec = spec
        self.variant = variant
        self.read: set[str] = set()  # symbols printed so far (so sizes know what to bind)
        self.weight_terms: dict[str, list[str]] = {}

    # -- statements ----------------------------------------------------------------------------

    def _print_Assign(self, s: symbolic.Assign) -> str:
        line = f"{s.target} = {self.value(s.expr)}"
        if self.in_step and s.target in self.variant.broadcast:
            first = naming.prev(self.spec.states[0])
            line += (
                f"\n{s.target} = tf.broadcast_to({s.target}, tf.shape({first}))  # weights alone"
            )
        return line

    def _print_GroupProduct(self, s: symbolic.GroupProduct) -> str:
        g = s.group
        if g.static:  # a 1-D operand (weights alone), before the loop
            lines = [
                f"{g.name} = tf.linalg.matvec("
                f"{self.weight_slice(g)}, {g.operand}, transpose_a=True)"
            ]
            axis = "..."
        else:
            lines = [f"{g.name} = {g.operand} @ {self.weight_slice(g)}"]
            axis = ":"
        if len(g.products) > 1:
            lines += [f"{p} = {g.name}[{axis}, {self.columns(g, b)}]" for p, b in g.products]
        return "\n".join(lines)

    def _print_StoreAdjoint(self, s: symbolic.StoreAdjoint) -> str:
        g = s.group
        if not g.writes_adjoint or g.adjoint_bound:  # stored by another group, or a value
            return ""  # the step computes anyway: written to the buffer at the end of the step
        if len(g.products) == 1:
            return f"{g.adjoint} = {self.expr(s.values[0])}"
        first = naming.adjoint(self.spec.states[0])
        parts = [
            f"    {self.expr(value)},"
            if value != 0
            else f"    _zeros_cols({first}, {self.expr(b.stop - b.start)}),"
            for (_, b), value in zip(g.products, s.values, strict=True)
        ]
        return "\n".join([f"{g.adjoint} = tf.concat([", *parts, "], -1)"])

    def _print_OperandVJP(self, s: symbolic.OperandVJP) -> str:
        g = s.group
        target = base.vjp_target(s)
        return f"{target} = tf.matmul({g.adjoint}, {self.weight_slice(g)}, transpose_b=True)"

    def _print_Accumulate(self, s) -> str:
        return ""  # summed in the loop's accumulators (see ``fused_function``)

    _print_AccumulateStatic = _print_Accumulate

    def _print_StaticVJP(self, s: symbolic.StaticVJP) -> str:
        b = s.block
        d_product = naming.adjoint(s.product)
        outer = f"tf.tensordot({s.group.operand}, {d_product}, axes=0)"
        cols = "" if b.full else f"[:, {self.expr(b.start)} : {self.expr(b.stop)}]"
        self.add_weight_term(b.weight, self.place(outer, b.weight, None, b))
        return f"{s.target} = tf.linalg.matvec({b.weight}{cols}, {d_product})"

    def _print_StaticGrad(self, s: symbolic.StaticGrad) -> str:
        b = s.block
        self.add_weight_term(b.weight, self.place(self.expr(s.expr), b.weight, b.row, b))
        return ""

    def _print_Reduce(self, r: symbolic.Reduce) -> str:
        g, b = r.group, r.block
        value = naming.seq(g.adjoint)
        if len(g.products) > 1:
            block = next(bb for p, bb in g.products if p == r.product)
            value += f"[..., {self.columns(g, block)}]"
        summed = f"tf.reduce_sum({value}, [0, 1])"
        self.add_weight_term(b.weight, self.place(summed, b.weight, b.row, b))
        return ""

    def add_weight_term(self, weight: str, value: str) -> None:
        """A term of ``d_<weight>`` (already placed where it belongs in the weight)."""
        self.weight_terms.setdefault(weight, []).append(value)

    def weight_gradients(self, src: Source) -> None:
        """``d_<weight>``: the sum of its terms, or zeros for a weight nothing reaches."""
        for weight, _ in self.variant.weights:
            terms = self.weight_terms.get(weight) or [f"tf.zeros_like({weight})"]
            src(f"{naming.adjoint(weight)} = {' + '.join(terms)}")

    def place(self, value: str, weight: str, row, b) -> str:
        """``value`` zero-padded to the place of block (or group) ``b`` inside ``weight``."""
        if b.full:
            return value
        row = row if row is not None else "None"
        start, stop = self.expr(b.start), self.expr(b.stop)
        return f"_place({value}, {weight}.shape, {row}, {start}, {stop})"

    # -- pieces shared by the step and the fused op -------------------------------------------

    def hoist(self, g: symbolic.Group, seq: bool, first: bool, target: str = "") -> list[str]:
        """The input projection of ``g`` (every step when ``seq``) into ``target`` (default: the
        group's name), biases folded in."""
        target = target or g.name
        lines = []
        if g.operand != "x" and first:
            lines.append(f"{g.operand} = {self.expr(g.operand_expr)}")
        w = self.weight_slice(g)
        product = f"_seq_matmul({g.operand}, {w})" if seq else f"{g.operand} @ {w}"
        if not g.folded:
            return [*lines, f"{target} = {product}"]
        if len(g.products) == 1:
            (_, folded), *_ = g.folded
            return [*lines, f"{target} = {product}" + "".join(f" + {b.name}" for b in folded)]
        folded = dict(g.folded)
        lines.append(f"{target} = {product} + tf.concat([")
        for p, b in g.products:
            if folded.get(p):
                lines.append("    " + " + ".join(fb.name for fb in folded[p]) + ",")
            else:
                lines.append(f"    tf.zeros([{self.expr(b.stop - b.start)}], {g.operand}.dtype),")
        lines.append("], 0)")
        return lines

    def bindings(self, src: Source, vectors) -> None:
        for b in vectors:
            src(f"{b.name} = {self.block_value(b)}")

    def step_body(self) -> list[str]:
        """The forward statements of one step, as the fused op's loop prints them."""
        return self.emit(self.variant.forward, in_step=True)

    # -- functions -----------------------------------------------------------------------------

    def functions(self) -> str:
        """The variant's keras.ops step (the loop, every Keras backend), then its fused op."""
        step = KerasOpsPrinter(self.spec, self.variant).step_function()
        return step + "\n\n" + self.fused_function()

    def fused_function(self) -> str:
        v, spec = self.variant, self.spec
        states = spec.states
        n = len(states)
        args = ["x", "mask", "initial_state", "weights", "masks", "zero_output_for_mask"]
        self.read = set()
        self.weight_terms = {}  # collected anew: printing twice prints the same op
        body = Source()
        body("T = tf.shape(x)[0]", "dtype = x.dtype")
        self.bindings(body, base.sliced_vectors(v))
        for m, gate, tensor in v.masks:
            body(f'{m} = masks["{tensor}"][{gate}]')
        body(*self.emit(v.prelude))
        for g in v.hoisted:
            body(*self.hoist(g, True, base.first_operand(v, g)))
        body("")
        self._forward_loop(body)
        self._gradient(body)

        src = Source()
        src(base.signature(f"_fused_{v.name}", args + base.activation_arguments(spec, naming.vjp)))
        with src:
            src(
                '"""The whole sequence as one op.',
                "",
                f"Variant: {v.describe()}.",
                "The gradient is the derived BPTT.",
                "x: (T, B, input_dim) time-major, in processing order. "
                "mask: (T, B, 1) bool or None.",
                f"initial_state: {base.count(n, 'tensor')} (B, units). "
                "weights: tensors in Keras order.",
                'masks: {"x": [...], "h_prev": [...]} dropout masks or None.',
                "Returns (outputs (T, B, units), [final states]).",
                '"""',
                "",
                "@tf.custom_gradient",
                "def op(x, *args):",
            )
            with src:
                initial = ", ".join(f"{s}_0" for s in states)
                src(f"{initial}{',' if n == 1 else ''} = args[:{n}]")
                names = ", ".join(name for name, _ in v.weights)
                src(f"{names}{',' if len(v.weights) == 1 else ''} = args[{n}:]")
                self.bind_sizes(src, f"{states[0]}_0")
                src(*body.lines)
                src("return (outputs, *final), grad")
            src(
                "", "result = op(x, *initial_state, *weights)", "return result[0], list(result[1:])"
            )
        return src.text()

    def _forward_loop(self, src: Source) -> None:
        v, spec = self.variant, self.spec
        states, n, stored = spec.states, len(spec.states), len(v.stored)
        prevs = "".join(f"{naming.prev(s)}, " for s in states)
        src(f"def body(t, {prevs}out_prev, loop_tas):")
        with src:
            if base.reads_x_t(v):
                src(f"{naming.X_T} = x[t]")
            for g in v.hoisted:
                if len(g.products) > 1:
                    for p, b in g.products:
                        src(f"{p} = {g.name}[t][:, {self.columns(g, b)}]")
                else:
                    src(f"{naming.at_step(g.name)} = {g.name}[t]")
            src(*self.step_body())
            src(f"out = {spec.output}", "if mask is not None:")
            with src:
                src("keep = mask[t]")
                for s in states:
                    src(f"{s} = tf.where(keep, {s}, {naming.prev(s)})")
                src(
                    "out = tf.where(keep, out, "
                    "tf.zeros_like(out) if zero_output_for_mask else out_prev)"
                )
            src("tas = [")
            for i, s in enumerate(states):
                src(f"    loop_tas[{i}].write(t, {s}),")
            for i, (name, _) in enumerate(v.stored):
                src(f"    loop_tas[{n + i}].write(t, {self.step_expr(name)}),")
            src("]")
            if spec.output in states:
                src(
                    "if mask is not None:  "
                    f"# without a mask the outputs are the {spec.output} states"
                )
                src(f"    tas.append(loop_tas[{n + stored}].write(t, out))")
            else:
                src(f"tas.append(loop_tas[{n + stored}].write(t, out))")
            src(f"return t + 1, {''.join(f'{s}, ' for s in states)}out, tas")
        src("")
        if spec.output in states:
            src(f"n_tas = {n + stored} + (mask is not None)")
        else:
            src(f"n_tas = {n + stored + 1}")
        initial = "".join(f"{s}_0, " for s in states)
        src(
            "tas = [tf.TensorArray(dtype, size=T) for _ in range(n_tas)]",
            "loop = tf.while_loop(",
            "    lambda t, *_: t < T,",
            "    body,",
            f"    (tf.constant(0), {initial}tf.zeros_like({states[0]}_0), tas),",
            "    maximum_iterations=T,",
            ")",
            "tas = loop[-1]",
        )
        for i, s in enumerate(states):
            src(f"{naming.seq(s)} = tf.concat([{s}_0[None], tas[{i}].stack()], 0)")
        for i, (name, _) in enumerate(v.stored):
            src(f"{naming.seq(name)} = tas[{n + i}].stack()")
        if spec.output in states:
            src(f"outputs = {naming.seq_after(spec.output)} if mask is None else tas[-1].stack()")
        else:
            src("outputs = tas[-1].stack()")
        src(f"final = [{', '.join(f'{naming.seq(s)}[-1]' for s in states)}]")
        src("")

    def _gradient(self, src: Source) -> None:
        v, spec = self.variant, self.spec
        states = spec.states
        buffers = base.adjoint_buffers(v)
        accs = base.accumulators(v)
        src("def grad(d_outputs, *d_final):")
        with src:
            src(
                "d_outputs = tf.zeros_like(outputs) if d_outputs is None else d_outputs",
                "d_final = [tf.zeros_like(f) if d is None else d "
                "for d, f in zip(d_final, final, strict=True)]",
            )
            forward_vectors = {b.name for b in base.sliced_vectors(v)}
            self.bindings(
                src, [b for b in base.sliced_vectors(v, True) if b.name not in forward_vectors]
            )
            src("")
            d_states = "".join(f"{naming.adjoint(s)}, " for s in states)
            n_tas = len(buffers) + (v.x_grad is not None)
            carried = (
                d_states + naming.CARRY + (", acc" if accs else "") + (", tas" if n_tas else "")
            )
            src(f"def back(t, {carried}):")
            with src:
                src(*base.backward_reads(spec, v))
                self._seed(src)
                src(*self.emit(v.backward))
                if accs:
                    src("acc = [")
                    for i, s in enumerate(accs):
                        src(f"    acc[{i}] + tf.reduce_sum({self.expr(s.expr)}, 0),")
                    src("]")
                if n_tas:
                    src("tas = [")
                    for i, (name, _) in enumerate(buffers):
                        src(f"    tas[{i}].write(t, {name}),")
                    if v.x_grad is not None:
                        src(f"    tas[{len(buffers)}].write(t, {self.expr(v.x_grad)}),")
                    src("]")
                for s, e in v.state_grads:
                    d_s = naming.adjoint(s)
                    if s in base.written_by_vjp(v):  # by the transpose rule, above
                        continue
                    src(f"{d_s} = {self.expr(e) if e != 0 else f'tf.zeros_like({d_s})'}")
                src("if mask is not None:")
                with src:
                    for s in states:
                        src(f"{naming.adjoint(s)} = {naming.adjoint(s)} + {naming.skipped(s)}")
                src(f"return t - 1, {carried}")
            src("")
            if n_tas == 1:
                src("tas = [tf.TensorArray(dtype, size=T)]")
            elif n_tas:
                src(f"tas = [tf.TensorArray(dtype, size=T) for _ in range({n_tas})]")
            if accs:
                src("acc = [")
                for s in accs:
                    size = (
                        s.block.stop - s.block.start
                        if isinstance(s, symbolic.Accumulate)
                        else s.size
                    )
                    src(f"    tf.zeros([{self.expr(size)}], dtype),")
                src("]")
            initial = "T - 1, *d_final, tf.zeros_like(d_final[0])"
            initial += (", acc" if accs else "") + (", tas" if n_tas else "")
            src(
                "loop = tf.while_loop(",
                "    lambda t, *_: t >= 0,",
                "    back,",
                f"    ({initial}),",
                "    maximum_iterations=T,",
                ")",
                f"{d_states}_{', acc' if accs else ''}{', tas' if n_tas else ''} = loop[1:]",
            )
            for i, (name, _) in enumerate(buffers):
                src(f"{naming.seq(name)} = tas[{i}].stack()")
            src("", "# input and weight gradients: one matrix product each, over all steps")
            if v.static_backward:
                src(
                    "# values of the weights alone: "
                    "gradients summed over steps and batch, reversed once"
                )
                for i, s in enumerate(accs):
                    if isinstance(s, symbolic.AccumulateStatic):
                        src(f"{naming.adjoint(s.name)} = acc[{i}]")
                src(*self.emit(v.static_backward))
            self._after_loop(src, accs, len(buffers))
            weights = ", ".join(naming.adjoint(name) for name, _ in v.weights)
            src(f"return [d_x, {d_states}{weights}]")
        src("")

    def _seed(self, src: Source) -> None:
        spec = self.spec
        seed = naming.adjoint(spec.output)
        src("if mask is None:")
        with src:
            src(
                f"{seed} = {seed} + d_outputs[t]"
                if spec.output in spec.states
                else f"{seed} = d_outputs[t]"
            )
        src("else:")
        with src:
            src("keep = mask[t]", f"d_out = d_outputs[t] + {naming.CARRY}")
            src(
                f"{naming.CARRY} = "
                "tf.zeros_like(d_out) if zero_output_for_mask else _drop(keep, d_out)"
            )
            for s in spec.states:
                d_s = naming.adjoint(s)
                kept = f"{d_s} + d_out" if s == spec.output else d_s
                src(f"{naming.skipped(s)} = _drop(keep, {d_s})", f"{d_s} = _take(keep, {kept})")
            if spec.output not in spec.states:
                src(f"{seed} = _take(keep, d_out)")

    def _after_loop(self, src: Source, accs, n_buffers: int) -> None:
        v = self.variant
        terms = base.hoisted_terms(v)
        d_operand = self.hoisted_operand_gradients(
            src,
            terms,
            lambda g: f"_seq_matmul({naming.seq(g.adjoint)}, tf.transpose({self.weight_slice(g)}))",
        )
        d_x = [f"tas[{n_buffers}].stack()"] if v.x_grad is not None else []
        for term in terms:
            d_op = d_operand[term["group"].name]
            if term["var"] == "x":
                d_x.append(self.hoisted_term(term, d_op))
            else:
                b = term["block"]
                value = f"tf.reduce_sum({self.hoisted_term(term, d_op, True)}, [0, 1])"
                self.add_weight_term(b.weight, self.place(value, b.weight, b.row, b))
        src(f"d_x = {' + '.join(d_x) if d_x else 'tf.zeros_like(x)'}")
        for g in v.groups:
            value = f"_seq_outer({base.operand_seq(self.spec, g)}, {naming.seq(g.adjoint)})"
            self.add_weight_term(g.weight, self.place(value, g.weight, None, g))
        src(*self.emit(v.reductions))
        for i, s in enumerate(accs):
            if isinstance(s, symbolic.Accumulate):
                b = s.block
                self.add_weight_term(b.weight, self.place(f"acc[{i}]", b.weight, b.row, b))
        self.weight_gradients(src)
