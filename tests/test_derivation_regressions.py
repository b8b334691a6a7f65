"""Regressions of the derivation engine (issue 9): each test builds a small cell that used to
crash or be refused, and checks the generated code against an independent oracle.

The oracle is the verifier's TensorFlow interpreter of the parsed equations, differentiated by
``tf.GradientTape`` in float64 (``verify_spec(..., checks=("autodiff",))``): the NumPy layer in
float64 and both TF implementations (loop and fused), forward values and the gradients of the
inputs, initial states and every weight, over the quick configuration matrix (masks,
go_backwards, initial and stateful states, dropout, regularizers). Where that interpreter
cannot run a cell, the test writes the cell by hand in TensorFlow instead.

Tolerances (float64, as in the README): forward values 1e-10 relative to max(1, max |ref|),
gradients 1e-8 relative to the largest entry of the reference tensor.
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_autodiff_passes

from rnngen import codegen, spec

FORWARD_TOL = 1e-10
GRAD_TOL = 1e-8


def _write(tmp_path: Path, text: str) -> Path:
    text = textwrap.dedent(text)
    tmp_path.mkdir(parents=True, exist_ok=True)
    name = spec.parse(text, "<test>").name
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _autodiff_passes(tmp_path: Path, text: str) -> None:
    """NumPy float64, TF loop and TF fused all match the equation interpreter's autodiff."""
    assert_autodiff_passes(_write(tmp_path, text))


def _build(tmp_path: Path, text: str):
    """Render a spec into ``tmp_path`` and import its NumPy and TF modules."""
    path = _write(tmp_path, text)
    cs = spec.load(path)
    files = codegen.render(cs, path.name)
    codegen.write_atomically(files, tmp_path)
    mods = []
    for suffix in ("numpy", "tf"):
        if suffix == "tf":
            pytest.importorskip("tensorflow")
        name = f"_regression_{cs.name}_{suffix}_{id(tmp_path)}"
        module_spec = importlib.util.spec_from_file_location(
            name, tmp_path / f"{cs.name}_{suffix}.py"
        )
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
        mods.append(module)
    return cs, files, mods[0], mods[1]


def _close_forward(actual, expected, what):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, what
    err = float(np.max(np.abs(actual - expected))) / max(1.0, float(np.max(np.abs(expected))))
    assert err <= FORWARD_TOL, f"{what}: {err:.3g}"


def _close_grad(actual, expected, what):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, what
    scale = max(float(np.max(np.abs(expected))), 1e-30)
    err = float(np.max(np.abs(actual - expected))) / scale
    assert err <= GRAD_TOL, f"{what}: {err:.3g}"


# -- item 1: a new state as the left side of a product ------------------------------------------

NEW_STATE_OPERAND = """\
name: new_state_operand
class_name: NewStateOperand
options: {use_bias: true}
weights:
  kernel: {shape: [input_dim, 2 * units], blocks: [k_h, k_c], initializer: glorot_uniform}
  r1: {shape: [units, units], initializer: orthogonal}
  r: {shape: [units, 2 * units], blocks: [r_a, r_b], initializer: orthogonal}
  bias: {shape: [units], initializer: zeros, when: use_bias}
states: [h, c]
dropout: {x: dropout, h_prev: recurrent_dropout}
step:
  h: tanh(x @ k_h + h_prev @ r1 + bias)
  e: tanh(h) * 0.5
  c: sigmoid(x @ k_c + h @ r_a + e @ r_b + (h + c_prev) @ r1) * c_prev + 0.1 * h
"""


def test_new_state_as_left_side_of_a_product(tmp_path):
    """``h @ r`` with this step's ``h``: the weight gradient reads the steps after the first."""
    _autodiff_passes(tmp_path, NEW_STATE_OPERAND)


# -- item 6: powers of function calls print in every printer ------------------------------------

POWER_OF_CALL = """\
name: power_of_call
class_name: PowerOfCall
weights:
  kernel: {shape: [input_dim, units], initializer: glorot_uniform}
  recurrent_kernel: {shape: [units, units], initializer: orthogonal}
states: [h]
step:
  h: tanh(x @ kernel + tanh(h_prev) ** 2 @ recurrent_kernel)
"""


