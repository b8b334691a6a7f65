"""Guards of the generated TensorFlow layers (generated/<name>_tf.py), mirroring
tests/test_layer_guards.py for the NumPy layers: bad calls raise ValueError naming expected
and received shapes or values; odd but valid inputs (integers, NaN/Inf, an empty batch) work
as in Keras. Call-path checks run for both ``implementation="loop"`` and ``"fused"``."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from helpers import MODULES, tf_layer_class  # noqa: E402

pytestmark = pytest.mark.tf
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

N_STATES = {"SimpleRNN": 1, "GRU": 1, "LSTM": 2}
KINDS = sorted(MODULES)
IMPLS = ["loop", "fused"]
B, T, D, U = 2, 3, 5, 4


def layer_class(kind):
    return tf_layer_class(kind)


def make(kind, impl="auto", **kw):
    kw.setdefault("seed", 0)
    return layer_class(kind)(U, implementation=impl, **kw)


def x(b=B, t=T, d=D, dtype=np.float32):
    return np.random.default_rng(0).standard_normal((b, t, d)).astype(dtype)


def built(kind, impl="auto", **kw):
    layer = make(kind, impl, **kw)
    layer(x())
    return layer


def states(kind, b=B, u=U):
    return [np.zeros((b, u), np.float32) for _ in range(N_STATES[kind])]


def raises(match, fn, *args, **kw):
    with pytest.raises(ValueError, match=match) as info:
        fn(*args, **kw)
    return str(info.value)


def has_shape(msg, shape):
    """``shape`` appears in ``msg`` as a tuple or a TensorShape/list."""
    forms = {str(tuple(shape)), str(list(shape)), str(tf.TensorShape(shape))}
    return any(f in msg for f in forms)


# -- inputs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(T, D), (B, T, D, 1), (), (D,)])
def test_input_not_3d(kind, impl, shape):
    msg = raises(r"3|ndim|dimension", make(kind, impl), np.zeros(shape, np.float32))
    assert str(len(shape)) in msg or has_shape(msg, shape), msg


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", KINDS)
def test_feature_size_differs_from_built(kind, impl):
    layer = built(kind, impl)
    msg = raises(r".", layer, x(d=D + 2))
    assert str(D) in msg and str(D + 2) in msg, msg


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", KINDS)
def test_initial_state_wrong_count(kind, impl):
    layer = make(kind, impl)
    msg = raises(r".", layer, x(), initial_state=states(kind) + [np.zeros((B, U), np.float32)])
    assert str(N_STATES[kind]) in msg and str(N_STATES[kind] + 1) in msg, msg


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(B, U + 1), (B + 1, U), (B, U, 1)])
def test_initial_state_wrong_shape(kind, impl, shape):
    bad = [np.zeros(shape, np.float32) for _ in range(N_STATES[kind])]
    msg = raises(r".", make(kind, impl), x(), initial_state=bad)
    assert has_shape(msg, (B, U)) and has_shape(msg, shape), msg


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(B, T + 1), (B,), (B, T, 1), (B + 1, T)])
def test_mask_wrong_shape(kind, impl, shape):
    msg = raises(r".", make(kind, impl), x(), mask=np.ones(shape, bool))
    assert has_shape(msg, (B, T)) and has_shape(msg, shape), msg


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", KINDS)
def test_guards_inside_tf_function(kind, impl):
    """Static shapes are checked while tracing, too."""
    layer = built(kind, impl)
    fn = tf.function(lambda a, m: layer(a, mask=m))
    raises(r".", fn, tf.constant(x()), tf.ones((B, T + 1), tf.bool))
    raises(r".", fn, tf.constant(x(d=D + 1)), tf.ones((B, T), tf.bool))


# -- weights ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_set_weights_wrong_count(kind):
    layer = built(kind)
    weights = layer.get_weights()
    msg = raises(r".", layer.set_weights, weights[:-1])
    assert str(len(weights)) in msg and str(len(weights) - 1) in msg, msg
    raises(r".", layer.set_weights, weights + [weights[-1]])


@pytest.mark.parametrize("kind", KINDS)
def test_set_weights_wrong_shape(kind):
    layer = built(kind)
    weights = layer.get_weights()
    bad = [w.copy() for w in weights]
    bad[1] = np.zeros((U + 1, *weights[1].shape[1:]), np.float32)
    msg = raises(r".", layer.set_weights, bad)
    assert has_shape(msg, weights[1].shape) and has_shape(msg, bad[1].shape), msg


@pytest.mark.parametrize("kind", KINDS)
def test_set_weights_roundtrip(kind):
    layer = built(kind)
    other = make(kind, seed=1)
    other(x())
    other.set_weights(layer.get_weights())
    np.testing.assert_array_equal(other(x()), layer(x()))


# -- stateful --------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", KINDS)
def test_stateful_batch_size_change(kind, impl):
    layer = make(kind, impl, stateful=True)
    layer(x())
    msg = raises(r".", layer, x(b=B + 1))
    assert str(B) in msg and str(B + 1) in msg, msg
    layer.reset_states()
    layer(x())  # the same batch size still works


# -- constructor arguments -------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("units", [0, -1])
def test_units_not_positive(kind, units):
    msg = raises(r"units", layer_class(kind), units)
    assert str(units) in msg


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("arg", ["dropout", "recurrent_dropout"])
@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan")])
def test_dropout_rate_out_of_range(kind, arg, rate):
    """Keras clips; rnngen raises, as its NumPy layer does."""
    msg = raises(arg, layer_class(kind), U, **{arg: rate})
    assert str(rate) in msg, msg


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("arg", ["dropout", "recurrent_dropout"])
@pytest.mark.parametrize("rate", [0, 0.0, 0.5, 1.0])
def test_dropout_rate_in_range(kind, arg, rate):
    assert getattr(layer_class(kind)(U, **{arg: rate}), arg) == rate


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_names(kind):
    cls = layer_class(kind)
    raises(r"(?i)initializer", lambda: cls(U, kernel_initializer="glorot_uniformm")(x()))
    raises(r"(?i)regularizer", lambda: cls(U, kernel_regularizer="l3")(x()))
    msg = raises(r"(?i)activation", lambda: cls(U, activation="swishh")(x()))
    assert "swishh" in msg and "tanh" in msg, msg


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_implementation(kind):
    msg = raises(r"implementation", layer_class(kind), U, implementation="cudnn")
    assert "cudnn" in msg and "fused" in msg, msg


# -- odd but valid inputs --------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", KINDS)
def test_integer_inputs_are_cast(kind, impl):
    layer = make(kind, impl, return_sequences=True)
    ints = np.arange(B * T * D).reshape(B, T, D) % 3
    y = layer(ints)
    assert y.dtype == tf.float32 and tuple(y.shape) == (B, T, U)
    np.testing.assert_allclose(y, layer(ints.astype(np.float32)))
    # Keras casts integer inputs to the compute dtype too
    ref = getattr(keras.layers, kind)(U, return_sequences=True)
    ref(ints.astype(np.float32))
    ref.set_weights(layer.get_weights())
    np.testing.assert_allclose(y, ref(ints), atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", KINDS)
def test_nan_and_inf_propagate(kind, impl):
    layer = make(kind, impl, return_sequences=True)
    data = x()
    data[0, 1, 2] = np.nan
    data[1, 0, 0] = np.inf
    data = tf.constant(data)
    with tf.GradientTape() as tape:
        tape.watch(data)
        y = layer(data)
        loss = tf.reduce_sum(y)
    grads = tape.gradient(loss, [data, *layer.trainable_weights])
    y = y.numpy()
    assert y.shape == (B, T, U)
    assert np.isnan(y[0, 1:]).any()
    assert np.isfinite(y[0, 0]).all()
    assert all(g is not None for g in grads)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("return_sequences", [True, False])
def test_empty_batch(kind, impl, return_sequences):
    """Same shapes as keras.layers.SimpleRNN/GRU (Keras 3.15's LSTM crashes in BiasAdd here)."""
    layer = make(kind, impl, return_sequences=return_sequences, return_state=True)
    data = tf.constant(x(b=0))
    with tf.GradientTape() as tape:
        tape.watch(data)
        y, *final = layer(data)
        loss = tf.reduce_sum(y)
    assert tuple(y.shape) == ((0, T, U) if return_sequences else (0, U))
    assert len(final) == N_STATES[kind] and all(tuple(s.shape) == (0, U) for s in final)
    grads = tape.gradient(loss, [data, *layer.trainable_weights])
    assert tuple(grads[0].shape) == (0, T, D)
    assert all(g is not None for g in grads)
    if kind != "LSTM":
        ref = getattr(keras.layers, kind)(U, return_sequences=return_sequences, return_state=True)
        assert [tuple(t.shape) for t in ref(data)] == [tuple(t.shape) for t in (y, *final)]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", KINDS)
def test_empty_sequence(kind, impl):
    """Keras's own layers fail on T=0 (an out-of-bounds slice); ours raise a clear ValueError."""
    with pytest.raises(Exception):  # noqa: B017 (Keras raises InvalidArgumentError)
        getattr(keras.layers, kind)(U)(x(t=0))
    layer = make(kind, impl, return_state=True)
    msg = raises(r"(?i)timestep|sequence", layer, x(t=0), initial_state=states(kind))
    assert "0" in msg, msg
