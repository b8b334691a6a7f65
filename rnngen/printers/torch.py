"""The PyTorch backend: a printer that writes each variant's step, forward and BPTT functions.

``_step_v<k>`` is one step, for the plain loop that torch autograd differentiates
(``implementation="autograd"``). ``_forward_v<k>``/``_backward_v<k>`` are the two halves of
the fused ``torch.autograd.Function``: the forward hoists the input projection out of the
loop and keeps what the backward reads; the backward is the derived BPTT. Arrays are
time-major inside these functions: ``x`` is (T, B, input_dim) and every state buffer is
(T + 1, B, units). The module skeleton around them is ``templates/torch_module.py.j2``.
"""

from __future__ import annotations

import sympy as sp

from .. import naming, symbolic
from . import base
from .base import Source, StatementPrinter
from .expressions import TorchCode


class TorchPrinter(StatementPrinter, TorchCode):
    """Prints one variant's program as PyTorch (``torch`` imported as ``torch``)."""

    def __init__(self, spec, variant, settings=None):
        super().__init__(settings)
        self.spec = spec
        self.variant = variant
        self.read: set[str] = set()  # symbols printed so far (so sizes know what to bind)

    # -- statements ----------------------------------------------------------------------------

    def _print_Assign(self, s: symbolic.Assign) -> str:
        line = f"{s.target} = {self.value(s.expr)}"
        if self.in_step and s.target in self.variant.broadcast:
            first = naming.prev(self.spec.states[0])
            line += f"\n{s.target} = {s.target}.expand_as({first})  # weights alone"
        return line

    def _print_GroupProduct(self, s: symbolic.GroupProduct) -> str:
        g = s.group
        lines = [f"{g.name} = {g.operand} @ {self.weight_slice(g)}"]
        if len(g.products) > 1 and side_by_side(g):  # one op for every block's columns
            names = ", ".join(p for p, _ in g.products)
            widths = ", ".join(self.expr(b.stop - b.start) for _, b in g.products)
            lines.append(f"{names} = {g.name}.split([{widths}], -1)")
        elif len(g.products) > 1:
            axis = "..." if g.static else ":"
            lines += [f"{p} = {g.name}[{axis}, {self.columns(g, b)}]" for p, b in g.products]
        return "\n".join(lines)

    def _print_StoreAdjoint(self, s: symbolic.StoreAdjoint) -> str:
        """This step's gradient of a group's products, one tensor (kept in a list)."""
        g = s.group
        if not writes_adjoint(g):  # equal to the gradient another group stores
            return ""
        if len(g.products) == 1:  # kept in a list, stacked after the loop
            value = self.expr(s.values[0])
            lines = [] if value == g.adjoint else [f"{g.adjoint} = {value}"]
            return "\n".join([*lines, f"{steps(g.adjoint)}.append({g.adjoint})"])
        # several blocks: written side by side into this step's row of the buffer
        parts = [
            self.expr(value) if value != 0 else f"x.new_zeros((B, {self.expr(b.stop - b.start)}))"
            for (_, b), value in zip(g.products, s.values, strict=True)
        ]
        read = any(
            isinstance(o, symbolic.OperandVJP) and o.group.adjoint == g.adjoint
            for o in self.variant.backward
        )
        return "\n".join(
            [
                f"{g.adjoint} = torch.cat(" if read else "torch.cat(",
                f"    [{', '.join(parts)}], -1, out={naming.seq(g.adjoint)}[t]",
                ")",
            ]
        )

    def _print_OperandVJP(self, s: symbolic.OperandVJP) -> str:
        g = s.group
        return f"{s.target} = {g.adjoint} @ {self.transposed_name(g)}"

    def _print_Accumulate(self, s: symbolic.Accumulate) -> str:
        return f"{naming.adjoint(s.block.name)} += ({self.expr(s.expr)}).sum(0)"

    def _print_AccumulateStatic(self, s: symbolic.AccumulateStatic) -> str:
        return f"{naming.adjoint(s.name)} += ({self.expr(s.expr)}).sum(0)"

    def _print_StaticVJP(self, s: symbolic.StaticVJP) -> str:
        b = s.block
        cols = "" if b.full else f"[:, {self.expr(b.start)} : {self.expr(b.stop)}]"
        d_product = naming.adjoint(s.product)
        return (
            f'd_weights["{b.weight}"]{cols} += torch.outer({s.group.operand}, {d_product})\n'
            f"{s.target} = {b.weight}{cols} @ {d_product}"
        )

    def _print_StaticGrad(self, s: symbolic.StaticGrad) -> str:
        b = s.block
        return f'd_weights["{b.weight}"]{self.block_index(b)} += {self.expr(s.expr)}'

    def _print_Reduce(self, r: symbolic.Reduce) -> str:
        g = r.group
        value = naming.adjoint_sum(g.adjoint)
        if len(g.products) > 1:
            block = next(b for p, b in g.products if p == r.product)
            value += f"[{self.columns(g, block)}]"
        return f'd_weights["{r.block.weight}"]{self.block_index(r.block)} += {value}'

    def transposed_name(self, g: symbolic.Group) -> str:
        """A group's weight slice, transposed and contiguous, for the per-step VJP."""
        return naming.transposed(g.name.removeprefix(g.operand + "_"))

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
            parts.append(
                " + ".join(names) if names else f"{like}.new_zeros({self.expr(b.stop - b.start)})"
            )
        return parts[0] if len(parts) == 1 else f"torch.cat([{', '.join(parts)}])"

    def hoist(self, src: Source, g: symbolic.Group, operand_source: str | None) -> None:
        """``g``'s input projection (every step, or one in the step function), biases folded."""
        v = self.variant
        if g.operand != "x" and base.first_operand(v, g):
            src(f"{g.operand} = {self.expr(g.operand_expr)}")
        operand = operand_source or g.operand
        src(f"{g.name} = {operand} @ {self.weight_slice(g)}")
        if g.folded:
            src(f"{g.name} = {g.name} + {self.folded_bias(g, g.name)}")

    def written_in_place(self) -> set[str]:
        """Adjoint buffers of several blocks: each step's row written in place (one copy);
        a one-block gradient is kept in a list and stacked once after the loop."""
        return {g.adjoint for g in self.variant.groups if writes_adjoint(g) and len(g.products) > 1}

    def stacked_stored(self) -> set[str]:
        """Stored forward values read after the backward loop (a weight gradient's operand),
        which the forward pass stacks; the others stay lists of steps (no copy)."""
        operands = {base.operand_seq(self.spec, g) for g in self.variant.groups}
        return {name for name, _ in self.variant.stored if naming.seq(name) in operands}

    # -- functions -----------------------------------------------------------------------------

    def functions(self) -> str:
        return "\n\n".join(
            [self.step_function(), self.forward_function(), self.backward_function()]
        )

    def step_function(self) -> str:
        """One step on batch rows, for the plain autograd loop. Returns (output, new states)."""
        v, spec = self.variant, self.spec
        states = spec.states
        self.read = set()
        body = Source()
        self._bind(body, [n for n, _ in v.weights], base.sliced_vectors(v), v.masks, "masks")
        body(*self.emit(v.prelude))
        for g in v.hoisted:
            self.hoist(body, g, None)
            if len(g.products) > 1:
                for p, b in g.products:
                    body(f"{p} = {g.name}[:, {self.columns(g, b)}]")
            else:
                body(f"{naming.at_step(g.name)} = {g.name}")
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

    def forward_function(self) -> str:
        v, spec = self.variant, self.spec
        states = spec.states
        args = ["x", "weights", "initial_state", "mask", "masks", "zero_output_for_mask"]
        self.read = set()
        src = Source()
        src(
            base.signature(f"_forward_{v.name}", args + base.activation_arguments(spec, naming.vjp))
        )
        with src:
            src(
                f'"""Forward pass for {v.describe()}.',
                "",
                "Runs without autograd (inside the fused op). Each step's values are Python lists",
                "(no per-step indexing or copies), stacked once after the loop.",
                f"x: (T, B, input_dim), time-major. initial_state: {len(states)} tensors "
                "(B, units).",
                "mask: (T, B, 1) bool or None. "
                "Returns (outputs (T, B, units), final states, tape).",
                '"""',
            )
            src("T, B, input_dim = x.shape", "units = initial_state[0].shape[-1]")
            self._bind(src, [n for n, _ in v.weights], base.sliced_vectors(v), v.masks, "masks")
            if v.prelude:
                src("", "# values of the weights alone: the same at every step, computed once")
                src(*self.emit(v.prelude))
            if v.hoisted:
                src("", "# input projections for every step at once, and each step's slice")
                for g in v.hoisted:
                    self.hoist(src, g, None)
                for g in v.hoisted:
                    if len(g.products) > 1:
                        for p, b in g.products:
                            src(f"{views(p)} = {g.name}[..., {self.columns(g, b)}].unbind(0)")
                    else:
                        src(f"{views(g.name)} = {g.name}.unbind(0)")
            if base.reads_x_t(v):
                src(f"{views('x')} = x.unbind(0)")
            src(f"{views('mask')} = None if mask is None else mask.unbind(0)")
            src("", "# each step's states (index t: the state entering step t), stored values")
            for i, s in enumerate(states):
                src(f"{steps(s)} = [initial_state[{i}]]")
            for name, _ in v.stored:
                src(f"{steps(name)} = []")
            if spec.output not in states:
                src(f"{steps('out')} = []")
            else:
                src(f"{steps('out')} = None if mask is None else []")
            src("for t in range(T):")
            with src:
                for s in states:
                    src(f"{naming.prev(s)} = {steps(s)}[t]")
                if base.reads_x_t(v):
                    src(f"{naming.X_T} = {views('x')}[t]")
                for g in v.hoisted:
                    if len(g.products) > 1:
                        for p, _ in g.products:
                            src(f"{p} = {views(p)}[t]")
                    else:
                        src(f"{naming.at_step(g.name)} = {views(g.name)}[t]")
                src(*self.emit(v.forward, in_step=True))
                for name, _ in v.stored:
                    src(f"{steps(name)}.append({self.step_expr(name)})")
                src("if mask is None:")
                with src:
                    for s in states:
                        src(f"{steps(s)}.append({s})")
                    if spec.output not in states:
                        src(f"{steps('out')}.append({spec.output})")
                src("else:")
                with src:
                    src(f"keep = {views('mask')}[t]")
                    for s in states:
                        src(f"{steps(s)}.append(torch.where(keep, {s}, {naming.prev(s)}))")
                    src(
                        f"previous = 0.0 if zero_output_for_mask or t == 0 else {steps('out')}[-1]",
                        f"{steps('out')}.append(torch.where(keep, {spec.output}, previous))",
                    )
            for s in states:
                src(f"{naming.seq(s)} = torch.stack({steps(s)})")
            for name, size in v.stored:  # stacked only where read after the backward loop
                if name in self.stacked_stored():
                    src(f"{naming.seq(name)} = _stack({steps(name)}, x, {self.expr(size)})")
            out = f"_stack({steps('out')}, x, units)"
            if spec.output in states:
                src(f"outputs = {naming.seq_after(spec.output)} if mask is None else {out}")
            else:
                src(f"outputs = {out}")
            src("tape = {")
            with src:
                for key in ("x", "mask", "masks", "zero_output_for_mask", "weights"):
                    src(f'"{key}": {key},')
                for s in states:
                    src(f'"{s}": {naming.seq(s)},')
                for name, _ in v.stored:
                    value = naming.seq(name) if name in self.stacked_stored() else steps(name)
                    src(f'"{name}": {value},')
                for operand in self.hoisted_operands():
                    src(f'"{operand}": {operand},')
                for name in base.static_reads(v):
                    src(f'"{name}": {name},')
            src("}")
            finals = ", ".join(f"{naming.seq(s)}[T]" for s in states)
            src(f"return outputs, [{finals}], tape")
        return src.text()

    def backward_function(self) -> str:
        v, spec = self.variant, self.spec
        states = spec.states
        src = Source()
        args = ["tape", "d_outputs", "d_states"]
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
                f"d_states: {len(states)} tensors (B, units), gradients of the final states.",
                "Returns (d_x (T, B, input_dim), d_initial_state, d_weights).",
                '"""',
            )
            src(
                'x, mask = tape["x"], tape["mask"]',
                "T, B, input_dim = x.shape",
                f'units = tape["{states[0]}"].shape[-1]',
                'weights = tape["weights"]',
                'zero_output_for_mask = tape["zero_output_for_mask"]',
            )
            self._bind(
                src,
                base.backward_weights(v),
                base.sliced_vectors(v, backward=True),
                base.backward_masks(v),
                'tape["masks"]',
            )
            for s in base.backward_states(spec, v):
                src(f'{naming.seq(s)} = tape["{s}"]')
            listed = set()
            for name, _ in v.stored:
                if name in self.stacked_stored():
                    src(f'{naming.seq(name)} = tape["{name}"]')
                else:  # the forward pass's list of steps
                    src(f'{views(naming.seq(name))} = tape["{name}"]')
                    listed.add(naming.seq(name))
            for operand in self.hoisted_operands():
                src(f'{operand} = tape["{operand}"]')
            for name in base.static_reads(v):
                src(f'{name} = tape["{name}"]')
            src("", "# each step's forward values, read in the loop")
            reads, unbound = [], set(listed)
            for line in base.backward_reads(spec, v):  # "name = <seq>[index]"
                target, _, value = line.partition(" = ")
                seq, _, index = value.partition("[")
                reads.append(f"{target} = {views(seq)}[{index}")
                if seq not in unbound:
                    unbound.add(seq)
                    src(f"{views(seq)} = {seq}.unbind(0)")
            src(f"{views('d_outputs')} = d_outputs.unbind(0)")
            src(f"{views('mask')} = None if mask is None else mask.unbind(0)")
            src("", "# gradients of the weight products, for every step")
            for name, width in base.adjoint_buffers(v):
                if name in self.written_in_place():
                    src(f"{naming.seq(name)} = x.new_empty((T, B, {self.expr(width)}))")
                else:
                    src(f"{steps(name)} = []")
            for s in v.backward:
                if isinstance(s, symbolic.Accumulate):
                    src(
                        f"{naming.adjoint(s.block.name)} = "
                        f"x.new_zeros({self.expr(s.block.stop - s.block.start)})"
                    )
            for s in v.backward:
                if isinstance(s, symbolic.AccumulateStatic):
                    src(f"{naming.adjoint(s.name)} = x.new_zeros({self.expr(s.size)})")
            if v.x_grad is not None:
                src(f"{steps('d_x')} = []")
            for i, s in enumerate(states):
                src(f"{naming.adjoint(s)} = d_states[{i}].clone()")
            src(f"{naming.CARRY} = torch.zeros_like({naming.adjoint(states[0])})")
            for s in v.backward:
                if isinstance(s, symbolic.OperandVJP):
                    g = s.group
                    src(
                        f"{self.transposed_name(g)} = "
                        f"{self.weight_slice(g)}.t().contiguous()  # read every step"
                    )
            src("for t in range(T - 1, -1, -1):")
            with src:
                src(*reads)
                self._seed(src)
                src(*self.emit(v.backward))
                if v.x_grad is not None:
                    src(f"{steps('d_x')}.append({self.expr(v.x_grad)})")
                for s, e in v.state_grads:
                    d_s = naming.adjoint(s)
                    if e == symbolic.symbol(d_s):  # written by the transpose rule above
                        continue
                    src(f"{d_s} = {self.expr(e) if e != 0 else 'torch.zeros_like(' + d_s + ')'}")
                src("if mask is not None:")
                with src:
                    for s in states:
                        src(f"{naming.adjoint(s)} = {naming.adjoint(s)} + {naming.skipped(s)}")
            src("", "# the steps' gradients in time order")
            for name, width in base.adjoint_buffers(v):
                if name not in self.written_in_place():
                    src(f"{naming.seq(name)} = _stack({steps(name)}[::-1], x, {self.expr(width)})")
            if v.x_grad is not None:
                src(f"d_x = _stack({steps('d_x')}[::-1], x, input_dim)")
            src(
                "",
                "# input gradients and weight gradients: one matrix product each, over all steps",
            )
            src("d_weights = {name: torch.zeros_like(w) for name, w in weights.items()}")
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

    def _seed(self, src: Source) -> None:
        """The output's gradient enters the step; a masked step passes gradients through."""
        spec = self.spec
        seed = naming.adjoint(spec.output)
        d_output = f"{views('d_outputs')}[t]"
        src("if mask is None:")
        with src:
            src(
                f"{seed} = {seed} + {d_output}"
                if spec.output in spec.states
                else f"{seed} = {d_output}"
            )
        src("else:")
        with src:
            src(f"keep = {views('mask')}[t]", f"d_out = {d_output} + {naming.CARRY}")
            src(
                f"{naming.CARRY} = torch.zeros_like(d_out) if zero_output_for_mask "
                "else torch.where(keep, 0.0, d_out)"
            )
            for s in spec.states:
                d_s = naming.adjoint(s)
                kept = f"{d_s} + d_out" if s == spec.output else d_s
                src(
                    f"{naming.skipped(s)} = torch.where(keep, 0.0, {d_s})",
                    f"{d_s} = torch.where(keep, {kept}, 0.0)",
                )
            if spec.output not in spec.states:
                src(f"{seed} = torch.where(keep, d_out, 0.0)")

    def _after_loop(self, src: Source) -> None:
        """Input and weight gradients over every step: one matrix product each."""
        v = self.variant
        terms = base.hoisted_terms(v)
        done = set()
        for term in terms:
            g = term["group"]
            if g.name not in done:
                done.add(g.name)
                d_op = naming.input_gradient_of(g.operand, g.name)
                src(f"{d_op} = {naming.seq(g.adjoint)} @ {self.weight_slice(g)}.t()")
        for term in terms:
            g = term["group"]
            d_op = naming.input_gradient_of(g.operand, g.name)
            if term["var"] == "x":
                src(f"d_x {'=' if term['first_x'] else '+='} {self.hoisted_term(term, d_op)}")
            else:
                b = term["block"]
                src(
                    f'd_weights["{b.weight}"]{self.block_index(b)} += '
                    f"({self.hoisted_term(term, d_op, True)}).sum((0, 1))"
                )
        if v.x_grad is None and not any(t["var"] == "x" for t in terms):
            src("d_x = torch.zeros_like(x)")
        for g in v.groups:
            cols = "" if g.full else f"[:, {self.expr(g.start)} : {self.expr(g.stop)}]"
            src(
                f'd_weights["{g.weight}"]{cols} += (',
                f"    _all_steps({base.operand_seq(self.spec, g)}).t()"
                f" @ _all_steps({naming.seq(g.adjoint)})",
                ")",
            )
        for adjoint in dict.fromkeys(r.group.adjoint for r in v.reductions):
            src(f"{naming.adjoint_sum(adjoint)} = _all_steps({naming.seq(adjoint)}).sum(0)")
        src(*self.emit(v.reductions))
        for s in v.backward:
            if isinstance(s, symbolic.Accumulate):
                b = s.block
                src(f'd_weights["{b.weight}"]{self.block_index(b)} += {naming.adjoint(b.name)}')


def writes_adjoint(g: symbolic.Group) -> bool:
    """Whether ``g`` stores its products' gradient (groups with equal gradients share one)."""
    return getattr(g, "writes_adjoint", g.adjoint == naming.adjoint(g.name))


def steps(name: str) -> str:
    """The list a loop appends each step's value of ``name`` to: ``<name>_steps``."""
    return f"{name}_steps"


def views(name: str) -> str:
    """Each step's view of a (T, ...) tensor, unbound once before a loop: ``<name>_views``."""
    return f"{name}_views"


def side_by_side(g: symbolic.Group) -> bool:
    """Whether a group's blocks, in order, cover its columns one after another."""
    edge = g.start
    for _, b in g.products:
        if sp.simplify(b.start - edge) != 0:
            return False
        edge = b.stop
    return sp.simplify(edge - g.stop) == 0
