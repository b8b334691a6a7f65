"""The generated TensorFlow backend (generated/<name>_tf.py) against Keras 3.

Each test copies random weights from a ``keras.layers.X`` into the generated layer and
compares outputs, final states and gradients. Tolerances (float32):
forward <= 1e-5 absolute; gradients <= 1e-4 relative to the largest entry.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from helpers import FORWARD_ATOL_F32, GRAD_RTOL_F32, tf_layer_class  # noqa: E402

pytestmark = pytest.mark.tf
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FWD_TOL = FORWARD_ATOL_F32  # 1e-5 absolute
GRAD_TOL = GRAD_RTOL_F32  # 1e-4 relative to the largest entry
GATES = {"SimpleRNN": 1, "GRU": 3, "LSTM": 4}
B, T, D, U = 3, 6, 4, 5


def ours(kind):
    return tf_layer_class(kind)


def reference(kind):
    return getattr(keras.layers, kind)


def n_states(kind):
    return 2 if kind == "LSTM" else 1


def gapped_mask():
    mask = np.ones((B, T), bool)
    mask[0, 2] = False  # a gap in the middle
    mask[1, :2] = False  # leading masked steps
    mask[2, 3:] = False  # trailing masked steps
    return mask


def perturb(weights, rng):
    # non-zero biases and weights away from the initializers' special structure
    return [w + 0.2 * rng.standard_normal(w.shape).astype(np.float32) for w in weights]


def run(layer, x, projections, training=False, **call):
    """Outputs, and gradients of a random-projection loss + sum(layer.losses)."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        tape.watch(call.get("initial_state", []))
        out = layer(x, training=training, **call)
        out = out if isinstance(out, list | tuple) else [out]
        loss = sum(tf.reduce_sum(o * p) for o, p in zip(out, projections, strict=True))
        loss = loss + sum(layer.losses)
    grads = tape.gradient(loss, [x, *call.get("initial_state", []), *layer.trainable_weights])
    return [o.numpy() for o in out], [g.numpy() for g in grads]


def assert_close(ref, got):
    outs_r, grads_r = ref
    outs_g, grads_g = got
    fwd = max(float(np.abs(a - b).max()) for a, b in zip(outs_r, outs_g, strict=True))
    assert fwd <= FWD_TOL, fwd
    assert len(grads_r) == len(grads_g)
    rel = max(
        float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))
        for a, b in zip(grads_r, grads_g, strict=True)
    )
    assert rel <= GRAD_TOL, rel
    print(f"max errors: forward {fwd:.2e}, gradient (relative) {rel:.2e}")
    return fwd, rel


def pair(kind, kw, impl, rng, **layer_kw):
    ref = reference(kind)(U, **kw, **layer_kw)
    mine = ours(kind)(U, **kw, **layer_kw, implementation=impl)
    ref.build((B, T, D))
    mine.build((B, T, D))
    weights = perturb(ref.get_weights(), rng)
    ref.set_weights(weights)
    mine.set_weights(weights)
    return ref, mine


CONFIGS = [
    ("SimpleRNN", {}),
    ("SimpleRNN", {"activation": "relu", "use_bias": False}),
    ("GRU", {}),
    ("GRU", {"reset_after": False}),
    ("GRU", {"use_bias": False, "recurrent_activation": "hard_sigmoid"}),
    ("LSTM", {}),
    ("LSTM", {"use_bias": False, "activation": "softsign"}),
]


