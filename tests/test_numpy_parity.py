"""Generated NumPy layers against Keras: forward values and tf.GradientTape gradients.

Each case builds the Keras layer, gives it random weights, copies them into the
generated NumPy twin, and compares outputs, final states, losses and the
gradients of ``sum(proj * output) + sum(proj_s * state) + sum(losses)`` with
respect to the inputs, the initial states and every weight.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from helpers import (  # noqa: E402
    FORWARD_ATOL_F32,
    GRAD_RTOL_F32,
    assert_close_abs,
    assert_close_rel,
    numpy_layer_class,
)

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
    if dropout:
        layer_kwargs.update(dropout=dropout[0], recurrent_dropout=dropout[1])
    ref = getattr(keras.layers, kind)(U, **layer_kwargs)
    ref.build((B, T, D))
    weights = [(scale * rng.standard_normal(w.shape)).astype(np.float32) for w in ref.get_weights()]
    ref.set_weights(weights)
    if activity is not None:  # Keras's SimpleRNN drops the argument; set it as documented
        ref.activity_regularizer = keras.regularizers.get(activity)
    twin = numpy_layer_class(kind)(U, **layer_kwargs, activity_regularizer=activity)
    twin.set_weights(weights)

    states0 = [rng.standard_normal((B, U)).astype(np.float32) for _ in range(_n_states(kind))]
    call = {}
    twin_call = {}
    if mask is not None:
        call["mask"] = tf.constant(mask)
        twin_call["mask"] = mask
    if initial_state:
        twin_call["initial_state"] = states0
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
        ref.cell.get_dropout_mask = lambda _: dpm if per_gate else dpm[0]
        ref.cell.get_recurrent_dropout_mask = lambda _: rdpm if per_gate else rdpm[0]
        call["training"] = True
        twin_call["dropout_masks"] = {
            "dropout": dpm if per_gate else dpm[0],
            "recurrent_dropout": rdpm if per_gate else rdpm[0],
        }

    xv = tf.constant(x)
    sv = [tf.constant(s) for s in states0]
    with tf.GradientTape() as tape:
        tape.watch([xv, *sv])
        out = ref(xv, initial_state=sv if initial_state else None, **call)
        out = out if isinstance(out, list | tuple) else [out]
        projs = [rng.standard_normal(o.shape).astype(np.float32) for o in out]
        loss = sum(tf.reduce_sum(o * p) for o, p in zip(out, projs, strict=True))
        loss = loss + sum(ref.losses) if ref.losses else loss
    sources = [xv, *sv, *ref.trainable_weights]
    grads = tape.gradient(loss, sources)

    got = twin(x, **twin_call)
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(out)
    for i, (g, o) in enumerate(zip(got, out, strict=True)):
        assert_close_abs(g, o.numpy(), FORWARD_ATOL_F32, f"{kind} returned tensor {i}")
    assert len(twin.losses) == len(ref.losses)
    for a, b in zip(twin.losses, ref.losses, strict=True):
        assert abs(float(a) - float(b)) <= 1e-5 * max(1.0, abs(float(b))), "losses differ"

    result = twin.backward(projs[0], projs[1:] if len(projs) > 1 else None)
    assert_close_rel(result.inputs, grads[0].numpy(), GRAD_RTOL_F32, f"{kind} d_inputs")
    if initial_state:
        for i, s in enumerate(result.initial_state):
            assert_close_rel(s, grads[1 + i].numpy(), GRAD_RTOL_F32, f"{kind} d_initial_state[{i}]")
    weight_grads = grads[1 + len(sv) :]
    names = list(twin.weights)
    assert len(names) == len(weight_grads)
    for name, g in zip(names, weight_grads, strict=True):
        assert_close_rel(result.weights[name], g.numpy(), GRAD_RTOL_F32, f"{kind} d_{name}")
    return twin, ref


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
    ref = getattr(keras.layers, kind)(U, stateful=True, return_sequences=True, **opts)
    ref.build((B, T, D))
    weights = [(0.5 * rng.standard_normal(w.shape)).astype(np.float32) for w in ref.get_weights()]
    ref.set_weights(weights)
    twin = numpy_layer_class(kind)(U, stateful=True, return_sequences=True, **opts)
    twin.set_weights(weights)
    for xi in (x1, x2):
        assert_close_abs(twin(xi), ref(xi).numpy(), FORWARD_ATOL_F32, f"{kind} stateful")
    xv = tf.constant(x2)
    proj = rng.standard_normal((B, T, U)).astype(np.float32)
    with tf.GradientTape() as tape:
        tape.watch(xv)
        loss = tf.reduce_sum(ref(xv) * proj)
    g_x, *g_w = tape.gradient(loss, [xv, *ref.trainable_weights])
    twin(x2)  # third call, same state as Keras's third call
    grads = twin.backward(proj)
    assert_close_rel(grads.inputs, g_x.numpy(), GRAD_RTOL_F32, "stateful d_inputs")
    for name, g in zip(twin.weights, g_w, strict=True):
        assert_close_rel(grads.weights[name], g.numpy(), GRAD_RTOL_F32, f"stateful d_{name}")
    twin.reset_state()
    ref.reset_state()
    assert_close_abs(twin(x1), ref(x1).numpy(), FORWARD_ATOL_F32, "after reset_state")
