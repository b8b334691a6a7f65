"""Every Keras activation, callables, and regularizer objects, in both generated backends.

Three parts:

* the function table (rnngen/functions.py) against its own SymPy expressions: each
  output-form hint equals the derived derivative (symbolically, or on a dense float64
  grid where SymPy cannot decide), each function without one provably has none, and the
  printed NumPy code computes the expression;
* the table against Keras's definitions (TF autodiff of ``keras.activations.get(name)``);
* the generated layers against ``keras.layers.SimpleRNN``/``GRU``/``LSTM`` for every
  activation Keras runs (one test id per activation; float32: forward <= 1e-5 absolute,
  gradients <= 1e-4 relative to the largest entry), callables and regularizer objects,
  with central finite differences (float64, <= 1e-6 relative) on the NumPy side.
"""

from __future__ import annotations

import importlib
import importlib.util
import math

import numpy as np
import pytest
import sympy as sp
from helpers import (
    FD_RTOL_F64,
    FORWARD_ATOL_F32,
    GRAD_RTOL_F32,
    numpy_layer_class,
    tf_layer_class,
)

from rnngen import functions

ACTIVATION_NAMES = list(functions.ACTIVATIONS)
WITH_HINT = [n for n, e in functions.TABLE.items() if e.output_form is not None]
WITHOUT_HINT = [n for n, e in functions.TABLE.items() if e.output_form is None]
# a grid that misses every kink of the table (they sit at small rationals)
GRID = np.linspace(-9.0, 9.0, 180_001) + 1e-6 * math.sqrt(2)

_NUMERIC = {
    "Sigmoid": lambda a: 1 / (1 + np.exp(-a)),
    "Softplus": lambda a: np.logaddexp(0, a),
    "erf": np.vectorize(math.erf, otypes=[float]),
    "expm1": np.expm1,
}


def _numeric(expr, var):
    return sp.lambdify(var, expr, modules=[_NUMERIC, "numpy"])


def _on_grid(expr, var=functions.u, grid=GRID):
    with np.errstate(invalid="ignore"):  # lambdify evaluates every Piecewise branch
        values = _numeric(expr, var)(grid)
    return np.broadcast_to(np.asarray(values, dtype=float), grid.shape)


def _run_code(body, var, values):
    """Evaluate a printed function body (``def f(var): return body``) at float64 values."""
    scope = {"np": np, "_erf": _NUMERIC["erf"]}
    exec(f"def f({var}):\n    return {body}\n", scope)
    return np.broadcast_to(np.asarray(scope["f"](values), dtype=float), values.shape)


# -- the table against its own expressions ---------------------------------------------------


@pytest.mark.parametrize("name", WITH_HINT)
def test_output_form_hint_is_the_derivative(name):
    """f'(u) == hint(f(u)): symbolically where SymPy decides it, else on a dense grid."""
    e = functions.TABLE[name]
    derived = e.derivative
    hinted = e.output_form.subs(functions.y, e.expr)
    diff = (derived - hinted).rewrite(sp.exp)
    try:
        symbolic = sp.simplify(diff) == 0
    except Exception:  # noqa: BLE001 - SymPy gives up on some Piecewise forms
        symbolic = False
    if symbolic:
        return
    a, b = _on_grid(derived), _on_grid(hinted)
    err = np.max(np.abs(a - b) / np.maximum(1.0, np.abs(a)))
    assert err <= 1e-9, f"{name}: hint differs from d/du by {err:.3g} on the grid"


@pytest.mark.parametrize("name", WITHOUT_HINT)
def test_no_output_form_exists(name):
    """A function without a hint has no output form: two inputs with the same output have
    different derivatives, or (tanh_shrink, monotonic) SymPy cannot invert it in closed form."""
    e = functions.TABLE[name]
    ys, ds = _on_grid(e.expr), _on_grid(e.derivative)
    order = np.argsort(ys, kind="stable")
    ys, ds = ys[order], ds[order]
    close = np.abs(np.diff(ys)) < 2e-4  # neighbours in output (the grid step is 1e-4)
    clash = np.abs(np.diff(ds)) > 1e-2
    if np.any(close & clash):
        return
    assert name == "tanh_shrink", f"{name} looks invertible: give it an output form"
    with pytest.raises((NotImplementedError, ValueError)):
        sols = sp.solve(sp.Eq(functions.y, e.expr), functions.u)
        if not sols:
            raise ValueError("no closed-form inverse")