def test_power_of_a_function_call_builds_and_matches_autodiff(tmp_path):
    _autodiff_passes(tmp_path, POWER_OF_CALL)
    files = codegen.render(spec.parse(POWER_OF_CALL, "<test>"), "power_of_call.yaml")
    md = files["power_of_call.md"]
    assert r"\left(\tanh\left(h_{t-1}\right)\right)^{2}" in md


@pytest.mark.parametrize("exponent", [2, -1, -3, 0.5, -0.5, 1.5])
def test_latex_of_powers_of_every_table_function(exponent):
    import sympy as sp

    from rnngen import functions
    from rnngen.grammar import symbol

    u = symbol("u")
    for name in functions.TABLE:
        f = functions.function(name, name)(u)
        e = sp.nsimplify(exponent)
        powers = (f**e, 2 * f**e + f, f.diff(u) ** e, f * f.diff(u) ** e, f ** (2 * e) / (1 + f))
        for expr in powers:
            text = codegen.tex(expr)
            assert text.count("{") == text.count("}"), (name, text)
            assert "left(" in text, (name, text)
            # the code printers agree with SymPy's own evaluation of the same power
            assert codegen.py(expr) and codegen.tfpy(expr)


# -- item 8: set_weights() on an unbuilt NumPy layer --------------------------------------------

VECTOR_FIRST = """\
name: vector_first
class_name: VectorFirst
options: {use_bias: true}
weights:
  gain: {shape: [units], initializer: ones}
  bias: {shape: [units], initializer: zeros, when: use_bias}
  kernel: {shape: [input_dim, 2 * units], blocks: [k_a, k_b], initializer: glorot_uniform}
  recurrent_kernel: {shape: [units, units], initializer: orthogonal}
states: [h]
step:
  h: tanh(x @ k_a + gain * (h_prev @ recurrent_kernel) + bias) * sigmoid(x @ k_b)
"""


def test_set_weights_on_unbuilt_layer_infers_input_dim_from_the_right_weight(tmp_path):
    _, _, np_mod, tf_mod = _build(tmp_path, VECTOR_FIRST)
    D, U = 7, 3
    built = np_mod.VectorFirst(U)
    built(np.zeros((2, 4, D)))
    weights = built.get_weights()
    assert weights[0].shape == (U,)  # the first weight is a vector: not [input_dim, ...]

    fresh = np_mod.VectorFirst(U)
    fresh.set_weights(weights)
    assert fresh.input_dim == D
    x = np.random.default_rng(0).standard_normal((2, 4, D))
    np.testing.assert_array_equal(fresh(x), built(x))

    # an option that removes a weight moves the kernel in the list: still found
    no_bias = np_mod.VectorFirst(U, use_bias=False)
    no_bias.set_weights([w for n, w in zip(built.weights, weights, strict=True) if n != "bias"])
    assert no_bias.input_dim == D

    with pytest.raises(ValueError, match="expects 4 weights"):
        np_mod.VectorFirst(U).set_weights([])
    with pytest.raises(ValueError, match="expects 3 weights"):
        np_mod.VectorFirst(U, use_bias=False).set_weights(weights)
    with pytest.raises(ValueError, match="'kernel' must have 2 dimensions"):
        np_mod.VectorFirst(U).set_weights([weights[0], weights[1], weights[1], weights[3]])


def test_set_weights_on_unbuilt_tf_layer_raises_like_keras(tmp_path):
    keras = pytest.importorskip("keras")
    _, _, np_mod, tf_mod = _build(tmp_path, VECTOR_FIRST)
    built = np_mod.VectorFirst(3)
    built(np.zeros((2, 4, 7)))
    weights = built.get_weights()
    with pytest.raises(ValueError) as ours:
        tf_mod.VectorFirst(3).set_weights(weights)
    with pytest.raises(ValueError) as theirs:
        keras.layers.SimpleRNN(3).set_weights(weights[1:])
    assert "expecting 0 weights" in str(ours.value) and "expecting 0 weights" in str(theirs.value)


