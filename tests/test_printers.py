"""Statement printers: every IR statement prints on every backend, and what a printer emits
computes what the equations say. No TensorFlow here: the printed NumPy statements are run,
and compared with the step written out by hand (forward) and with finite differences of the
step (backward)."""

from __future__ import annotations

import dataclasses
import inspect
import re

import numpy as np
import pytest

from rnngen import codegen, functions, ir, naming, spec, symbolic
from rnngen.printers import base, keras_ops
from rnngen.printers.keras_ops import KerasOpsPrinter
from rnngen.printers.latex import DerivationPrinter
from rnngen.printers.numpy import NumpyPrinter

PRINTERS = [b.printer for b in codegen.BACKENDS] + [DerivationPrinter]
STATEMENTS = [
    cls
    for _, cls in inspect.getmembers(ir, inspect.isclass)
    if dataclasses.is_dataclass(cls)
    and cls.__module__ == ir.__name__
    and cls not in (ir.Group, ir.Variant, ir.Derivation)
]

TINY = """\
name: tiny
class_name: Tiny
weights:
  kernel: {shape: [input_dim, units], initializer: glorot_uniform}
  recurrent_kernel: {shape: [units, units], initializer: orthogonal}
  bias: {shape: [units], initializer: zeros}
states: [h]
step:
  h: tanh(x @ kernel + h_prev @ recurrent_kernel + bias)
"""

TWO_STATES = """\
name: two
class_name: Two
weights:
  kernel: {shape: [input_dim, 2 * units], blocks: [kernel_a, kernel_b], initializer: zeros}
  recurrent_kernel: {shape: [units, 2 * units], blocks: [rk_a, rk_b], initializer: zeros}
states: [h, c]
step:
  a: sigmoid(x @ kernel_a + h_prev @ rk_a)
  c: a * c_prev + (1 - a) * tanh(x @ kernel_b + h_prev @ rk_b)
  h: tanh(c) * a
"""


def _variant(text):
    cs = spec.parse(text, "<test>")
    return cs, symbolic.derive(cs).variants[0]


def test_every_statement_has_a_print_method_on_every_printer():
    assert len(STATEMENTS) >= 9, STATEMENTS
    missing = [
        f"{p.__name__}._print_{cls.__name__}"
        for p in PRINTERS
        for cls in STATEMENTS
        if not hasattr(p, f"_print_{cls.__name__}")
    ]
    assert not missing, missing


def _step_inputs(rng, B=3, D=4, U=5):
    return {
        "x": rng.standard_normal((B, D)),
        "h_prev": rng.standard_normal((B, U)),
        "kernel": rng.standard_normal((D, U)) * 0.5,
        "recurrent_kernel": rng.standard_normal((U, U)) * 0.5,
        "bias": rng.standard_normal(U),
    }


def _run_forward_step(cs, v, values):
    """Run the printed forward statements of one step (hoisted products given for this step)."""
    printer = NumpyPrinter(cs, v)
    ns = {"np": np, "tanh": np.tanh, **values}
    for g in v.hoisted:  # the loop binds this step's slice of the input projection
        ((p, _),) = g.products
        bias = sum(values[b.name] for _, bs in g.folded for b in bs)
        ns[naming.at_step(g.name)] = values[g.operand] @ values[g.weight] + bias
    exec("\n".join(printer.emit(v.forward, in_step=True)), ns)
    return ns


def test_printed_forward_step_computes_the_equation():
    cs, v = _variant(TINY)
    values = _step_inputs(np.random.default_rng(0))
    ns = _run_forward_step(cs, v, values)
    expected = np.tanh(
        values["x"] @ values["kernel"]
        + values["h_prev"] @ values["recurrent_kernel"]
        + values["bias"]
    )
    np.testing.assert_allclose(ns["h"], expected, rtol=0, atol=1e-14)