@pytest.mark.parametrize("name", list(functions.TABLE))
def test_printed_numpy_code_computes_the_expression(name):
    e = functions.TABLE[name]
    expect = _on_grid(e.expr)
    got = _run_code(e.numpy, "u", GRID)
    np.testing.assert_allclose(got, expect, rtol=1e-12, atol=1e-12, err_msg=f"{name} forward")
    var_values = expect if e.grad_from == "output" else GRID
    grad = _run_code(e.grad, "y" if e.grad_from == "output" else "u", var_values)
    domain = np.isfinite(expect)  # log and sqrt: only where the function is defined
    assert domain.mean() > 0.4, f"{name}: defined on too little of the grid"
    np.testing.assert_allclose(
        np.broadcast_to(grad, GRID.shape)[domain],
        _on_grid(e.derivative)[domain],
        rtol=1e-9,
        atol=1e-9,
        err_msg=f"{name} derivative",
    )


def test_every_keras_activation_is_served_or_refused_with_a_reason():
    keras = pytest.importorskip("keras")
    from keras.src.activations import ALL_OBJECTS_DICT

    for name in ALL_OBJECTS_DICT:
        canonical = functions.resolve_activation(name)
        assert canonical is not None or name in functions.REFUSED, name
    assert set(functions.ACTIVATIONS) <= set(ALL_OBJECTS_DICT)
    assert keras.activations.get("swish") is keras.activations.get("silu")


# -- the table against Keras's definitions ----------------------------------------------------


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_table_is_keras_definition(tf, name):
    """Value and derivative (TF autodiff of Keras's function) on a float64 grid."""
    import keras

    e = functions.TABLE[name]
    grid = tf.constant(GRID[::10])
    with tf.GradientTape() as tape:
        tape.watch(grid)
        ref = keras.activations.get(name)(grid)
    d_ref = tape.gradient(ref, grid).numpy()
    np.testing.assert_allclose(_on_grid(e.expr, grid=GRID[::10]), ref.numpy(), rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(_on_grid(e.derivative, grid=GRID[::10]), d_ref, rtol=1e-6, atol=1e-7)
    scope = {"tf": tf}
    exec(f"def f(u):\n    return {e.tf}\n", scope)
    np.testing.assert_allclose(scope["f"](grid).numpy(), ref.numpy(), rtol=1e-7, atol=1e-7)
    var = "y" if e.grad_from == "output" else "u"
    exec(f"def g({var}):\n    return {e.tf_grad}\n", scope)
    at = ref if e.grad_from == "output" else grid
    g = np.broadcast_to(np.asarray(scope["g"](at)), GRID[::10].shape)
    np.testing.assert_allclose(g, d_ref, rtol=1e-6, atol=1e-7)


# -- generated layers against Keras's layers ----------------------------------------------------

B, T, D, U = 3, 5, 4, 4
MASK = np.array([[1, 1, 0, 1, 1], [0, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=bool)


def _keras_reference(tf, kind, kw, x, states, projs, rng, scale):
    import keras

    ref = getattr(keras.layers, kind)(U, return_sequences=True, return_state=True, **kw)
    ref.build((B, T, D))
    weights = [(scale * rng.standard_normal(w.shape)).astype(np.float32) for w in ref.get_weights()]
    ref.set_weights(weights)
    outs, grads = _tf_run(tf, ref, x, states, projs)
    return weights, outs, grads


def _tf_run(tf, layer, x, states, projs):
    xv = tf.constant(x)
    sv = [tf.constant(s) for s in states]
    with tf.GradientTape() as tape:
        tape.watch([xv, *sv])
        out = layer(xv, initial_state=sv, mask=tf.constant(MASK))
        loss = sum(tf.reduce_sum(o * p) for o, p in zip(out, projs, strict=True))
        loss = loss + sum(layer.losses) if layer.losses else loss
    grads = tape.gradient(loss, [xv, *sv, *layer.trainable_weights])
    return [o.numpy() for o in out], [g.numpy() for g in grads]


def _errors(outs, grads, ref_outs, ref_grads):
    fwd = max(float(np.max(np.abs(a - b))) for a, b in zip(outs, ref_outs, strict=True))
    rel = max(
        float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(b))), 1e-12)
        for a, b in zip(grads, ref_grads, strict=True)
    )
    return fwd, rel