# -- item 3: equations nothing reads ------------------------------------------------------------

UNREAD = """\
name: unread
class_name: Unread
weights:
  kernel: {shape: [input_dim, units], initializer: glorot_uniform}
  recurrent_kernel: {shape: [units, units], initializer: orthogonal}
  r2: {shape: [units, units], initializer: orthogonal}
states: [h]
step:
  a: tanh(h_prev @ r2)
  dead: a * 2
  h: tanh(x @ kernel + h_prev @ recurrent_kernel)
"""


def test_equation_nothing_reads_is_a_spec_error_at_its_line():
    with pytest.raises(spec.SpecError) as err:
        spec.parse(UNREAD, "unread.yaml")
    text = str(err.value)
    assert (
        "unread.yaml:10:9: step.dead: nothing reads 'dead': it is not a state or the output "
        "and no later equation uses it; remove it or use it"
    ) in text
    # an equation read only by an unread one is named too, with who reads it
    assert "unread.yaml:9:6: step.a: nothing reads 'a': it is only used by 'dead'" in text


DEAD_UNDER_AN_OPTION = """\
name: dead_under_option
class_name: DeadUnderOption
options: {use_bias: true}
weights:
  kernel: {shape: [input_dim, units], initializer: glorot_uniform}
  recurrent_kernel: {shape: [units, units], initializer: orthogonal}
  gate_kernel: {shape: [input_dim, units], initializer: glorot_uniform, when: use_bias}
  bias: {shape: [units], initializer: zeros, when: use_bias}
states: [h]
dropout: {x: dropout, h_prev: recurrent_dropout}
step:
  g: sigmoid(x @ gate_kernel + h_prev @ recurrent_kernel)
  h:
    - when: use_bias
      eq: tanh(x @ kernel + h_prev @ recurrent_kernel + bias) * g
    - eq: tanh(x @ kernel + h_prev @ recurrent_kernel)
"""


def test_equation_dead_under_some_options_is_pruned_there(tmp_path):
    cs = spec.parse(DEAD_UNDER_AN_OPTION, "<test>")
    from rnngen import symbolic

    for v in symbolic.derive(cs).variants:
        targets = {s.target for s in v.forward if isinstance(s, symbolic.Assign)}
        assert ("g" in targets) == dict(v.options)["use_bias"], v.describe()
    _autodiff_passes(tmp_path, DEAD_UNDER_AN_OPTION)


# -- item 4: inline nested products (deep transition) -------------------------------------------

DEEP_INLINE = """\
name: deep_inline
class_name: DeepInline
options: {use_bias: true}
weights:
  kernel: {shape: [input_dim, units], initializer: glorot_uniform}
  w1: {shape: [units, units], initializer: orthogonal}
  w2: {shape: [units, 2 * units], blocks: [w2_a, w2_b], initializer: orthogonal}
  w3: {shape: [units, units], initializer: orthogonal}
  bias: {shape: [units], initializer: zeros, when: use_bias}
states: [h]
dropout: {x: dropout, h_prev: recurrent_dropout}
step:
  h: tanh(x @ kernel + sigmoid(tanh(h_prev @ w1 + bias) @ w2_a) @ w3 + tanh(h_prev @ w1 + bias) @ w2_b)
"""  # noqa: E501

INLINE_H = DEEP_INLINE.splitlines()[-1]
NAMED_H = (
    "  t1: tanh(h_prev @ w1 + bias)\n  t2: sigmoid(t1 @ w2_a)\n"
    "  h: tanh(x @ kernel + t2 @ w3 + t1 @ w2_b)"
)
DEEP_NAMED = (
    DEEP_INLINE.replace("deep_inline", "deep_named")
    .replace("DeepInline", "DeepNamed")
    .replace(INLINE_H, NAMED_H)
)


def test_inline_nested_products_match_autodiff(tmp_path):
    _autodiff_passes(tmp_path, DEEP_INLINE)


