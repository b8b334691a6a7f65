"""Generated NumPy layers against Keras: forward values and tf.GradientTape gradients.

Each case builds the Keras layer, gives it random weights, copies them into the
generated NumPy twin, and compares outputs, final states, losses and the
gradients of ``sum(proj * output) + sum(proj_s * state) + sum(losses)`` with
respect to the inputs, the initial states and every weight.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (
    FORWARD_ATOL_F32,
    GRAD_RTOL_F32,
    assert_close_abs,
    assert_close_rel,
    cell_spec,
    generated_module,
    numpy_layer_class,
)

from rnngen.verify.configs import Config
from rnngen.verify.data import layer_kwargs
from rnngen.verify.refs import run_keras_layer

pytestmark = pytest.mark.tf
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

B, T, D, U = 3, 6, 5, 4
ACTIVATIONS = [
    "tanh",
    "sigmoid",
    "hard_sigmoid",
    "relu",
    "relu6",
    "elu",
    "selu",
    "softplus",
    "softsign",
    "exponential",
    "linear",
]
MASK = np.array(
    [[1, 1, 0, 1, 0, 1], [0, 1, 1, 1, 1, 0], [1, 0, 0, 0, 1, 1]], dtype=bool
)  # gaps, a leading masked step and a masked last step


def _gates(kind):
    return {"SimpleRNN": 1, "GRU": 3, "LSTM": 4}[kind]


def _n_states(kind):
    return 2 if kind == "LSTM" else 1


#: the layer arguments the verifier's ``Config`` carries; the others go to the layer as they are
CONFIG_KWARGS = tuple(layer_kwargs(Config(options=())))


def _keras(kind, layer_kwargs, data, *, dropout=None, activity=None, capture=None):
    """The verifier's Keras runner on ``keras.layers.<kind>`` (float32): returned tensors,
    ``sum(losses)`` and the ``tf.GradientTape`` gradients of ``sum(proj * returned) +
    sum(losses)``; ``capture`` receives the Keras layer."""
    kw = {k: v for k, v in layer_kwargs.items() if k in CONFIG_KWARGS}
    extra = {k: v for k, v in layer_kwargs.items() if k not in CONFIG_KWARGS}
    if dropout:
        kw.update(dropout=dropout[0], recurrent_dropout=dropout[1])
    cfg = Config(options=(), B=B, T=T, D=D, U=U, **kw)

    def prepare(layer):
        if activity is not None:  # Keras's SimpleRNN drops the argument; set it as documented
            layer.activity_regularizer = keras.regularizers.get(activity)
        if capture is not None:
            capture.append(layer)

    return run_keras_layer(
        getattr(keras.layers, kind), cell_spec(kind), cfg, data, extra=extra, prepare=prepare
    )


def compare(
    kind,
    layer_kwargs=None,
    *,
    mask=None,
    initial_state=False,
    dropout=None,
    activity=None,
    seed=0,
    scale=0.5,
):
    """Run one configuration through Keras and the NumPy twin and assert parity."""
    layer_kwargs = dict(layer_kwargs or {})
    layer_kwargs.setdefault("return_sequences", True)
    layer_kwargs.setdefault("return_state", True)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    shapes = generated_module(kind).weight_shapes(
        D, U, **{k: layer_kwargs[k] for k in ("use_bias", "reset_after") if k in layer_kwargs}
    )
    weights = {n: (scale * rng.standard_normal(s)).astype(np.float32) for n, s in shapes.items()}
    twin_kwargs = dict(layer_kwargs)
    if dropout:
        twin_kwargs.update(dropout=dropout[0], recurrent_dropout=dropout[1])
    twin = numpy_layer_class(kind)(U, **twin_kwargs, activity_regularizer=activity)
    twin.set_weights(list(weights.values()))

    states0 = [rng.standard_normal((B, U)).astype(np.float32) for _ in range(_n_states(kind))]
    twin_call = {}
    if mask is not None:
        twin_call["mask"] = mask
    if initial_state:
        twin_call["initial_state"] = states0
    dmasks = None
    if dropout:
        per_gate = dropout[1] > 0 and kind != "SimpleRNN"
        n = _gates(kind) if per_gate else 1
        dpm = [
            ((rng.random((B, D)) >= dropout[0]) / (1 - dropout[0])).astype(np.float32)
            for _ in range(n)
        ]
        rdpm = [
            ((rng.random((B, U)) >= dropout[1]) / (1 - dropout[1])).astype(np.float32)
            for _ in range(n)
        ]
        dmasks = {
            "dropout": dpm if per_gate else dpm[0],
            "recurrent_dropout": rdpm if per_gate else rdpm[0],
        }
        twin_call["dropout_masks"] = dmasks
    first = (B, T, U) if layer_kwargs["return_sequences"] else (B, U)
    n_ret = 1 + (_n_states(kind) if layer_kwargs["return_state"] else 0)
    projs = [
        rng.standard_normal(first if i == 0 else (B, U)).astype(np.float32) for i in range(n_ret)
    ]
    data = {
        "weights": weights,
        "xs": [x],
        "mask": mask,
        "h0": states0 if initial_state else None,
        "dmasks": dmasks,
        "proj": projs,
    }
    captured = []
    ref = _keras(kind, layer_kwargs, data, dropout=dropout, activity=activity, capture=captured)
    ref_losses = list(captured[0].losses)

    got = twin(x, **twin_call)
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == n_ret
    for i, g in enumerate(got):
        expected = ref["values"][f"returned[{i}]"]
        assert_close_abs(g, expected, FORWARD_ATOL_F32, f"{kind} returned tensor {i}")
    assert len(twin.losses) == len(ref_losses)
    for a, b in zip(twin.losses, ref_losses, strict=True):
        assert abs(float(a) - float(b)) <= 1e-5 * max(1.0, abs(float(b))), "losses differ"

    grads = ref["grads"]
    result = twin.backward(projs[0], projs[1:] if len(projs) > 1 else None)
    assert_close_rel(result.inputs, grads["d inputs"], GRAD_RTOL_F32, f"{kind} d_inputs")
    if initial_state:
        states = cell_spec(kind).states
        assert len(result.initial_state) == len(states)
        for i, (s, name) in enumerate(zip(result.initial_state, states, strict=True)):
            expected = grads[f"d initial {name}"]
            assert_close_rel(s, expected, GRAD_RTOL_F32, f"{kind} d_initial_state[{i}]")
    names = list(twin.weights)
    assert names == list(weights)
    for name in names:
        expected = grads[f"d {name}"]
        assert_close_rel(result.weights[name], expected, GRAD_RTOL_F32, f"{kind} d_{name}")
    return twin, captured[0]


CELLS = [
    ("SimpleRNN", {}),
    ("GRU", {"reset_after": True}),
    ("GRU", {"reset_after": False}),
    ("LSTM", {}),
]
CELL_IDS = ["simple_rnn", "gru_reset_after", "gru_reset_before", "lstm"]


@pytest.mark.parametrize(("kind", "opts"), CELLS, ids=CELL_IDS)
@pytest.mark.parametrize(
    "case",
    [
        "default",
        "no_bias",
        "last_output_only",
        "output_only",
        "go_backwards",
        "mask",
        "mask_zero_output",
        "mask_go_backwards",
        "initial_state",
        "dropout",
        "recurrent_dropout",
        "regularizers",
    ],
)
def test_matches_keras(kind, opts, case):
    kw = dict(opts)
    extra = {}
    if case == "no_bias":
        kw["use_bias"] = False
    elif case == "last_output_only":
        kw.update(return_sequences=False)
    elif case == "output_only":
        kw.update(return_sequences=False, return_state=False)
    elif case == "go_backwards":
        kw["go_backwards"] = True
        extra["initial_state"] = True
    elif case == "mask":
        extra["mask"] = MASK
        extra["initial_state"] = True
    elif case == "mask_zero_output":
        kw["zero_output_for_mask"] = True
        extra["mask"] = MASK
    elif case == "mask_go_backwards":
        kw.update(go_backwards=True, zero_output_for_mask=True)
        extra["mask"] = MASK
    elif case == "initial_state":
        extra["initial_state"] = True
    elif case == "dropout":
        extra["dropout"] = (0.3, 0.0)
    elif case == "recurrent_dropout":
        extra["dropout"] = (0.25, 0.4)
        extra["mask"] = MASK
    elif case == "regularizers":
        kw.update(
            kernel_regularizer="l2",
            recurrent_regularizer={"class_name": "L1", "config": {"l1": 0.1}},
            bias_regularizer={"class_name": "L1L2", "config": {"l1": 0.2, "l2": 0.3}},
        )
        extra["activity"] = {"class_name": "L2", "config": {"l2": 0.5}}
    compare(kind, kw, **extra)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_simple_rnn_activations(activation):
    # exponential feeds back exp(h): keep the weights small so values stay O(1)
    scale = 0.1 if activation == "exponential" else 0.5
    compare("SimpleRNN", {"activation": activation}, mask=MASK, initial_state=True, scale=scale)


@pytest.mark.parametrize(("kind", "opts"), CELLS[1:], ids=CELL_IDS[1:])
@pytest.mark.parametrize(
    ("activation", "recurrent"),
    [("relu", "hard_sigmoid"), ("softsign", "tanh"), ("elu", "sigmoid")],
)
def test_gated_activations(kind, opts, activation, recurrent):
    compare(
        kind,
        {**opts, "activation": activation, "recurrent_activation": recurrent},
        initial_state=True,
    )


@pytest.mark.parametrize(("kind", "opts"), CELLS, ids=CELL_IDS)
def test_stateful_pair(kind, opts):
    """Two calls of a stateful layer: the second starts from the first's final state."""
    rng = np.random.default_rng(3)
    x1, x2 = (rng.standard_normal((B, T, D)).astype(np.float32) for _ in range(2))
    shapes = generated_module(kind).weight_shapes(D, U, **opts)
    weights = {n: (0.5 * rng.standard_normal(s)).astype(np.float32) for n, s in shapes.items()}
    proj = rng.standard_normal((B, T, U)).astype(np.float32)
    data = {"weights": weights, "xs": [x1, x2], "mask": None, "h0": None, "dmasks": None}
    data["proj"] = [proj]
    captured = []
    kw = dict(stateful=True, return_sequences=True, return_state=False, **opts)
    ref = _keras(kind, kw, data, capture=captured)
    twin = numpy_layer_class(kind)(U, stateful=True, return_sequences=True, **opts)
    twin.set_weights(list(weights.values()))
    for xi, key in ((x1, "call1.returned[0]"), (x2, "returned[0]")):
        assert_close_abs(twin(xi), ref["values"][key], FORWARD_ATOL_F32, f"{kind} stateful")
    grads = twin.backward(proj)
    g = ref["grads"]
    assert_close_rel(grads.inputs, g["d inputs"], GRAD_RTOL_F32, "stateful d_inputs")
    assert list(twin.weights) == list(weights)
    for name in twin.weights:
        expected = g[f"d {name}"]
        assert_close_rel(grads.weights[name], expected, GRAD_RTOL_F32, f"stateful d_{name}")
    twin.reset_state()
    keras_layer = captured[0]
    keras_layer.reset_state()
    assert_close_abs(twin(x1), keras_layer(x1).numpy(), FORWARD_ATOL_F32, "after reset_state")