@pytest.mark.parametrize("impl", ["loop", "fused"])
@pytest.mark.parametrize("index", range(len(CONFIGS)))
def test_keras_parity(index, impl):
    """Masks with gaps, initial_state, go_backwards (every other config), regularizers."""
    kind, kw = CONFIGS[index]
    rng = np.random.default_rng(index)
    layer_kw = dict(
        return_sequences=True,
        return_state=True,
        go_backwards=bool(index % 2),
        kernel_regularizer="l2",
        recurrent_regularizer=keras.regularizers.L1(0.01),
    )
    ref, mine = pair(kind, kw, impl, rng, **layer_kw)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    h0 = [
        tf.constant(rng.standard_normal((B, U)).astype(np.float32)) for _ in range(n_states(kind))
    ]
    proj = [rng.standard_normal((B, T, U)).astype(np.float32)]
    proj += [rng.standard_normal((B, U)).astype(np.float32) for _ in h0]
    call = dict(mask=tf.constant(gapped_mask()), initial_state=h0)
    assert_close(run(ref, x, proj, **call), run(mine, x, proj, **call))
    # without mask and initial state, last output only
    ref.return_sequences = mine.return_sequences = False
    ref.return_state = mine.return_state = False
    assert_close(run(ref, x, proj[1:2]), run(mine, x, proj[1:2]))


def inject(cell, x_masks, h_masks):
    cell.get_dropout_mask = lambda step_input: x_masks
    cell.get_recurrent_dropout_mask = lambda step_input: h_masks


@pytest.mark.parametrize("kind", ["SimpleRNN", "GRU", "LSTM"])
def test_dropout_with_injected_masks(kind):
    """Known dropout masks (semantics doc §2.2); Keras GRU/LSTM use implementation 1 here."""
    rng = np.random.default_rng(7)
    rate, rrate = 0.3, 0.4
    g = GATES[kind]

    def masks(shape, r):
        ms = [((rng.random(shape) >= r) / (1 - r)).astype(np.float32) for _ in range(g)]
        return [tf.constant(m) for m in ms] if g > 1 else tf.constant(ms[0])

    x_masks, h_masks = masks((B, D), rate), masks((B, U), rrate)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    proj = [rng.standard_normal((B, T, U)).astype(np.float32)]
    layer_kw = dict(dropout=rate, recurrent_dropout=rrate, return_sequences=True)
    results, weights = {}, None
    for impl in ("loop", "fused"):
        ref, mine = pair(kind, {}, impl, np.random.default_rng(1), **layer_kw)
        weights = weights or ref.get_weights()
        ref.set_weights(weights)
        mine.set_weights(weights)
        inject(ref.cell, x_masks, h_masks)
        inject(mine.cell, x_masks, h_masks)
        call = dict(mask=tf.constant(gapped_mask()))
        expected = run(ref, x, proj, training=True, **call)
        results[impl] = run(mine, x, proj, training=True, **call)
        assert_close(expected, results[impl])
        # inference ignores the masks
        assert_close(run(ref, x, proj, **call), run(mine, x, proj, **call))
    assert_close(results["loop"], results["fused"])


@pytest.mark.parametrize("kind", ["SimpleRNN", "GRU", "LSTM"])
def test_fused_gradient_matches_autodiff_through_loop(kind):
    rng = np.random.default_rng(3)
    layer_kw = dict(return_sequences=True, return_state=True, zero_output_for_mask=True)
    loop = ours(kind)(U, implementation="loop", **layer_kw)
    fused = ours(kind)(U, implementation="fused", **layer_kw)
    loop.build((B, T, D))
    fused.build((B, T, D))
    fused.set_weights(perturb(loop.get_weights(), rng))
    loop.set_weights(fused.get_weights())
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    proj = [rng.standard_normal((B, T, U)).astype(np.float32)]
    proj += [rng.standard_normal((B, U)).astype(np.float32) for _ in range(n_states(kind))]
    call = dict(mask=tf.constant(gapped_mask()))
    assert_close(run(loop, x, proj, **call), run(fused, x, proj, **call))


def test_seed_example():
    SimpleRNN = ours("SimpleRNN")
    inputs = np.random.random([4, 4, 8]).astype(np.float32)
    simple_rnn = SimpleRNN(4)
    output = simple_rnn(inputs)
    assert output.shape == (4, 4)
    simple_rnn = SimpleRNN(4, return_sequences=True, return_state=True)
    whole_sequence_output, final_state = simple_rnn(inputs)
    assert whole_sequence_output.shape == (4, 4, 4)
    assert final_state.shape == (4, 4)
    np.testing.assert_array_equal(whole_sequence_output[:, -1], final_state)