def test_inline_nested_products_equal_the_named_intermediate_form(tmp_path):
    assert DEEP_NAMED != DEEP_INLINE
    _, files, inline, _ = _build(tmp_path / "inline", DEEP_INLINE)
    _, _, named, _ = _build(tmp_path / "named", DEEP_NAMED)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5, 4))
    a, b = inline.DeepInline(6, return_sequences=True), named.DeepNamed(6, return_sequences=True)
    a(x)
    b.set_weights(a.get_weights())
    np.testing.assert_allclose(a(x), b(x), rtol=0, atol=1e-12)
    dy = rng.standard_normal((3, 5, 6))
    ga, gb = a.backward(dy), b.backward(dy)
    np.testing.assert_allclose(ga.inputs, gb.inputs, rtol=0, atol=1e-12)
    for name in ga.weights:
        np.testing.assert_allclose(ga.weights[name], gb.weights[name], rtol=0, atol=1e-12)
    # the hoisted left sides are named after their math and shown in the derivation document
    md = files["deep_inline.md"]
    assert r"\mathrm{tanh\_bias\_h\_prev\_w1} &= \tanh" in md
    assert r"\text{(left side of a nested product)}" in md


def test_deep_transition_spec_verifies_on_both_backends():
    pytest.importorskip("tensorflow")
    from rnngen import verify

    path = Path(__file__).parent / "specs" / "deep_transition.yaml"
    results = verify.verify_spec(path, backends=("numpy", "tf"), quick=True, seed=0)
    rows = {(r.backend, r.check): r.status for r in results}
    assert rows[("numpy", "autodiff")] == "pass" and rows[("numpy", "finite_diff")] == "pass"
    assert rows[("tf", "autodiff/loop")] == "pass" and rows[("tf", "autodiff/fused")] == "pass"
    assert not [r for r in results if r.status in ("fail", "error")]


# -- item 2: products whose left side does not change over time ---------------------------------


def _against_reference(tmp_path, text, reference, B=3, T=5, D=4, U=6, seed=0):
    """NumPy (float64) and TF loop and fused (float64) against ``reference``, a cell written by
    hand in TensorFlow and differentiated by ``tf.GradientTape``.

    ``reference(x, states, weights)`` takes x (B, T, D), the initial states and a dict of
    weights, and returns (the output sequence (B, T, U), the final states).
    """
    tf = pytest.importorskip("tensorflow")
    cs, _, np_mod, tf_mod = _build(tmp_path, text)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, D))
    h0 = [0.5 * rng.standard_normal((B, U)) for _ in cs.states]
    dy = rng.standard_normal((B, T, U))
    ds = [rng.standard_normal((B, U)) for _ in cs.states]

    layer = getattr(np_mod, cs.class_name)(
        U, return_sequences=True, return_state=True, dtype="float64"
    )
    layer(x)
    weights = {n: rng.uniform(-0.6, 0.6, w.shape) for n, w in layer.weights.items()}
    layer.set_weights(list(weights.values()))

    wv = {n: tf.Variable(w) for n, w in weights.items()}
    xv, hv = tf.constant(x), [tf.constant(h) for h in h0]
    with tf.GradientTape() as tape:
        tape.watch([xv, *hv])
        seq, final = reference(xv, hv, wv)
        loss = tf.reduce_sum(seq * dy) + sum(
            tf.reduce_sum(f * d) for f, d in zip(final, ds, strict=True)
        )
    ref_grads = tape.gradient(loss, [xv, *hv, *wv.values()])
    ref_grads = [
        np.zeros(v.shape) if g is None else g.numpy()
        for g, v in zip(ref_grads, [xv, *hv, *wv.values()], strict=True)
    ]

    out = layer(x, initial_state=h0)
    g = layer.backward(dy, ds)
    ours = [g.inputs, *g.initial_state, *(g.weights[n] for n in weights)]
    results = {"numpy": (out[0], out[1:], ours)}

    for impl in ("loop", "fused"):
        tl = getattr(tf_mod, cs.class_name)(
            U, return_sequences=True, return_state=True, implementation=impl, dtype="float64"
        )
        tl(x)
        tl.set_weights(list(weights.values()))
        xt, ht = tf.constant(x), [tf.constant(h) for h in h0]
        with tf.GradientTape() as tape:
            tape.watch([xt, *ht])
            res = tl(xt, initial_state=ht)
            loss = tf.reduce_sum(res[0] * dy) + sum(
                tf.reduce_sum(f * d) for f, d in zip(res[1:], ds, strict=True)
            )
        grads = tape.gradient(loss, [xt, *ht, *tl.trainable_weights])
        results[impl] = (res[0], res[1:], [gg.numpy() for gg in grads])

    names = ["d inputs", *(f"d initial {s}" for s in cs.states), *(f"d {n}" for n in weights)]
    for backend, (seq_o, final_o, grads_o) in results.items():
        _close_forward(seq_o, seq.numpy(), f"{backend} output")
        for s, a, b in zip(cs.states, final_o, final, strict=True):
            _close_forward(a, b.numpy(), f"{backend} final {s}")
        for name, a, b in zip(names, grads_o, ref_grads, strict=True):
            _close_grad(a, b, f"{backend} {name}")