def parity(tf, kind, kw, backend, *, seed=0, scale=0.5, ours_kw=None):
    """(forward abs error, gradient error relative to the largest entry) vs Keras."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    n_states = 2 if kind == "LSTM" else 1
    states = [rng.standard_normal((B, U)).astype(np.float32) for _ in range(n_states)]
    projs = [rng.standard_normal((B, T, U)).astype(np.float32)]
    projs += [rng.standard_normal((B, U)).astype(np.float32) for _ in states]
    weights, ref_outs, ref_grads = _keras_reference(tf, kind, kw, x, states, projs, rng, scale)
    kw = {**kw, **(ours_kw or {})}
    if backend == "numpy":
        twin = numpy_layer_class(kind)(U, return_sequences=True, return_state=True, **kw)
        twin.set_weights(weights)
        outs = list(twin(x, initial_state=states, mask=MASK))
        g = twin.backward(projs[0], projs[1:])
        grads = [g.inputs, *g.initial_state, *g.weights.values()]
    else:
        layer = tf_layer_class(kind)(
            U, return_sequences=True, return_state=True, implementation=backend, **kw
        )
        layer.build((B, T, D))
        layer.set_weights(weights)
        outs, grads = _tf_run(tf, layer, x, states, projs)
    fwd, rel = _errors(outs, grads, ref_outs, ref_grads)
    assert fwd <= FORWARD_ATOL_F32, f"{kind} {kw} {backend}: forward error {fwd:.3g}"
    assert rel <= GRAD_RTOL_F32, f"{kind} {kw} {backend}: gradient error {rel:.3g}"
    return fwd, rel


def _scale(name):
    # exponential feeds exp(h) back: small weights keep the values O(1)
    return 0.1 if name == "exponential" else 0.5


BACKENDS = ["numpy", "fused", pytest.param("loop", marks=pytest.mark.slow)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_simple_rnn_activation_matches_keras(tf, name, backend):
    parity(tf, "SimpleRNN", {"activation": name}, backend, scale=_scale(name))


@pytest.mark.parametrize("backend", ["numpy", "fused"])
@pytest.mark.parametrize("alias", ["swish", "hard_swish", None])
def test_aliases_and_function_objects(tf, alias, backend):
    import keras

    parity(tf, "SimpleRNN", {"activation": alias}, backend)
    fn = keras.activations.get(alias)
    parity(tf, "SimpleRNN", {"activation": fn}, backend)


# gates that stay in [0, 1] (or [-1, 1]) keep the states bounded, so float32 errors stay small
GATED = [
    ("GRU", {"activation": "gelu", "recurrent_activation": "sparse_sigmoid"}),
    ("GRU", {"reset_after": False, "activation": "relu6", "recurrent_activation": "hard_sigmoid"}),
    ("LSTM", {"activation": "mish", "recurrent_activation": "hard_sigmoid"}),
    ("LSTM", {"activation": "tanh", "recurrent_activation": "hard_tanh"}),
]


@pytest.mark.parametrize("backend", ["numpy", "fused"])
@pytest.mark.parametrize(
    ("kind", "kw"),
    GATED,
    ids=[f"{k}-{v['activation']}-{v['recurrent_activation']}" for k, v in GATED],
)
def test_gated_recurrent_activations_match_keras(tf, kind, kw, backend):
    parity(tf, kind, kw, backend)


@pytest.mark.parametrize("name", sorted(functions.REFUSED_AT_RUN_TIME))
def test_refused_activations_say_why(name):
    """glu and threshold are refused with their reason."""
    with pytest.raises(ValueError, match=r"row-wise|threshold"):
        numpy_layer_class("SimpleRNN")(U, activation=name)
    tf_mod = pytest.importorskip("generated.simple_rnn_tf")
    with pytest.raises(ValueError, match=r"row-wise|threshold"):
        tf_mod.SimpleRNN(U, activation=name)


# -- row-wise activations (softmax, log_softmax): through <option>_vjp ----------------------------

ROW_WISE = sorted(functions.ROW_WISE_TABLE)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ROW_WISE)
def test_simple_rnn_row_wise_activation_matches_keras(tf, name, backend):
    """Keras's SimpleRNN runs softmax and log_softmax as its activation; so do ours, forward
    and every gradient, to the float32 tolerances of the elementwise ones."""
    parity(tf, "SimpleRNN", {"activation": name}, backend)


@pytest.mark.parametrize("backend", ["numpy", "fused"])
@pytest.mark.parametrize(
    ("kind", "kw"),
    [
        ("GRU", {"activation": "log_softmax", "recurrent_activation": "softmax"}),
        ("LSTM", {"activation": "softmax", "recurrent_activation": "sigmoid"}),
        # a row-wise value beside one with no output form: the input-form variant
        ("LSTM", {"activation": "softmax", "recurrent_activation": "hard_silu"}),
    ],
    ids=["GRU-log_softmax-softmax", "LSTM-softmax-sigmoid", "LSTM-softmax-hard_silu"],
)
def test_gated_row_wise_activations_match_keras(tf, kind, kw, backend):
    parity(tf, kind, kw, backend)


@pytest.mark.parametrize("name", ROW_WISE)
def test_row_wise_functions_and_vjps_are_kerass(tf, name):
    """Each printed function equals Keras's activation of that name, and its printed
    vector-Jacobian product equals TF autodiff of Keras's function (float64, 1e-12), on rows
    spread over [-30, 30]. (sparsemax is Keras 3.15's, quirk included: see docs/activations.md.)"""
    import keras

    e = functions.ROW_WISE_TABLE[name]
    rng = np.random.default_rng(3)
    u = rng.uniform(-30, 30, (64, 7))
    d = rng.standard_normal(u.shape)
    a = "y" if e.reads_output else "u"
    scope = {"np": np, "tf": tf, "keras": keras}
    exec(e.helper("numpy") + e.helper("tf").replace("def _", "def _tf_"), scope)
    exec(f"def f(u):\n    return {e.numpy}\n\ndef vjp({a}, d):\n    return {e.vjp_numpy}\n", scope)
    tf_vjp = e.vjp_tf.replace("_autodiff_row_vjp", "_tf_autodiff_row_vjp")
    exec(f"def tf_f(u):\n    return {e.tf}\n\ndef tf_vjp({a}, d):\n    return {tf_vjp}\n", scope)
    keras_f = keras.activations.get(name)
    uv = tf.constant(u)
    with tf.GradientTape() as tape:
        tape.watch(uv)
        y_ref = keras_f(uv)
    vjp_ref = tape.gradient(y_ref, uv, output_gradients=tf.constant(d)).numpy()
    y_ref = y_ref.numpy()
    at = y_ref if e.reads_output else u
    np.testing.assert_allclose(scope["f"](u), y_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(scope["tf_f"](uv).numpy(), y_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(scope["vjp"](at, d), vjp_ref, rtol=0, atol=1e-12)
    tf_at, tf_d = tf.constant(at), tf.constant(d)
    np.testing.assert_allclose(scope["tf_vjp"](tf_at, tf_d).numpy(), vjp_ref, rtol=0, atol=1e-12)


# -- callables ----------------------------------------------------------------------------------


def _np_act(u):
    return u * np.tanh(u)


def _np_dact(u):
    t = np.tanh(u)
    return t + u * (1 - t * t)


class _WithGrad:
    def __call__(self, u):
        return _np_act(u)

    def grad(self, u):
        return _np_dact(u)


def _keras_act(x):
    import keras

    return x * keras.ops.tanh(x)


def _fd_check(layer, x, states, projs, names=None):
    """Central differences (float64) of the loss against backward(), every weight and input."""

    def loss():
        outs = layer(x, initial_state=states, mask=MASK)
        return sum(float(np.sum(o * p)) for o, p in zip(outs, projs, strict=True)) + sum(
            float(v) for v in layer.losses
        )

    loss()
    g = layer.backward(projs[0], projs[1:])
    checks = [("inputs", x, g.inputs)] + [
        (n, layer.weights[n], g.weights[n]) for n in (names or layer.weights)
    ]
    eps = 1e-6
    for what, array, analytic in checks:
        numeric = np.zeros_like(array)
        for i in np.ndindex(array.shape):
            old = array[i]
            array[i] = old + eps
            up = loss()
            array[i] = old - eps
            down = loss()
            array[i] = old
            numeric[i] = (up - down) / (2 * eps)
        scale = max(float(np.max(np.abs(numeric))), 1e-12)
        err = float(np.max(np.abs(analytic - numeric))) / scale
        assert err <= FD_RTOL_F64, f"{what}: finite differences differ by {err:.3g}"


def _fd_inputs(rng, kind="SimpleRNN"):
    x = rng.standard_normal((B, T, D))
    states = [rng.standard_normal((B, U)) for _ in range(2 if kind == "LSTM" else 1)]
    projs = [rng.standard_normal((B, T, U))] + [rng.standard_normal((B, U)) for _ in states]
    return x, states, projs


@pytest.mark.parametrize("form", ["pair", "grad_method"])
def test_numpy_callable_activation_finite_differences(form):
    act = (_np_act, _np_dact) if form == "pair" else _WithGrad()
    rng = np.random.default_rng(1)
    layer = numpy_layer_class("LSTM")(
        U, activation=act, return_sequences=True, return_state=True, dtype="float64", seed=0
    )
    layer.build(D)
    _fd_check(layer, *_fd_inputs(rng, "LSTM"))


def test_numpy_callable_without_derivative_runs_forward_only():
    rng = np.random.default_rng(2)
    layer = numpy_layer_class("SimpleRNN")(U, activation=_np_act, return_sequences=True)
    y = layer(rng.standard_normal((B, T, D)).astype(np.float32))
    assert y.shape == (B, T, U) and np.all(np.isfinite(y))
    with pytest.raises(ValueError, match=r"\(f, df\).*grad"):
        layer.backward(np.ones_like(y))


def test_numpy_callable_matches_keras_callable(tf):
    parity(
        tf,
        "SimpleRNN",
        {"activation": _keras_act},
        "numpy",
        ours_kw={"activation": (_np_act, _np_dact)},
    )


@pytest.mark.parametrize("backend", ["fused", "loop"])
def test_tf_callable_activation_matches_keras(tf, backend):
    parity(tf, "LSTM", {"activation": _keras_act, "recurrent_activation": "sigmoid"}, backend)


# -- regularizers -------------------------------------------------------------------------------


def _np_penalty(w):
    return 0.05 * np.sum(w**4)


def _np_penalty_grad(w):
    return 0.2 * w**3


class _Penalty:
    def __call__(self, w):
        return _np_penalty(w)

    def grad(self, w):
        return _np_penalty_grad(w)


def _keras_penalty(w):
    import keras

    return 0.05 * keras.ops.sum(w**4)


def _keras_regularizers():
    import keras

    return {
        "kernel_regularizer": keras.regularizers.L1L2(0.01, 0.02),
        "recurrent_regularizer": keras.regularizers.OrthogonalRegularizer(0.1, "columns"),
        "bias_regularizer": keras.regularizers.L1(0.03),
    }


@pytest.mark.parametrize("backend", ["numpy", "fused"])
def test_keras_regularizer_objects_match_keras(tf, backend):
    parity(tf, "GRU", _keras_regularizers(), backend)


@pytest.mark.parametrize("backend", ["numpy", "fused"])
def test_callable_regularizer_matches_keras(tf, backend):
    ours = {"kernel_regularizer": (_np_penalty, _np_penalty_grad)} if backend == "numpy" else None
    parity(tf, "SimpleRNN", {"kernel_regularizer": _keras_penalty}, backend, ours_kw=ours)


def test_numpy_regularizers_finite_differences():
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(4)
    layer = numpy_layer_class("SimpleRNN")(
        U,
        kernel_regularizer=_Penalty(),
        recurrent_regularizer=keras.regularizers.OrthogonalRegularizer(0.3, "rows"),
        bias_regularizer={"class_name": "L1L2", "config": {"l1": 0.1, "l2": 0.2}},
        return_sequences=True,
        return_state=True,
        dtype="float64",
        seed=1,
    )
    layer.build(D)
    for w in layer.weights.values():  # away from |.| kinks (an orthogonal init sits on them)
        w[...] = 0.5 * rng.standard_normal(w.shape)
    _fd_check(layer, *_fd_inputs(rng))


def test_numpy_callable_regularizer_without_gradient():
    layer = numpy_layer_class("SimpleRNN")(U, kernel_regularizer=_np_penalty)
    y = layer(np.ones((B, T, D), np.float32))
    assert layer.losses[0] == pytest.approx(_np_penalty(layer.weights["kernel"]), rel=1e-6)
    with pytest.raises(ValueError, match=r"\(penalty, grad\)"):
        layer.backward(np.ones_like(y))


# -- saving -------------------------------------------------------------------------------------


def test_keras_round_trip_with_registered_activation(tf, tmp_path):
    import keras

    @keras.saving.register_keras_serializable(package="rnngen_tests")
    def scaled_tanh(x):
        return 1.5 * keras.ops.tanh(x)

    module = importlib.import_module("generated.gru_tf")
    model = keras.Sequential(
        [
            keras.Input((T, D)),
            module.GRU(U, activation=scaled_tanh, recurrent_activation="hard_silu"),
            keras.layers.Dense(2),
        ]
    )
    x = np.random.default_rng(6).standard_normal((B, T, D)).astype(np.float32)
    before = model.predict(x, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), before, atol=1e-6)
    assert loaded.layers[0].activation is scaled_tanh
    assert loaded.layers[0].recurrent_activation == "hard_silu"


# -- every activation as a function inside spec equations ---------------------------------------


def test_every_activation_inside_spec_equations(tmp_path):
    """One cell calls every table activation on the same pre-activation; the generated NumPy
    backward (output-form and input-form derivatives, fixed calls) matches central finite
    differences in float64."""
    import subprocess
    import sys

    total = " + ".join(f"{n}(a)" for n in ACTIVATION_NAMES)
    spec = tmp_path / "every_fn.yaml"
    spec.write_text(
        "name: every_fn\nclass_name: EveryFn\n"
        "weights:\n"
        "  kernel: {shape: [input_dim, units], initializer: glorot_uniform}\n"
        "  recurrent_kernel: {shape: [units, units], initializer: orthogonal, "
        "argument: recurrent}\n"
        "states: [h]\nstep:\n"
        "  a: x @ kernel + h_prev @ recurrent_kernel\n"
        f"  h: tanh(0.04 * ({total}))\n"
    )
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "rnngen", "build", str(spec), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    path = out / "every_fn_numpy.py"
    module_spec = importlib.util.spec_from_file_location("every_fn_numpy", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    rng = np.random.default_rng(8)
    layer = module.EveryFn(U, return_sequences=True, return_state=True, dtype="float64", seed=2)
    layer.build(D)
    _fd_check(layer, *_fd_inputs(rng))


def test_row_wise_functions_inside_spec_equations_match_autodiff(tmp_path):
    """softmax, log_softmax and sparsemax called in equations (nested, and on a named value):
    the generated BPTT matches autodiff of the independent TF interpreter (rnngen verify's
    autodiff rows, tolerances 1e-10·s forward and 1e-8·s gradients)."""
    from helpers import assert_autodiff_passes

    path = tmp_path / "row_wise_calls.yaml"
    path.write_text(
        "name: row_wise_calls\nclass_name: RowWiseCalls\n"
        "weights:\n"
        "  kernel: {shape: [input_dim, units], initializer: glorot_uniform}\n"
        "  recurrent_kernel: {shape: [units, units], initializer: orthogonal}\n"
        "states: [h]\nstep:\n"
        "  p: softmax(x @ kernel + h_prev @ recurrent_kernel)\n"
        "  h: 0.5 * h_prev + tanh(log_softmax(3 * p) + p) + sparsemax(x @ kernel)\n"
    )
    assert_autodiff_passes(path)
