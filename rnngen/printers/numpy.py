"""The NumPy backend: a printer that writes each variant's forward and BPTT functions.

Arrays are time-major inside these functions: ``x`` is (T, B, input_dim) and every state
buffer is (T + 1, B, units). The module skeleton around them is
``templates/numpy_layer.py.j2``.
"""

from __future__ import annotations

from .. import naming, symbolic
from . import base
from .base import Source, StatementPrinter
from .expressions import NumpyCode


class NumpyPrinter(StatementPrinter, NumpyCode):
    """Prints one variant's program as NumPy (``numpy`` imported as ``np``)."""

    def __init__(self, spec, variant, settings=None):
        super().__init__(settings)
        self.spec = spec
        self.variant = variant
        self.weight_terms: dict[str, list[tuple[str, str]]] = {}

    # -- statements ----------------------------------------------------------------------------

    def _print_Assign(self, s: symbolic.Assign) -> str:
        return f"{s.target} = {self.value(s.expr)}"

    def _print_GroupProduct(self, s: symbolic.GroupProduct) -> str:
        """A group's products as one matrix product, then each block's columns."""
        g = s.group
        lines = [f"{g.name} = {g.operand} @ {self.weight_slice(g)}"]
        if len(g.products) > 1:
            axis = "..." if g.static else ":"
            lines += [f"{p} = {g.name}[{axis}, {self.columns(g, b)}]" for p, b in g.products]
        return "\n".join(lines)

    def _print_StoreAdjoint(self, s: symbolic.StoreAdjoint) -> str:
        g = s.group
        if not g.writes_adjoint:  # equal to the gradient another group stores
            return ""
        buffer = naming.seq(g.adjoint)
        if len(g.products) == 1:
            return f"{buffer}[t] = {self.expr(s.values[0])}"
        return "\n".join(
            f"{buffer}[t, :, {self.columns(g, b)}] = {self.expr(value)}"
            for (_, b), value in zip(g.products, s.values, strict=True)
            if value != 0
        )

    def _print_OperandVJP(self, s: symbolic.OperandVJP) -> str:
        g = s.group
        d_products = g.adjoint if g.adjoint_bound else f"{naming.seq(g.adjoint)}[t]"
        return f"{base.vjp_target(s)} = {d_products} @ {self.transposed_name(g)}"

    def _print_Accumulate(self, s: symbolic.Accumulate) -> str:
        return f"{naming.adjoint(s.block.name)} += ({self.expr(s.expr)}).sum(axis=0)"

    def _print_AccumulateStatic(self, s: symbolic.AccumulateStatic) -> str:
        return f"{naming.adjoint(s.name)} += ({self.expr(s.expr)}).sum(axis=0)"

    def _print_StaticVJP(self, s: symbolic.StaticVJP) -> str:
        b = s.block
        cols = "" if b.full else f"[:, {self.expr(b.start)} : {self.expr(b.stop)}]"
        d_product = naming.adjoint(s.product)
        self.add_weight_term(b.weight, cols, f"np.outer({s.group.operand}, {d_product})")
        return f"{s.target} = {b.weight}{cols} @ {d_product}"

    def _print_StaticGrad(self, s: symbolic.StaticGrad) -> str:
        self.add_weight_term(s.block.weight, self.block_index(s.block), self.expr(s.expr))
        return ""

    def _print_Reduce(self, r: symbolic.Reduce) -> str:
        g = r.group
        if self.summed[g.adjoint]:
            value = naming.adjoint_sum(g.adjoint)
        else:
            value = f"_all_steps({naming.seq(g.adjoint)}).sum(axis=0)"
        if len(g.products) > 1:
            block = next(b for p, b in g.products if p == r.product)
            value += f"[{self.columns(g, block)}]"
        self.add_weight_term(r.block.weight, self.block_index(r.block), value)
        return ""

    # -- weight gradients: each weight's terms, summed into ``d_<weight>`` after the loop --------

    def add_weight_term(self, weight: str, index: str, value: str) -> None:
        """``d_<weight>[index] += value`` (``index`` empty for the whole weight)."""
        self.weight_terms.setdefault(weight, []).append((index, value))

    def weight_gradients(self, src: Source) -> None:
        """``d_<weight>`` for every weight, in Keras order: one assignment where one does."""
        bound = set(base.backward_weights(self.variant))
        for weight, _ in self.variant.weights:
            d_w = naming.adjoint(weight)
            array = weight if weight in bound else f'weights["{weight}"]'
            terms = self.weight_terms.get(weight, [])
            # a vector weight's own per-step sum may already be called d_<weight>
            terms.sort(key=lambda term: term[1] != d_w)
            if not terms or any(index for index, _ in terms):
                if terms and terms[0] == ("", d_w):  # already summed into d_<weight> in the loop
                    terms = terms[1:]
                else:
                    src(f"{d_w} = np.zeros_like({array})")
                for index, value in terms:
                    src(f"{d_w}{index} += {value}")
                continue
            values = [value for _, value in terms]
            if values[0] == d_w:  # already summed into d_<weight> in the loop
                values = values[1:]
                for value in values:
                    src(f"{d_w} += {value}")
            elif len(values) == 1 and values[0].split("[", 1)[0].isidentifier():
                # a name (or a slice of one) that another gradient may share: a copy of its own
                src(f"{d_w} = {values[0]}.copy()")
            else:
                src(f"{d_w} = {' + '.join(values)}")
        pairs = ", ".join(f'"{w}": {naming.adjoint(w)}' for w, _ in self.variant.weights)
        src(f"d_weights = {{{pairs}}}")

    def transposed_name(self, g: symbolic.Group) -> str:
        """A group's weight slice, transposed and contiguous, for the per-step VJP."""
        return naming.transposed(g.name.removeprefix(g.operand + "_"))

    # -- functions -----------------------------------------------------------------------------

    def functions(self) -> str:
        """The variant's ``_forward_v<k>`` and ``_backward_v<k>``."""
        return self.forward_function() + "\n\n" + self.backward_function()

    def _bind_weights(self, src: Source, names, vectors, masks, tape: bool) -> None:
        for name in names:
            src(f'{name} = weights["{name}"]')
        for b in vectors:
            src(f"{b.name} = {self.block_value(b)}")
        where = 'tape["masks"]' if tape else "masks"
        for m, gate, tensor in masks:
            src(f'{m} = {where}["{tensor}"][{gate}]')

    def forward_function(self) -> str:
        v, spec = self.variant, self.spec
        states = spec.states
        args = ["x", "weights", "initial_state", "mask", "masks", "zero_output_for_mask"]
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
                "mask: (T, B, 1) bool or None. "
                "Returns (outputs (T, B, units), final states, tape).",
                '"""',
            )
            dim = "input_dim" if base.needs_input_dim(v) else "_"
            src(f"T, B, {dim} = x.shape", "units = initial_state[0].shape[-1]", "dtype = x.dtype")
            self._bind_weights(
                src, [n for n, _ in v.weights], base.sliced_vectors(v), v.masks, False
            )
            if v.prelude:
                src("", "# values of the weights alone: the same at every step, computed once")
                src(*self.emit(v.prelude))
            if v.hoisted:
                src("", "# input projections for every step at once")
                for g in v.hoisted:
                    if g.operand != "x" and base.first_operand(v, g):
                        src(f"{g.operand} = {self.expr(g.operand_expr)}")
                    src(
                        f"{g.name} = _per_step(_all_steps({g.operand}) @ "
                        f"{self.weight_slice(g)}, T, B)"
                    )
                    if g.folded:
                        src(f"{g.name} += {self.folded_bias(g)}")
            src("", "# state sequences: index t holds the state entering step t")
            for i, s in enumerate(states):
                src(
                    f"{naming.seq(s)} = np.empty((T + 1, B, units), dtype)",
                    f"{naming.seq(s)}[0] = initial_state[{i}]",
                )
            for name, size in v.stored:
                src(f"{naming.seq(name)} = np.empty((T, B, {self.expr(size)}), dtype)")
            if spec.output not in states:
                src("out_seq = np.zeros((T, B, units), dtype)")
            else:
                src("out_seq = None if mask is None else np.zeros((T, B, units), dtype)")
            src("for t in range(T):")
            with src:
                for s in states:
                    src(f"{naming.prev(s)} = {naming.seq(s)}[t]")
                if base.reads_x_t(v):
                    src(f"{naming.X_T} = x[t]")
                for g in v.hoisted:
                    if len(g.products) > 1:
                        for p, b in g.products:
                            src(f"{p} = {g.name}[t, :, {self.columns(g, b)}]")
                    else:
                        src(f"{naming.at_step(g.name)} = {g.name}[t]")
                src(*self.emit(v.forward, in_step=True))
                for name, _ in v.stored:
                    src(f"{naming.seq(name)}[t] = {self.step_expr(name)}")
                src("if mask is None:")
                with src:
                    for s in states:
                        src(f"{naming.seq(s)}[t + 1] = {s}")
                    if spec.output not in states:
                        src(f"out_seq[t] = {spec.output}")
                src("else:")
                with src:
                    src("keep = mask[t]")
                    for s in states:
                        src(
                            f"np.copyto({naming.seq(s)}[t + 1], "
                            f"np.where(keep, {s}, {naming.prev(s)}))"
                        )
                    src(
                        "previous = 0.0 if zero_output_for_mask or t == 0 else out_seq[t - 1]",
                        f"out_seq[t] = np.where(keep, {spec.output}, previous)",
                    )
            if spec.output in states:
                src(f"outputs = {naming.seq_after(spec.output)} if mask is None else out_seq")
            else:
                src("outputs = out_seq")
            src("tape = {")
            with src:
                for key in ("x", "mask", "masks", "zero_output_for_mask", "weights"):
                    src(f'"{key}": {key},')
                for s in states:
                    src(f'"{s}": {naming.seq(s)},')
                for name, _ in v.stored:
                    src(f'"{name}": {naming.seq(name)},')
                for operand in self.hoisted_operands():
                    src(f'"{operand}": {operand},')
                for name in base.static_reads(v):
                    src(f'"{name}": {name},')
            src("}")
            finals = ", ".join(f"{naming.seq(s)}[T]" for s in states)
            src(f"return outputs, [{finals}], tape")
        return src.text()

    def folded_bias(self, g: symbolic.Group) -> str:
        """The bias row added to a hoisted group: its products' folded biases, in order."""
        folded = dict(g.folded)
        parts = []
        for p, b in g.products:
            names = [f.name for f in folded.get(p, ())]
            parts.append(
                " + ".join(names) if names else f"np.zeros({self.expr(b.stop - b.start)}, dtype)"
            )
        return parts[0] if len(parts) == 1 else f"np.concatenate([{', '.join(parts)}])"

    def backward_function(self) -> str:
        v, spec = self.variant, self.spec
        states = spec.states
        src = Source()
        args = ["tape", "d_outputs", "d_states", "truncate", "norms"]
        src(
            base.signature(
                f"_backward_{v.name}", args + base.activation_arguments(spec, naming.vjp)
            )
        )
        with src:
            src(
                f'"""BPTT for {v.describe()}.',
                "",
                "d_outputs: (T, B, units) gradient of each step's output, in processing order.",
                f"d_states: {base.count(len(states), 'array')} (B, units), "
                "gradients of the final states.",
                "norms: None, or a (T,) array that receives the norm of the gradient of the states",
                "entering each step.",
                "Returns (d_x (T, B, input_dim), d_initial_state, d_weights).",
                '"""',
            )
            dim = "input_dim" if base.needs_input_dim(v) else "_"
            src(
                'x, mask = tape["x"], tape["mask"]',
                f"T, B, {dim} = x.shape",
                "dtype = x.dtype",
                f'units = tape["{states[0]}"].shape[-1]',
                'weights = tape["weights"]',
                'zero_output_for_mask = tape["zero_output_for_mask"]',
            )
            self._bind_weights(
                src,
                base.backward_weights(v),
                base.sliced_vectors(v, backward=True),
                base.backward_masks(v),
                True,
            )
            for s in base.backward_states(spec, v):
                src(f'{naming.seq(s)} = tape["{s}"]')
            for name, _ in v.stored:
                src(f'{naming.seq(name)} = tape["{name}"]')
            for operand in self.hoisted_operands():
                src(f'{operand} = tape["{operand}"]')
            for name in base.static_reads(v):
                src(f'{name} = tape["{name}"]')
            src("", "# gradients of the weight products, kept for every step")
            for name, width in base.adjoint_buffers(v):
                src(f"{naming.seq(name)} = np.zeros((T, B, {self.expr(width)}), dtype)")
            for s in v.backward:
                if isinstance(s, symbolic.Accumulate):
                    src(
                        f"{naming.adjoint(s.block.name)} = "
                        f"np.zeros({self.expr(s.block.stop - s.block.start)}, dtype)"
                    )
            for s in v.backward:
                if isinstance(s, symbolic.AccumulateStatic):
                    src(f"{naming.adjoint(s.name)} = np.zeros({self.expr(s.size)}, dtype)")
            if v.x_grad is not None:
                src("d_x = np.zeros_like(x)")
            for i, s in enumerate(states):
                src(f"{naming.adjoint(s)} = np.array(d_states[{i}], dtype=dtype)")
            src(f"{naming.CARRY} = np.zeros_like({naming.adjoint(states[0])})")
            for s in v.backward:
                if isinstance(s, symbolic.OperandVJP):
                    g = s.group
                    src(
                        f"{self.transposed_name(g)} = "
                        f"np.ascontiguousarray({self.weight_slice(g)}.T)  # read every step"
                    )
            src("stop = 0 if truncate is None else max(T - truncate, 0)")
            src("for t in range(T - 1, stop - 1, -1):")
            with src:
                src(*base.backward_reads(spec, v))
                self._seed(
                    src,
                    "np.where(keep, 0.0, {})",
                    "np.where(keep, {}, 0.0)",
                    "np.zeros_like(d_out)",
                )
                src(*self.emit(v.backward))
                if v.x_grad is not None:
                    src(f"d_x[t] = {self.expr(v.x_grad)}")
                for s, e in v.state_grads:
                    d_s = naming.adjoint(s)
                    if s in base.written_by_vjp(v):  # by the transpose rule, above
                        continue
                    src(f"{d_s} = {self.expr(e) if e != 0 else f'np.zeros_like({d_s})'}")
                src("if mask is not None:")
                with src:
                    for s in states:
                        src(f"{naming.adjoint(s)} = {naming.adjoint(s)} + {naming.skipped(s)}")
                src("if norms is not None:")
                norm = " + ".join(
                    f"np.vdot({naming.adjoint(s)}, {naming.adjoint(s)})" for s in states
                )
                src.indented([f"norms[t] = np.sqrt({norm})"])
            src("if stop > 0:  # truncated: no gradient reaches the initial state")
            src.indented(
                [f"{naming.adjoint(s)} = np.zeros_like({naming.adjoint(s)})" for s in states]
            )
            src(
                "",
                "# input gradients and weight gradients: one matrix product each, over all steps",
            )
            if v.static_backward:
                src(
                    "# values of the weights alone: "
                    "their gradients summed over steps and batch, reversed once"
                )
                src(*self.emit(v.static_backward))
            self._after_loop(src)
            d_states = ", ".join(naming.adjoint(s) for s in states)
            src(f"return d_x, [{d_states}], d_weights")
        return src.text()

    def _seed(self, src: Source, drop: str, take: str, zeros: str) -> None:
        """The output's gradient enters the step; a masked step passes gradients through."""
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
            src(f"{naming.CARRY} = {zeros} if zero_output_for_mask else {drop.format('d_out')}")
            for s in spec.states:
                d_s = naming.adjoint(s)
                kept = f"{d_s} + d_out" if s == spec.output else d_s
                src(f"{naming.skipped(s)} = {drop.format(d_s)}", f"{d_s} = {take.format(kept)}")
            if spec.output not in spec.states:
                src(f"{seed} = {take.format('d_out')}")

    def _after_loop(self, src: Source) -> None:
        """Input and weight gradients over every step: one matrix product each."""
        v = self.variant
        terms = base.hoisted_terms(v)
        d_operand = self.hoisted_operand_gradients(
            src,
            terms,
            lambda g: (
                f"_per_step(_all_steps({naming.seq(g.adjoint)}) @ {self.weight_slice(g)}.T, T, B)"
            ),
        )
        for term in terms:
            d_op = d_operand[term["group"].name]
            if term["var"] == "x":
                src(f"d_x {'=' if term['first_x'] else '+='} {self.hoisted_term(term, d_op)}")
            else:
                b = term["block"]
                value = f"({self.hoisted_term(term, d_op, True)}).sum(axis=(0, 1))"
                self.add_weight_term(b.weight, self.block_index(b), value)
        if v.x_grad is None and not any(t["var"] == "x" for t in terms):
            src("d_x = np.zeros_like(x)")
        for g in v.groups:
            cols = "" if g.full else f"[:, {self.expr(g.start)} : {self.expr(g.stop)}]"
            operand = f"_all_steps({base.operand_seq(self.spec, g)})"
            self.add_weight_term(
                g.weight, cols, f"{operand}.T @ _all_steps({naming.seq(g.adjoint)})"
            )
        reduced: dict[str, int] = {}
        for r in v.reductions:
            reduced[r.group.adjoint] = reduced.get(r.group.adjoint, 0) + 1
        for adjoint, count in reduced.items():
            total = f"_all_steps({naming.seq(adjoint)}).sum(axis=0)"
            if count > 1:  # several bias blocks read it: summed once
                src(f"{naming.adjoint_sum(adjoint)} = {total}")
        self.summed = {a: count > 1 for a, count in reduced.items()}
        src(*self.emit(v.reductions))
        for s in v.backward:
            if isinstance(s, symbolic.Accumulate):
                b = s.block
                self.add_weight_term(b.weight, self.block_index(b), naming.adjoint(b.name))
        self.weight_gradients(src)
