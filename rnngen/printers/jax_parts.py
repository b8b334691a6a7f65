"""The JAX printer's per-step pieces of the fused backward scan (see :mod:`.jax`): which forward
sequences one step reads, the output's gradient entering a step, and the step's input gradient
and weight-gradient terms, summed in the scan's carry instead of kept for every step."""

from __future__ import annotations

from .. import naming, symbolic
from . import base
from .base import Source


class BackwardStep:
    """Mixin of :class:`~rnngen.printers.jax.JaxPrinter`: the body of one backward step."""

    def backward_streams(self) -> list[tuple[str, str]]:
        """``(name, array over steps)`` for each forward value one backward step reads."""
        out = []
        state_seqs = {naming.seq(s) for s in self.spec.states}
        for line in base.backward_reads(self.spec, self.variant):  # "name = <seq>[index]"
            target, _, value = line.partition(" = ")
            seq, _, index = value.partition("[")
            if index == "t + 1]":
                out.append((target, f"{seq}[1:]"))
            elif seq in state_seqs:
                out.append((target, f"{seq}[:-1]"))
            else:
                out.append((target, seq))
        return out

    def stream_lines(self, streams: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
        """``(xs, lines)``: the arrays the backward scan walks over, and the lines that bind a
        step's values from them. A state entering step t is the state after step t - 1 (or
        the initial state), read by index: no shifted copy of the sequence."""
        xs, lines, names = [], [], []
        for name, seq in streams:
            state = seq.partition("[")[0].removesuffix(naming.seq(""))
            if seq.endswith("[1:]"):
                xs.append(f"{state}_after")
                names.append(name)
            elif seq.endswith("[:-1]"):
                i = self.spec.states.index(state)
                lines.append(f'{name} = _before({state}_after, t, residuals["initial_state"][{i}])')
            else:
                xs.append(seq)
                names.append(name)
        if lines:
            xs.append("jnp.arange(T)")
            names.append("t")
        return xs, [f"{tuple_of([*names, 'd_output', 'keep'])} = xs", *lines]

    def step_operand(self, streams: list[tuple[str, str]], seq: str) -> str:
        """The name one backward step binds ``seq``'s step to (added to ``streams`` if new)."""
        for name, value in streams:
            if value == seq:
                return name
        if seq == "x":
            name = naming.X_T
        elif seq.endswith("[:-1]") or seq.endswith("[1:]"):
            state = seq.partition("[")[0].removesuffix(naming.seq(""))
            name = naming.prev(state) if seq.endswith("[:-1]") else state
        else:
            name = seq.removesuffix(naming.seq(""))
        streams.append((name, seq))
        return name

    def _seed(self, src: Source) -> None:
        """The output's gradient enters the step; a masked step passes gradients through."""
        spec = self.spec
        seed = naming.adjoint(spec.output)
        src("if mask is None:")
        with src:
            src(
                f"{seed} = {seed} + d_output"
                if spec.output in spec.states
                else f"{seed} = d_output"
            )
        src("else:")
        with src:
            src(f"d_out = d_output + {naming.CARRY}")
            src(
                f"{naming.CARRY} = jnp.zeros_like(d_out) if zero_output_for_mask "
                "else jnp.where(keep, 0.0, d_out)"
            )
            for s in spec.states:
                d_s = naming.adjoint(s)
                kept = f"{d_s} + d_out" if s == spec.output else d_s
                src(
                    f"{naming.skipped(s)} = jnp.where(keep, 0.0, {d_s})",
                    f"{d_s} = jnp.where(keep, {kept}, 0.0)",
                )
            if spec.output not in spec.states:
                src(f"{seed} = jnp.where(keep, d_out, 0.0)")

    @staticmethod
    def carried(weight: str, accs: list[str]) -> str:
        """The carry's sum of a weight's gradient (renamed if a vector block has its name)."""
        d_w = naming.adjoint(weight)
        return d_w + "_steps" if d_w in accs else d_w

    def _in_loop(self, src: Source, streams: list[tuple[str, str]], accs: list[str]) -> bool:
        """Inside a backward step: this step's input gradient and its terms of every weight
        gradient (summed into the carry). Returns whether the step has an input gradient."""
        v = self.variant
        terms = base.hoisted_terms(v)
        for term in terms:  # the hoisted operands' sequences read at this step
            for key in ("value", "factor"):
                e = term[key]
                names = {str(n) for n in getattr(e, "free_symbols", ())}
                for op in names & ({"x"} | set(self.hoisted_operands())):
                    name = self.step_operand(streams, op)
                    e = e.subs(symbolic.symbol(op), symbolic.symbol(name))
                term[key] = e
        d_operand = self.hoisted_operand_gradients(
            src, terms, lambda g: f"{g.adjoint} @ {self.weight_slice(g)}.T"
        )
        has_d_x = v.x_grad is not None or any(t["var"] == "x" for t in terms)
        if v.x_grad is not None:
            src(f"d_x = {self.expr(v.x_grad)}")
        for term in terms:
            d_op = d_operand[term["group"].name]
            if term["var"] == "x":
                src(f"d_x {'=' if term['first_x'] else '+='} {self.hoisted_term(term, d_op)}")
            else:
                b = term["block"]
                value = f"({self.hoisted_term(term, d_op, True)}).sum(0)"
                self.add_weight_term(b.weight, self.block_index(b), value)
        for g in v.groups:
            cols = "" if g.full else f"[:, {self.expr(g.start)} : {self.expr(g.stop)}]"
            operand = self.step_operand(streams, base.operand_seq(self.spec, g))
            self.add_weight_term(g.weight, cols, f"{operand}.T @ {g.adjoint}")
        reduced: dict[str, int] = {}
        for r in v.reductions:
            reduced[r.group.adjoint] = reduced.get(r.group.adjoint, 0) + 1
        for adjoint, n in reduced.items():
            if n > 1:  # several bias blocks read it: summed once
                src(f"{naming.adjoint_sum(adjoint)} = {adjoint}.sum(0)")
        self.summed = {a: n > 1 for a, n in reduced.items()}
        src(*self.emit(v.reductions))
        for weight, terms_of in self.weight_terms.items():
            d_w = self.carried(weight, accs)
            for index, value in terms_of:
                src(f"{d_w} = {d_w}.at{index}.add({value})" if index else f"{d_w} += {value}")
        return has_d_x


def tuple_of(names) -> str:
    """Source of a tuple of names: ``()``, ``(a,)``, ``(a, b)``."""
    names = list(names)
    if len(names) == 1:
        return f"({names[0]},)"
    return f"({', '.join(names)})"
