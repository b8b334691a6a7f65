"""Drop-in attributes and configuration objects, against Keras.

* ``dir()`` of each generated TF layer and cell against ``keras.layers.SimpleRNN``/``GRU``/
  ``LSTM`` and their cells: every public name Keras has, ours has, except the differences
  listed here on purpose; the NumPy twin has an attribute for every key of Keras's config.
* Every Keras initializer name draws the same distribution in the TF layer (Keras's own
  initializer) and the NumPy twin (its re-implementation): moments and bounds within
  the statistical limits written in each test.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from helpers import MODULES

pytestmark = pytest.mark.tf
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

KINDS = MODULES  # Keras class name -> generated module stem

#: Public names Keras has and the generated TF classes do not, with why.
ALLOWED_MISSING = {
    # no cuDNN kernel: ``implementation`` ("auto", "loop", "fused") chooses how a call runs
    "GRU": {"use_cudnn"},
    "LSTM": {"use_cudnn"},
    # Keras's cell ``implementation`` (1 or 2) only orders the same arithmetic differently
    "GRUCell": {"implementation"},
    "LSTMCell": {"implementation"},
}
#: Public names the generated TF classes add, with why.
ALLOWED_EXTRA = {
    # implementation choice and the fused op's rule; seed is kept in the config
    "layer": {"implementation", "uses_fused", "seed"},
    # the per-call dropout masks, the activation functions and the weights by name, as the
    # fused op takes them
    "cell": {"active_masks", "functions", "weight_dict"},
}
#: Keras config keys the NumPy twin has no attribute for: it has no training framework.
NUMPY_NO_ATTRIBUTE = {"trainable"}


def _public(obj):
    return {n for n in dir(obj) if not n.startswith("_")}


def _module(kind, backend):
    return importlib.import_module(f"generated.{KINDS[kind]}_{backend}")


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("what", ["layer", "cell"])
def test_tf_dir_matches_keras(kind, what):
    name = kind if what == "layer" else kind + "Cell"
    ours = getattr(_module(kind, "tf"), name)(4)
    ref = getattr(keras.layers, name)(4)
    missing = _public(ref) - _public(ours)
    extra = _public(ours) - _public(ref)
    assert missing == ALLOWED_MISSING.get(name, set()), f"{name} lacks {sorted(missing)}"
    assert extra == ALLOWED_EXTRA[what], f"{name} adds {sorted(extra)}"


@pytest.mark.parametrize("kind", list(KINDS))
def test_configuration_attributes_have_keras_values(kind):
    """layer.kernel_initializer, layer.recurrent_regularizer, layer.bias_constraint, ...
    are there in both backends and read what was passed."""
    args = dict(
        kernel_initializer="he_normal",
        recurrent_regularizer=keras.regularizers.L2(0.3),
        bias_constraint=keras.constraints.NonNeg(),
        dropout=0.25,
    )
    ours = _module(kind, "tf")
    tf_layer = getattr(ours, kind)(4, **args)
    ref = getattr(keras.layers, kind)(4, **args)
    for attr in ("kernel_initializer", "recurrent_regularizer", "bias_constraint"):
        assert type(getattr(tf_layer, attr)) is type(getattr(ref, attr)), attr
    assert tf_layer.recurrent_regularizer.get_config() == ref.recurrent_regularizer.get_config()
    assert tf_layer.dropout == ref.dropout == 0.25
    twin = getattr(_module(kind, "numpy"), kind)(4, **args)
    config_keys = set(ref.get_config()) - NUMPY_NO_ATTRIBUTE
    missing = sorted(k for k in config_keys if not hasattr(twin, k))
    assert not missing, f"NumPy {kind} lacks {missing}"
    assert twin.kernel_initializer == "he_normal"
    assert twin.recurrent_regularizer.config == {
        "class_name": "L2",
        "config": {"l2": pytest.approx(0.3)},
    } or twin.recurrent_regularizer.config["config"]["l2"] == pytest.approx(0.3)
    assert twin.bias_constraint is args["bias_constraint"]


# -- initializers: the same distribution in both backends -------------------------------------

D, U = 300, 200  # kernel (D, U): 60,000 draws
N = D * U

# every name of keras.initializers.ALL_OBJECTS_DICT a kernel can take, except "constant" (Keras
# itself fails on the bare name: Constant.from_config needs a value; the config dict is here)
# and "stft" (a window for audio kernels)
INITIALIZERS = [
    "zeros",
    "ones",
    "zero",
    "one",
    "glorot_uniform",
    "glorot_normal",
    "he_uniform",
    "he_normal",
    "lecun_uniform",
    "lecun_normal",
    "random_normal",
    "random_uniform",
    "normal",
    "uniform",
    "truncated_normal",
    "orthogonal",
    "identity",
    "variance_scaling",
    {"class_name": "VarianceScaling", "config": {"scale": 3.0, "mode": "fan_out"}},
    {
        "class_name": "VarianceScaling",
        "config": {"scale": 0.5, "mode": "fan_avg", "distribution": "uniform"},
    },
    {
        "class_name": "VarianceScaling",
        "config": {"scale": 2.0, "mode": "fan_in", "distribution": "untruncated_normal"},
    },
    {"class_name": "RandomNormal", "config": {"mean": 0.5, "stddev": 2.0}},
    {"class_name": "RandomUniform", "config": {"minval": -3.0, "maxval": 1.0}},
    {"class_name": "TruncatedNormal", "config": {"mean": -1.0, "stddev": 0.5}},
    {"class_name": "Constant", "config": {"value": 0.7}},
    {"class_name": "Orthogonal", "config": {"gain": 2.0}},
    {"class_name": "Identity", "config": {"gain": 0.5}},
]


def _id(init):
    if isinstance(init, str):
        return init
    return init["class_name"] + "-" + "-".join(f"{k}={v}" for k, v in init["config"].items())


def _kernels(init, seed):
    tf_layer = _module("SimpleRNN", "tf").SimpleRNN(U, kernel_initializer=init, seed=seed)
    tf_layer.build((None, None, D))
    twin = _module("SimpleRNN", "numpy").SimpleRNN(
        U, kernel_initializer=init, seed=seed, dtype="float64"
    )
    twin.build(D)
    return tf_layer.get_weights()[0].astype(np.float64), twin.weights["kernel"]


def _kurtosis(a):
    a = a - a.mean()
    return float(np.mean(a**4) / np.mean(a**2) ** 2)


@pytest.mark.parametrize("init", INITIALIZERS, ids=_id)
def test_initializer_draws_match_keras(init):
    ref, ours = _kernels(init, seed=7)
    assert ref.shape == ours.shape == (D, U)
    if ref.std() == 0:  # constants
        np.testing.assert_allclose(ours, ref, rtol=1e-6)
        return
    name = init if isinstance(init, str) else init["class_name"]
    if name.lower() in ("orthogonal", "identity"):  # exact structure: W^T W = gain^2 I
        np.testing.assert_allclose(ours.T @ ours, ref.T @ ref, atol=1e-4)
        if name.lower() == "identity":
            np.testing.assert_allclose(ours, ref, atol=1e-7)
        return
    # moments of 60,000 draws: standard errors are ~0.6 % of the variance and ~0.4 % of sd
    # for the mean; bounds below are >= 5 standard errors
    sd = ref.std()
    assert abs(ours.mean() - ref.mean()) <= 6 * sd / np.sqrt(N)
    assert abs(ours.var() / ref.var() - 1) <= 0.05
    # kurtosis tells normal (3), truncated normal at 2 sd (~2.36) and uniform (1.8) apart
    assert abs(_kurtosis(ours) - _kurtosis(ref)) <= 0.15
    # the support: the same extremes within 10 % of the spread
    spread = ref.max() - ref.min()
    assert abs(ours.max() - ref.max()) <= 0.1 * spread
    assert abs(ours.min() - ref.min()) <= 0.1 * spread
