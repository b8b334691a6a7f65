"""Initializers and regularizers of the NumPy layers follow Keras's definitions."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import numpy_layer_class

D, U = 40, 30


def test_glorot_uses_the_whole_fused_matrix():
    gru = numpy_layer_class("GRU")(U, seed=0)
    gru.build(D)
    kernel = gru.weights["kernel"]
    limit = np.sqrt(6 / (D + 3 * U))  # fans of the (D, 3U) matrix, not of one gate
    assert kernel.shape == (D, 3 * U)
    assert np.abs(kernel).max() <= limit
    assert np.abs(kernel).max() > 0.9 * limit  # uniform: the bound is reached
    assert abs(kernel.var() - limit**2 / 3) < 0.15 * limit**2 / 3


def test_orthogonal_rows_of_the_fused_recurrent_kernel():
    lstm = numpy_layer_class("LSTM")(U, seed=1)
    lstm.build(D)
    rk = lstm.weights["recurrent_kernel"].astype(np.float64)
    assert rk.shape == (U, 4 * U)
    np.testing.assert_allclose(rk @ rk.T, np.eye(U), atol=1e-5)
    simple = numpy_layer_class("SimpleRNN")(
        U, seed=2, recurrent_initializer={"class_name": "Orthogonal", "config": {"gain": 2.0}}
    )
    simple.build(D)
    w = simple.weights["recurrent_kernel"].astype(np.float64)
    np.testing.assert_allclose(w @ w.T, 4 * np.eye(U), atol=1e-4)


@pytest.mark.parametrize(
    ("unit_forget_bias", "expected"), [(True, [0.03, 1.0, 0.03, 0.03]), (False, [0.03] * 4)]
)
def test_unit_forget_bias(unit_forget_bias, expected):
    lstm = numpy_layer_class("LSTM")(
        U,
        unit_forget_bias=unit_forget_bias,
        bias_initializer={"class_name": "Constant", "config": {"value": 0.03}},
    )
    lstm.build(D)
    blocks = lstm.weights["bias"].reshape(4, U)
    np.testing.assert_allclose(blocks, np.repeat(np.array(expected)[:, None], U, 1), rtol=1e-6)


def test_gru_reset_after_bias_layout():
    for reset_after, shape in ((True, (2, 3 * U)), (False, (3 * U,))):
        gru = numpy_layer_class("GRU")(U, reset_after=reset_after)
        gru.build(D)
        assert gru.weights["bias"].shape == shape
    no_bias = numpy_layer_class("GRU")(U, use_bias=False)
    no_bias.build(D)
    assert list(no_bias.weights) == ["kernel", "recurrent_kernel"]


@pytest.mark.parametrize(
    ("name", "scale", "fan"),
    [
        ("he_normal", 2.0, D),
        ("lecun_normal", 1.0, D),
        ("he_uniform", 2.0, D),
        ("lecun_uniform", 1.0, D),
    ],
)
def test_variance_scaling_family(name, scale, fan):
    layer = numpy_layer_class("SimpleRNN")(200, kernel_initializer=name, seed=3)
    layer.build(D)
    kernel = layer.weights["kernel"]
    assert abs(kernel.var() / (scale / fan) - 1) < 0.1


def test_callable_initializer_and_unknown_name():
    layer = numpy_layer_class("SimpleRNN")(
        U, kernel_initializer=lambda shape, dtype: np.full(shape, 0.5, dtype)
    )
    layer.build(D)
    assert np.all(layer.weights["kernel"] == 0.5)
    with pytest.raises(ValueError, match="Unknown initializer"):
        numpy_layer_class("SimpleRNN")(U, kernel_initializer="glorot_uniformm")


def test_regularizer_strings_and_configs():
    layer = numpy_layer_class("SimpleRNN")(
        U,
        kernel_regularizer="l1",
        recurrent_regularizer="l1l2",
        bias_regularizer={"class_name": "L2", "config": {"l2": 0.5}},
        bias_initializer="ones",
    )
    layer.build(D)
    kernel = layer.weights["kernel"]
    losses = layer.losses
    assert len(losses) == 3
    assert losses[0] == pytest.approx(0.01 * np.abs(kernel).sum(), rel=1e-6)
    assert losses[1] == 0.0  # "l1l2" defaults to zero penalties, as in Keras
    assert losses[2] == pytest.approx(0.5 * U, rel=1e-6)
    with pytest.raises(ValueError, match="Unknown regularizer"):
        numpy_layer_class("SimpleRNN")(U, kernel_regularizer="l1_l2")


# -- both backends against Keras's definitions (rnngen verify's ``init`` statistics) -----------

KERNEL_INITIALIZERS = [
    "glorot_uniform",
    "glorot_normal",
    "he_normal",
    "lecun_uniform",
    "orthogonal",
    {"class_name": "Orthogonal", "config": {"gain": 1.5}},
    {"class_name": "RandomUniform", "config": {"minval": -0.2, "maxval": 0.1}},
    {"class_name": "TruncatedNormal", "config": {"mean": 0.1, "stddev": 0.3}},
    {"class_name": "Constant", "config": {"value": 0.25}},
]


@pytest.mark.parametrize("backend", ["numpy", "tf"])
@pytest.mark.parametrize("init", KERNEL_INITIALIZERS, ids=str)
@pytest.mark.parametrize(("d", "units"), [(48, 16), (8, 16)])  # tall and wide kernels
def test_kernel_initializer_follows_keras(backend, init, d, units):
    """Every initializer, on a tall and a wide kernel, passes the statistics of ``rnngen verify``
    (bounds and moments from Keras's own fans and configuration, 5 sigma; orthonormal columns
    or rows to 1e-5; Keras-drawn constants exactly)."""
    pytest.importorskip("tensorflow")
    from rnngen.verify import init as verify_init

    if backend == "numpy":
        layer = numpy_layer_class("SimpleRNN")(units, kernel_initializer=init, seed=4)
        layer.build(d)
        kernel = layer.weights["kernel"]
    else:
        import importlib

        import keras

        keras.utils.set_random_seed(4)
        tf_layer = importlib.import_module("generated.simple_rnn_tf").SimpleRNN(
            units, kernel_initializer=init
        )
        tf_layer.build((2, 3, d))
        kernel = tf_layer.get_weights()[0]
    v = verify_init._Verdict()
    verify_init.check_weight(v, "kernel", kernel, (d, units), init, "float32")
    assert v.res.ok, v.res.worst
    assert v.res.worst is not None  # a statistic was checked


def test_wide_orthogonal_kernel_has_orthonormal_rows_tall_has_orthonormal_columns():
    """Keras's orthogonal on a non-square matrix: rows orthonormal when rows < cols, else
    columns; the statistic fails on the transpose that was left out."""
    pytest.importorskip("tensorflow")
    from rnngen.verify import init as verify_init

    for d, units, gram in ((8, 16, "rows"), (48, 16, "columns")):
        layer = numpy_layer_class("SimpleRNN")(units, kernel_initializer="orthogonal", seed=5)
        layer.build(d)
        k = layer.weights["kernel"].astype(np.float64)
        g = k @ k.T if gram == "rows" else k.T @ k
        np.testing.assert_allclose(g, np.eye(len(g)), atol=1e-5)
        untransposed = k.T.reshape(k.shape)  # the bug: the (max, min) factor reshaped
        v = verify_init._Verdict()
        verify_init.check_weight(v, "kernel", untransposed, k.shape, "orthogonal", "float32")
        assert not v.res.ok and f"orthonormal {gram}" in v.res.worst["tensor"]
