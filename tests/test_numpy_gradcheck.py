"""Float64 central finite differences and Keras's own hard-coded test vectors."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from helpers import (
    FD_RTOL_F64,
    FORWARD_ATOL_F32,
    GRAD_RTOL_F32,
    MODULES,
    cell_spec,
    numpy_layer_class,
)

from rnngen import codegen, spec
from rnngen.verify.configs import Config
from rnngen.verify.fd import central_difference, fd_setup

CELLS = [
    ("simple_rnn", {}),
    ("gru", {"reset_after": True}),
    ("gru", {"reset_after": False}),
    ("lstm", {}),
]


def _functional(name):
    return importlib.import_module(f"generated.{name}_numpy")


@pytest.mark.parametrize(("name", "opts"), CELLS, ids=["simple_rnn", "gru_ra", "gru_rb", "lstm"])
@pytest.mark.parametrize("variant", ["plain", "mask_backwards", "dropout"])
def test_finite_differences(name, opts, variant):
    """<grad, u> equals the central difference (f(p + eps u) - f(p - eps u)) / 2 eps.

    The loss, its parameters, the analytic gradient and the central difference are the
    verifier's (``fd_setup`` and ``central_difference`` of :mod:`rnngen.verify.fd`:
    ``sum(P * outputs) + sum(Q * final states)`` through the generated ``forward``/``backward``);
    the data, direction, step and tolerance are this test's.
    """
    mod = _functional(name)
    rng = np.random.default_rng(7)
    B, T, D, U = 2, 5, 3, 4
    shapes = mod.weight_shapes(D, U, **opts)
    weights = {k: 0.6 * rng.standard_normal(s) for k, s in shapes.items()}
    x = rng.standard_normal((B, T, D))
    h0 = [0.5 * rng.standard_normal((B, U)) for _ in mod.STATES]
    mask, dmasks, go_backwards = None, None, False
    if variant == "mask_backwards":
        mask, go_backwards = np.array([[1, 0, 1, 1, 0], [0, 1, 1, 0, 1]], bool), True
    if variant == "dropout":
        gates = {"simple_rnn": 1, "gru": 3, "lstm": 4}[name]
        dmasks = {
            "dropout": [rng.random((B, D)) * 2 for _ in range(gates)],
            "recurrent_dropout": [rng.random((B, U)) * 2 for _ in range(gates)],
        }
    proj_s = [rng.standard_normal((B, U)) for _ in mod.STATES]
    cfg = Config(tuple(opts.items()), B=B, T=T, D=D, U=U, go_backwards=go_backwards)
    data = {"weights": weights, "xs": [x], "h0": h0, "mask": mask, "dmasks": dmasks}
    data["fd_state_proj"] = proj_s
    params, _, loss, grad = fd_setup(mod, cell_spec(name), cfg, data)
    assert set(params) == {"x", *(f"initial {s}" for s in mod.STATES), *weights}

    g = grad(params)
    u = {k: rng.standard_normal(v.shape) for k, v in params.items()}
    analytic = sum(np.sum(g[k] * u[k]) for k in params)
    numeric = central_difference(loss, params, u, eps=1e-6)
    assert abs(analytic - numeric) <= FD_RTOL_F64 * max(1.0, abs(numeric)), (analytic, numeric)


def test_truncate_and_clip():
    """Truncated BPTT equals full BPTT on the truncated suffix; clip_norm bounds the norm."""
    SimpleRNN = numpy_layer_class("SimpleRNN")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 8, 3)).astype(np.float32)
    layer = SimpleRNN(4, return_sequences=True)
    layer(x)
    d = np.zeros((2, 8, 4), np.float32)
    d[:, -1] = 1.0
    full = layer.backward(d)
    short = layer.backward(d, truncate=3)
    assert np.all(short.inputs[:, :5] == 0)
    np.testing.assert_allclose(short.inputs[:, -1], full.inputs[:, -1], rtol=1e-6)
    clipped = layer.backward(d, clip_norm=1e-3)
    total = np.sqrt(sum(np.sum(g * g) for g in clipped.weights.values()))
    assert total <= 1e-3 * (1 + 1e-5)
    assert clipped.norm == pytest.approx(full.norm, rel=1e-6)


# -- Keras's own hard-coded vectors (semantics doc, section 9.1) ---------------------------------

CONST = {
    "kernel_initializer": {"class_name": "Constant", "config": {"value": 0.01}},
    "recurrent_initializer": {"class_name": "Constant", "config": {"value": 0.02}},
    "bias_initializer": {"class_name": "Constant", "config": {"value": 0.03}},
}
S243 = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
S234 = np.arange(24, dtype=np.float32).reshape(2, 4, 3)
S364 = np.arange(72, dtype=np.float32).reshape(3, 6, 4)
M = np.array([[True, True, False, True], [True, False, False, True]])

VECTORS = [
    # kind, units, inputs, layer kwargs, call kwargs, expected last output (per sample)
    ("SimpleRNN", 4, S243, {}, {}, [0.405432, 0.73605347]),
    ("SimpleRNN", 4, S243, {"go_backwards": True}, {}, [0.11144729, 0.5528889]),
    (
        "SimpleRNN",
        4,
        S234,
        {},
        {"initial_state": np.arange(8, dtype=np.float32).reshape(2, 4)},
        [0.33621645, 0.6262637],
    ),
    (
        "SimpleRNN",
        4,
        S234,
        {"go_backwards": True},
        {"initial_state": np.arange(8, dtype=np.float32).reshape(2, 4)},
        [0.07344437, 0.43043602],
    ),
    ("SimpleRNN", 4, S234, {}, {"mask": M}, [0.32951632, 0.61799484]),
    ("SimpleRNN", 4, S234, {"go_backwards": True}, {"mask": M}, [0.07376196, 0.43645123]),
    ("GRU", 3, S364, {}, {}, [0.5217289, 0.6371659, 0.39384964]),
    ("GRU", 3, S364, {"go_backwards": True}, {}, [0.24406259, 0.611516, 0.3928808]),
    ("GRU", 3, S364, {"reset_after": False}, {}, [0.51447755, 0.6426879, 0.40208298]),
    ("GRU", 3, S364, {"use_bias": False}, {}, [0.49988455, 0.64701194, 0.4103359]),
    ("GRU", 2, S234, {}, {"mask": M}, [0.19393763, 0.30818558]),
    ("GRU", 2, S234, {"go_backwards": True}, {"mask": M}, [0.11669192, 0.28380975]),
    ("LSTM", 3, S364, {}, {}, [0.6288687, 0.86899155, 0.9460773]),
    ("LSTM", 3, S364, {"go_backwards": True}, {}, [0.35622165, 0.74789524, 0.8872726]),
    ("LSTM", 3, S364, {"unit_forget_bias": False}, {}, [0.57019705, 0.8661914, 0.9459622]),
    ("LSTM", 3, S364, {"use_bias": False}, {}, [0.54986924, 0.86226785, 0.9443936]),
    (
        "LSTM",
        2,
        S234,
        {},
        {"mask": np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)},
        [0.11755939, 0.28556206],
    ),
    (
        "LSTM",
        2,
        S234,
        {"go_backwards": True},
        {"mask": np.array([[0, 1, 1, 1], [0, 0, 1, 1]], bool)},
        [0.15341201, 0.3844719],
    ),
]


@pytest.mark.parametrize(("kind", "units", "x", "kw", "call", "expected"), VECTORS)
def test_keras_reference_vectors(kind, units, x, kw, call, expected):
    layer = numpy_layer_class(kind)(units, **CONST, **kw)
    out = layer(x, **call)
    np.testing.assert_allclose(out[:, 0], expected, atol=1e-5)
    assert np.allclose(out, out[:, :1])  # constant weights: every unit is equal


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("SimpleRNN", [0.40559256, 0.7361247]),
        ("GRU", [0.29542392, 0.5885018]),
        ("LSTM", [0.3124785, 0.6863672]),
    ],
)
def test_keras_reference_statefulness(kind, expected):
    layer = numpy_layer_class(kind)(4, stateful=True, **CONST)
    layer(S243)
    np.testing.assert_allclose(layer(S243)[:, 0], expected, atol=1e-5)
    layer.reset_state()
    layer(S243)
    np.testing.assert_allclose(layer(S243)[:, 0], expected, atol=1e-5)


def test_keras_reference_masked_sequences():
    SimpleRNN = numpy_layer_class("SimpleRNN")
    out = SimpleRNN(2, return_sequences=True, **CONST)(S234, mask=M)
    np.testing.assert_allclose(
        out[0, :, 0], [0.0599281, 0.15122814, 0.15122814, 0.32394567], atol=1e-5
    )
    np.testing.assert_allclose(out[1, :, 0], [0.3969304] * 3 + [0.608085], atol=1e-5)
    zeroed = SimpleRNN(2, return_sequences=True, zero_output_for_mask=True, **CONST)(S234, mask=M)
    np.testing.assert_allclose(zeroed[..., 0], np.where(M, out[..., 0], 0.0), atol=1e-6)


@pytest.mark.parametrize("gain", [0.5, 1.5])
def test_state_norms_show_vanishing_and_exploding_gradients(gain):
    """With h_t = h_{t-1} (gain I) + x_t W, the gradient entering step t is gain^(T-t) d."""
    SimpleRNN = numpy_layer_class("SimpleRNN")
    T, U = 12, 3
    layer = SimpleRNN(U, activation="linear", use_bias=False, dtype="float64")
    x = np.random.default_rng(0).standard_normal((2, T, 4))
    layer(x)
    layer.set_weights([layer.weights["kernel"], gain * np.eye(U)])
    layer(x)
    d = np.random.default_rng(1).standard_normal((2, U))
    grads = layer.backward(d)
    expected = np.linalg.norm(d) * gain ** (T - np.arange(T))
    np.testing.assert_allclose(grads.state_norms, expected, rtol=1e-10)
    np.testing.assert_allclose(
        grads.state_norms[0], np.linalg.norm(grads.initial_state[0]), rtol=1e-12
    )


def test_state_norms_of_lstm_cover_both_states():
    LSTM = numpy_layer_class("LSTM")
    x = np.random.default_rng(2).standard_normal((3, 7, 4)).astype(np.float32)
    layer = LSTM(5, return_sequences=True)
    y = layer(x)
    grads = layer.backward(np.ones_like(y))
    h0, c0 = grads.initial_state
    assert grads.state_norms.shape == (7,)
    assert grads.state_norms[0] == pytest.approx(np.sqrt(np.sum(h0**2) + np.sum(c0**2)), rel=1e-5)
    short = layer.backward(np.ones_like(y), truncate=3)
    assert np.all(short.state_norms[:4] == 0) and np.all(short.state_norms[4:] > 0)


def test_shared_tolerances_are_the_core_issues():
    """The tests take their tolerances from the verifier; neither may loosen them."""
    assert (FORWARD_ATOL_F32, GRAD_RTOL_F32, FD_RTOL_F64) == (1e-5, 1e-4, 1e-6)


def test_shared_cell_table_names_the_shipped_specs():
    """The tests' table of cells (the verifier's ``SHIPPED``) is the shipped specs that mirror a
    Keras layer: each ``spec/<name>.yaml`` has that class name and that Keras reference, and no
    other shipped spec has a Keras reference."""
    shipped = {p.stem: spec.load(p) for p in sorted(codegen.spec_dir().glob("*.yaml"))}
    with_reference = {cs.class_name: name for name, cs in shipped.items() if cs.reference}
    assert with_reference == MODULES
    for kind, name in MODULES.items():
        assert shipped[name].reference == f"keras.layers.{kind}", name