def test_defaults_config_and_weights_match_keras():
    for kind in ("SimpleRNN", "GRU", "LSTM"):
        ref, mine = reference(kind)(U), ours(kind)(U)
        ref.build((B, T, D))
        mine.build((B, T, D))
        assert [w.shape for w in mine.get_weights()] == [w.shape for w in ref.get_weights()]
        assert [w.name for w in mine.weights] == [w.name for w in ref.weights]
        ref_cfg, my_cfg = ref.get_config(), mine.get_config()
        for key in ref_cfg:
            if key in ("name", "seed"):
                continue
            assert key in my_cfg, key
        assert my_cfg["implementation"] == "auto"
    lstm = ours("LSTM")(U)
    lstm.build((B, T, D))
    np.testing.assert_array_equal(lstm.get_weights()[2][U : 2 * U], 1.0)  # unit_forget_bias


def test_activity_regularizer_is_honoured():
    layer = ours("SimpleRNN")(U, activity_regularizer=keras.regularizers.L2(0.5))
    y = layer(np.ones((B, T, D), np.float32))
    assert len(layer.losses) == 1
    np.testing.assert_allclose(float(layer.losses[0]), 0.5 * float(tf.reduce_sum(y * y)) / B, 1e-5)


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    model = keras.Sequential(
        [
            keras.Input((T, D)),
            keras.layers.Masking(0.0),
            ours("LSTM")(U, return_sequences=True, dropout=0.1, seed=3),
            ours("GRU")(U, reset_after=False, implementation="loop"),
            keras.layers.Dense(2),
        ]
    )
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    x[0, -2:] = 0.0
    before = model.predict(x, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), before, atol=1e-6)
    assert loaded.layers[1].get_config() == model.layers[1].get_config()
    assert loaded.layers[2].implementation == "loop"


@pytest.mark.parametrize("impl", ["loop", "fused"])
def test_fit_loss_history_matches_keras(impl):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((8, T, D)).astype(np.float32)
    x[:2, -2:] = 0.0
    y = rng.standard_normal((8, 1)).astype(np.float32)

    def build(layer_cls, **kw):
        model = keras.Sequential(
            [
                keras.Input((T, D)),
                keras.layers.Masking(0.0),
                layer_cls(U, return_sequences=True, kernel_regularizer="l2", **kw),
                layer_cls(U, **kw),
                keras.layers.Dense(1),
            ]
        )
        model.compile(keras.optimizers.SGD(0.1), "mse")
        return model

    ref = build(keras.layers.GRU)
    mine = build(ours("GRU"), implementation=impl)
    mine.set_weights(perturb(ref.get_weights(), rng))
    ref.set_weights(mine.get_weights())
    h_ref = ref.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0).history["loss"]
    h_mine = mine.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0).history["loss"]
    np.testing.assert_allclose(h_mine, h_ref, rtol=1e-5)


def test_bidirectional_with_embedding_mask():
    rng = np.random.default_rng(13)
    tokens = rng.integers(1, 9, (B, T))
    tokens[0, -2:] = 0
    tokens[1, :1] = 0

    def build(layer):
        inp = keras.Input((T,), dtype="int32")
        h = keras.layers.Embedding(10, D, mask_zero=True)(inp)
        h = keras.layers.Bidirectional(layer)(h)
        return keras.Model(inp, h)

    ref = build(keras.layers.LSTM(U, return_sequences=True))
    mine = build(ours("LSTM")(U, return_sequences=True))
    mine.set_weights(perturb(ref.get_weights(), rng))
    ref.set_weights(mine.get_weights())
    np.testing.assert_allclose(mine(tokens), ref(tokens), atol=FWD_TOL)