WEIGHT_ONLY_LEFT = """\
name: weight_only_left
class_name: WeightOnlyLeft
weights:
  k: {shape: [input_dim, units], initializer: glorot_uniform}
  v: {shape: [units], initializer: ones}
  w: {shape: [units], initializer: ones}
  r: {shape: [units, 2 * units], blocks: [r_a, r_b], initializer: orthogonal}
  rr: {shape: [units, units], initializer: orthogonal}
states: [h]
step:
  e: sigmoid(v) * w
  h: tanh(x @ k + e @ r_a + (sigmoid(w)) @ r_b + h_prev @ rr) * sigmoid(v + w) + (e * h_prev) @ rr
"""


def weight_only_left_tf(x, states, w):
    import tensorflow as tf

    U = w["rr"].shape[0]
    r_a, r_b = w["r"][:, :U], w["r"][:, U:]
    e = tf.sigmoid(w["v"]) * w["w"]
    # the left sides have no batch axis: one row, broadcast over the batch
    pa, pb = e[None] @ r_a, tf.sigmoid(w["w"])[None] @ r_b
    (h,), outs = states, []
    for t in range(x.shape[1]):
        h = (
            tf.tanh(x[:, t] @ w["k"] + pa + pb + h @ w["rr"]) * tf.sigmoid(w["v"] + w["w"])
            + (e * h) @ w["rr"]
        )
        outs.append(h)
    return tf.stack(outs, 1), [h]


def test_left_side_of_weights_alone_is_broadcast(tmp_path):
    """``e @ r`` and ``(sigmoid(w)) @ r`` with weight-only left sides: the product is one row,
    the weight gradient an outer product, the operand gradient summed over batch and time."""
    _against_reference(tmp_path, WEIGHT_ONLY_LEFT, weight_only_left_tf)
    cs = spec.parse(WEIGHT_ONLY_LEFT, "<test>")
    from rnngen import symbolic

    (v,) = symbolic.derive(cs).variants
    lefts = sorted(str(g.operand_expr) for g in v.static_groups)
    assert lefts == ["e", "sigmoid(w)"], lefts
    assert not any(g.hoisted for g in v.static_groups)


STATE_OF_WEIGHTS_ALONE = """\
name: state_of_weights
class_name: StateOfWeights
weights:
  k: {shape: [input_dim, units], initializer: glorot_uniform}
  v: {shape: [units], initializer: ones}
  r: {shape: [units, units], initializer: orthogonal}
states: [h, c]
step:
  h: tanh(x @ k + (c_prev * h_prev) @ r)
  c: sigmoid(v)
"""


def state_of_weights_tf(x, states, w):
    import tensorflow as tf

    h, c = states
    outs = []
    for t in range(x.shape[1]):
        h = tf.tanh(x[:, t] @ w["k"] + (c * h) @ w["r"])
        c = tf.broadcast_to(tf.sigmoid(w["v"]), tf.shape(h))
        outs.append(h)
    return tf.stack(outs, 1), [h, c]


