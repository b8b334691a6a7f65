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