def test_stateful_matches_keras():
    rng = np.random.default_rng(17)
    ref = keras.layers.GRU(U, stateful=True, return_sequences=True)
    mine = ours("GRU")(U, stateful=True, return_sequences=True)
    ref.build((B, T, D))
    mine.build((B, T, D))
    mine.set_weights(perturb(ref.get_weights(), rng))
    ref.set_weights(mine.get_weights())
    for _ in range(2):
        x = rng.standard_normal((B, T, D)).astype(np.float32)
        np.testing.assert_allclose(mine(x), ref(x), atol=FWD_TOL)
    mine.reset_state()
    ref.reset_state()
    np.testing.assert_allclose(mine(x), ref(x), atol=FWD_TOL)


def test_xla_jit_compile_fused():
    rng = np.random.default_rng(19)
    layer = ours("LSTM")(U, return_sequences=True, go_backwards=True, implementation="fused")
    layer.build((B, T, D))
    layer.set_weights(perturb(layer.get_weights(), rng))
    x = tf.constant(rng.standard_normal((B, T, D)).astype(np.float32))
    mask = tf.constant(gapped_mask())

    def loss_and_grads(x, mask):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.sin(layer(x, mask=mask)))
        return loss, tape.gradient(loss, layer.trainable_weights)

    eager = loss_and_grads(x, mask)
    xla = tf.function(loss_and_grads, jit_compile=True)(x, mask)
    np.testing.assert_allclose(xla[0], eager[0], rtol=1e-5)
    for a, b in zip(eager[1], xla[1], strict=True):
        np.testing.assert_allclose(b, a, atol=1e-5 * float(np.abs(a).max()))


MIRRORED = textwrap.dedent(
    """
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.path.insert(0, {root!r})
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from generated.gru_tf import GRU

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 5, 3)).astype(np.float32)
    y = rng.standard_normal((8, 1)).astype(np.float32)

    def build():
        model = keras.Sequential([keras.Input((5, 3)), GRU(4), keras.layers.Dense(1)])
        model.compile(keras.optimizers.SGD(0.1), "mse")
        return model

    single = build()
    weights = single.get_weights()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        mirrored = build()
    mirrored.set_weights(weights)
    h1 = single.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history["loss"]
    h2 = mirrored.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history["loss"]
    np.testing.assert_allclose(h2, h1, rtol=1e-5)
    print("OK", h1, h2)
    """
)


def test_mirrored_strategy_two_cpus():
    proc = subprocess.run(
        [sys.executable, "-c", MIRRORED.format(root=str(ROOT))],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK" in proc.stdout


@pytest.mark.parametrize("impl", ["loop", "fused", "auto"])
def test_unroll_go_backwards_zero_output_mask_is_correct(impl):
    """Keras's unrolled loop zeroes the wrong steps in this combination; ours does not."""
    from generated.simple_rnn_numpy import SimpleRNN as NumpySimpleRNN

    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    mask = np.array([[1, 1, 0, 1, 0], [0, 1, 1, 1, 1]], bool)
    kw = dict(return_sequences=True, go_backwards=True, zero_output_for_mask=True)
    twin = NumpySimpleRNN(4, **kw)
    twin(x)
    expected = twin(x, mask=mask)  # independent NumPy twin (tested against Keras's while loop)
    layer = ours("SimpleRNN")(4, unroll=True, implementation=impl, **kw)
    layer(x)
    layer.set_weights(twin.get_weights())
    got = layer(x, mask=tf.constant(mask)).numpy()
    assert np.max(np.abs(got - expected)) <= 1e-5
    while_loop = keras.layers.SimpleRNN(4, unroll=False, **kw)
    while_loop(x)
    while_loop.set_weights(twin.get_weights())
    assert np.max(np.abs(while_loop(x, mask=tf.constant(mask)).numpy() - expected)) <= 1e-5