def test_state_of_weights_alone_has_a_batch_axis(tmp_path):
    _against_reference(tmp_path, STATE_OF_WEIGHTS_ALONE, state_of_weights_tf)


# -- siblings found while fixing the items above ------------------------------------------------

INPUT_IN_THE_LOOP = """\
name: input_in_loop
class_name: InputInLoop
weights:
  k: {shape: [input_dim, units], initializer: glorot_uniform}
  wd: {shape: [units, input_dim], initializer: glorot_uniform}
  v: {shape: [input_dim], initializer: ones}
  r: {shape: [units, units], initializer: orthogonal}
states: [h]
dropout: {x: dropout, h_prev: recurrent_dropout}
step:
  g: sigmoid(h_prev @ wd)
  xi: x * v
  h: tanh((g * xi) @ k + h_prev @ r)
"""


def test_input_read_inside_the_loop_is_this_steps_input(tmp_path):
    """``xi: x * v`` read by an in-loop product: ``x`` is this step's rows, and the buffers of
    ``input_dim`` columns it needs are sized."""
    _autodiff_passes(tmp_path, INPUT_IN_THE_LOOP)


STATE_PASSED_ON = """\
name: state_passed_on
class_name: StatePassedOn
weights:
  k: {shape: [input_dim, 2 * units], blocks: [k_h, k_m], initializer: glorot_uniform}
  r: {shape: [units, units], initializer: orthogonal}
states: [h, c, m]
step:
  h: tanh(x @ k_h + h_prev @ r) * m_prev
  c: m_prev
  m: tanh(x @ k_m + c_prev @ r) + 0.5 * h_prev
"""


def test_state_passed_on_unchanged_keeps_its_gradient(tmp_path):
    """``c: m_prev``: d m_prev reads d c, which the update of d c_prev must not overwrite first."""
    _autodiff_passes(tmp_path, STATE_PASSED_ON)


SUM_LEFT_OF_HOISTED = """\
name: sum_left
class_name: SumLeft
weights:
  k: {shape: [input_dim, units], initializer: glorot_uniform}
  v: {shape: [input_dim], initializer: ones}
  r: {shape: [units, units], initializer: orthogonal}
states: [h]
step:
  h: tanh((x - x * v) @ k + h_prev @ r)
"""


def test_hoisted_left_side_that_is_a_sum(tmp_path):
    """``(x - x * v) @ k`` before the loop: d_x is d_operand * (1 - v), not d_operand * 1 - v."""
    _autodiff_passes(tmp_path, SUM_LEFT_OF_HOISTED)


def test_derivation_latex_has_no_double_subscripts(tmp_path):
    import re

    for text in (WEIGHT_ONLY_LEFT, STATE_PASSED_ON, INPUT_IN_THE_LOOP, DEEP_INLINE):
        cs = spec.parse(text, "<test>")
        md = codegen.render(cs, "x.yaml")[f"{cs.name}.md"]
        # a subscript group followed directly by another subscript is not LaTeX
        assert not re.search(r"_\{[^{}]*\}_\{", md), cs.name


NO_INPUT_WEIGHT = """\
name: no_input_weight
class_name: NoInputWeight
weights:
  r: {shape: [units, units], initializer: orthogonal}
  b: {shape: [units], initializer: zeros}
states: [h]
step:
  h: tanh(h_prev @ r + b)
"""


def test_set_weights_without_an_input_dim_weight_leaves_input_dim_to_the_first_call(tmp_path):
    _, _, np_mod, _ = _build(tmp_path, NO_INPUT_WEIGHT)
    ref = np_mod.NoInputWeight(3)
    ref(np.zeros((2, 4, 5)))
    layer = np_mod.NoInputWeight(3)
    layer.set_weights(ref.get_weights())
    assert layer.input_dim is None
    x = np.random.default_rng(0).standard_normal((2, 4, 5))
    np.testing.assert_array_equal(layer(x), ref(x))
    assert layer.input_dim == 5
    with pytest.raises(ValueError, match="expected axis -1 to have value 5"):
        layer(np.zeros((2, 4, 6)))