def test_printed_backward_step_matches_finite_differences():
    """d_h_prev from the printed backward statements equals the finite-difference
    vector-Jacobian product of the step h_prev -> h, to 1e-8 (float64, central, eps 1e-6)."""
    cs, v = _variant(TINY)
    rng = np.random.default_rng(1)
    values = _step_inputs(rng)
    d_h = rng.standard_normal(values["h_prev"].shape)
    ns = _run_forward_step(cs, v, values)
    printer = NumpyPrinter(cs, v)
    buffers = {naming.seq(n): np.zeros((1, *d_h.shape)) for n, _ in base.adjoint_buffers(v)}
    transposed = {
        printer.transposed_name(s.group): values[s.group.weight].T
        for s in v.backward
        if isinstance(s, ir.OperandVJP)
    }
    back = {"np": np, "t": 0, "h": ns["h"], "d_h": d_h, **buffers, **transposed}
    # the table's derivative of tanh, as the generated module defines it
    back["tanh_grad"] = eval(f"lambda y: {functions.TABLE['tanh'].grad}", {"np": np})
    exec("\n".join(printer.emit(v.backward)), back)
    ((state, expr),) = v.state_grads
    d_h_prev = (
        back[naming.adjoint(state)]
        if state in base.written_by_vjp(v)
        else eval(printer.expr(expr), back)
    )

    def step(h_prev):
        return _run_forward_step(cs, v, {**values, "h_prev": h_prev})["h"]

    eps, fd = 1e-6, np.zeros_like(values["h_prev"])
    for idx in np.ndindex(fd.shape):
        e = np.zeros_like(fd)
        e[idx] = eps
        fd[idx] = np.sum(d_h * (step(values["h_prev"] + e) - step(values["h_prev"] - e))) / (
            2 * eps
        )
    np.testing.assert_allclose(d_h_prev, fd, rtol=0, atol=1e-8)


def test_tf_module_prints_the_keras_ops_step_and_the_fused_op_from_one_forward_ir():
    """The TF layer's functions are a keras.ops step (the loop, every Keras backend), printed
    by the keras.ops printer, and the fused op, printed by the TF printer: each prints every
    forward statement once, with no tf call in the step and no keras.ops call in the op."""
    cs, v = _variant(TWO_STATES)
    tf_printer = codegen.BACKENDS[1].printer(cs, v)
    ops_printer = KerasOpsPrinter(cs, v)
    fused = tf_printer.fused_function()
    step = ops_printer.step_function()
    assert tf_printer.functions() == step + "\n\n" + fused
    op_body = tf_printer.step_body()  # the forward statements as the op's loop prints them
    step_body = ops_printer.emit(v.forward, in_step=True)
    assert op_body and len(step_body) == len(op_body)
    for line in op_body:
        assert line in fused, line
    for line in step_body:
        assert line in step, line
    assert "tf." not in step and "ops.sigmoid(" in step and "ops.tanh(" in step
    assert "ops." not in fused and "sigmoid(" in fused
    # the same arithmetic: the step's statements are the op's, calls spelled per backend
    as_op = [re.sub(r"ops\.matmul\((\w+), (\w+)\)", r"\1 @ \2", line) for line in step_body]
    assert [line.replace("ops.", "") for line in as_op] == op_body


def test_keras_ops_spells_every_table_function():
    assert keras_ops.missing() == []


def test_simple_rnn_backward_reads_like_min_char_rnn():
    """The gradient buffer is named after what it holds and the recurrent gradient is written
    into d_h directly: no alias statements."""
    cs = spec.load(codegen.spec_dir() / "simple_rnn.yaml")
    v = symbolic.derive(cs).variants[0]
    text = codegen.format_python(NumpyPrinter(cs, v).backward_function(), "b.py")
    lines = [line.strip() for line in text.splitlines()]
    assert "d_h_pre = activation_vjp(h, d_h)" in lines
    assert "d_h_pre_seq[t] = d_h_pre" in lines
    assert "d_h = d_h_pre @ recurrent_kernel_T" in lines
    assert "d_kernel = _all_steps(x).T @ _all_steps(d_h_pre_seq)" in lines
    assert not [line for line in lines if "_via_" in line or "0.0 *" in line]


@pytest.mark.parametrize(("name", "masked"), [("simple_rnn", "x_dropped"), ("gru", "x_dropped0")])
def test_a_gate_index_appears_only_where_masks_are_per_gate(name, masked):
    cs = spec.load(codegen.spec_dir() / f"{name}.yaml")
    v = next(v for v in symbolic.derive(cs).variants if v.dropout)
    operands = {g.operand for g in v.groups}
    assert masked in operands, operands


def test_latex_names_come_from_the_ir():
    cs, v = _variant(TINY)
    latex = DerivationPrinter(cs, v)
    backward = latex.backward()
    assert r"\delta h^{\mathrm{pre}} &= " in backward
    assert r"\delta h_{t-1}^{(\mathrm{recurrent\_kernel})}" in backward
    assert latex.gradient("h") == r"\delta h"


def test_fresh_names_never_collide():
    taken = {"a", "a2"}
    assert naming.fresh("a", taken) == "a3"
    assert naming.fresh("b", taken) == "b"
    assert {"a3", "b"} <= taken