STATE_OF_WEIGHTS_READ_BY_A_PRODUCT = """\
name: state_of_weights_read
class_name: StateOfWeightsRead
weights:
  k: {shape: [input_dim, units], initializer: glorot_uniform}
  v: {shape: [units], initializer: ones}
  r: {shape: [units, units], initializer: orthogonal}
  r2: {shape: [units, units], initializer: orthogonal}
states: [h, c]
step:
  c: sigmoid(v)
  h: tanh(x @ k + c @ r2 + (c_prev * h_prev) @ r)
"""


def state_of_weights_read_tf(x, states, w):
    import tensorflow as tf

    h, c = states
    outs = []
    for t in range(x.shape[1]):
        c_new = tf.broadcast_to(tf.sigmoid(w["v"]), tf.shape(h))
        h = tf.tanh(x[:, t] @ w["k"] + c_new @ w["r2"] + (c * h) @ w["r"])
        c = c_new
        outs.append(h)
    return tf.stack(outs, 1), [h, c]


def test_state_of_weights_alone_read_by_a_product_in_the_same_step(tmp_path):
    """The new state ``c`` (weights alone) is given its batch axis before ``c @ r2`` reads it."""
    _against_reference(tmp_path, STATE_OF_WEIGHTS_READ_BY_A_PRODUCT, state_of_weights_read_tf)


def test_option_whose_default_needs_its_input_runs_output_form_values_right(tmp_path):
    """An activation option whose default (hard_silu) has no output-form derivative, run with
    values that have one (sigmoid here, in verify's quick matrix): the variant that runs for them
    must differentiate through the output, not pass the pre-activation to an output-form
    derivative (found by the cell generator: wrong gradients on NumPy and TF fused)."""
    _autodiff_passes(
        tmp_path,
        """
        name: input_form_default
        class_name: InputFormDefault
        options: {activation: hard_silu}
        weights:
          kernel: {shape: [input_dim, units], initializer: glorot_uniform}
          recurrent_kernel: {shape: [units, units], initializer: orthogonal}
          gain: {shape: [units], initializer: ones}
        states: [h]
        step:
          h: activation(h_prev @ recurrent_kernel + gain) + 0.25 * tanh(x @ kernel)
        """,
    )


def test_input_gradient_reads_stored_intermediates(tmp_path):
    """The per-step input gradient may read a forward value no other backward statement reads
    (``xi * x`` left of a product, with ``xi`` an intermediate): it must be kept for the
    backward (found by the 1000-cell property run: NameError in both backends)."""
    _autodiff_passes(
        tmp_path,
        """
        name: reads_intermediate
        class_name: ReadsIntermediate
        weights:
          w9: {shape: [input_dim, units], initializer: glorot_uniform}
          r: {shape: [units, units], initializer: orthogonal}
        states: [h]
        step:
          xi: x
          h: tanh(h_prev @ r + squareplus(xi * x) @ w9)
        """,
    )


# -- a run-time or row-wise function inside a hoisted left side (1000-cell run, seed 2027) -----

HOISTED_THROUGH_FUNCTIONS = """\
name: hoisted_through_functions
class_name: HoistedThroughFunctions
options: {activation: relu}
weights:
  kernel: {shape: [input_dim, units], initializer: glorot_uniform}
  kernel2: {shape: [input_dim, units], initializer: glorot_uniform}
  recurrent_kernel: {shape: [units, units], initializer: orthogonal}
  v: {shape: [input_dim], initializer: ones}
states: [h]
step:
  h: tanh(activation(x * v) @ kernel + sparsemax(x) ** 2 @ kernel2 + h_prev @ recurrent_kernel)
"""


def test_run_time_and_row_wise_functions_in_a_hoisted_left_side(tmp_path):
    """The gradient of a hoisted left side reaches x and v through the activation option's
    VJP and sparsemax's (it printed activation_grad, unbound since the VJP rule: NameError)."""
    _autodiff_passes(tmp_path, HOISTED_THROUGH_FUNCTIONS)
