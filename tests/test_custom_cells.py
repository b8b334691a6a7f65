"""Cells the project has never seen: built from a user spec, checked against TF autodiff.

The oracle is an independent TensorFlow forward pass written here from the
spec's equations, differentiated by ``tf.GradientTape``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import FORWARD_ATOL_F32, GRAD_RTOL_F32, assert_close_abs, assert_close_rel

pytestmark = pytest.mark.tf
tf = pytest.importorskip("tensorflow")

SPECS = Path(__file__).parent / "specs"


def build(spec_name: str, out: Path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rnngen",
            "build",
            str(SPECS / f"{spec_name}.yaml"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    path = out / f"{spec_name}_numpy.py"
    module_spec = importlib.util.spec_from_file_location(f"custom_{spec_name}_{id(out)}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def mgu_tf(x, h0, w, mask_x, mask_h):
    """MGU written by hand in TensorFlow (input masks per kernel block f, h; one recurrent mask)."""
    U = h0.shape[-1]
    kf, kh = w["kernel"][:, :U], w["kernel"][:, U:]
    bf, bh = w["bias"][:U], w["bias"][U:]
    h, outs = h0, []
    for t in range(x.shape[1]):
        xt = x[:, t]
        # the recurrent mask multiplies h_prev only where it is the left side of '@'
        f = tf.sigmoid((xt * mask_x[0]) @ kf + (h * mask_h[0]) @ w["recurrent_kernel"] + bf)
        hh = tf.tanh((xt * mask_x[1]) @ kh + w["gain"] * (f * h) + bh)
        h = (1 - f) * h + f * hh
        outs.append(h)
    return tf.stack(outs, axis=1), h


def leaky_tf(x, s0, w):
    s, outs = s0, []
    for t in range(x.shape[1]):
        s = w["leak"] * s + (1 - w["leak"]) * tf.tanh(
            x[:, t] @ w["kernel"] + s @ w["recurrent_kernel"]
        )
        y = tf.square(tf.nn.softsign(s)) + 0.5 * tf.abs(s) / (1 + tf.exp(-s))
        outs.append(y)
    return tf.stack(outs, axis=1), s


@pytest.mark.parametrize("dropout", [False, True])
def test_mgu_matches_tf_autodiff(tmp_path, dropout):
    mod = build("mgu", tmp_path)
    rng = np.random.default_rng(0)
    B, T, D, U = 3, 7, 5, 4
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    layer = mod.MGU(U, return_sequences=True, return_state=True)
    layer(x)
    weights = {
        k: (0.5 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in layer.weights.items()
    }
    layer.set_weights(list(weights.values()))
    h0 = rng.standard_normal((B, U)).astype(np.float32)
    ones = [np.ones((B, D), np.float32)] * 2, [np.ones((B, U), np.float32)]
    masks = (
        ([(rng.random((B, D)) > 0.3) / 0.7 for _ in range(2)], [(rng.random((B, U)) > 0.2) / 0.8])
        if dropout
        else ones
    )
    masks = tuple([m.astype(np.float32) for m in group] for group in masks)
    call = (
        {"dropout_masks": {"dropout": masks[0], "recurrent_dropout": masks[1]}} if dropout else {}
    )
    seq, h = layer(x, initial_state=[h0], **call)

    variables = {k: tf.Variable(v) for k, v in weights.items()}
    xv, hv = tf.constant(x), tf.constant(h0)
    proj, proj_h = (
        rng.standard_normal(seq.shape).astype(np.float32),
        rng.standard_normal(h.shape).astype(np.float32),
    )
    with tf.GradientTape() as tape:
        tape.watch([xv, hv])
        ref_seq, ref_h = mgu_tf(xv, hv, variables, *masks)
        loss = tf.reduce_sum(ref_seq * proj) + tf.reduce_sum(ref_h * proj_h)
    g = tape.gradient(loss, [xv, hv, *variables.values()])
    assert_close_abs(seq, ref_seq.numpy(), FORWARD_ATOL_F32, "mgu output")
    assert_close_abs(h, ref_h.numpy(), FORWARD_ATOL_F32, "mgu state")
    grads = layer.backward(proj, [proj_h])
    assert_close_rel(grads.inputs, g[0].numpy(), GRAD_RTOL_F32, "mgu d_inputs")
    assert_close_rel(grads.initial_state[0], g[1].numpy(), GRAD_RTOL_F32, "mgu d_h0")
    for name, ref in zip(variables, g[2:], strict=True):
        assert_close_rel(grads.weights[name], ref.numpy(), GRAD_RTOL_F32, f"mgu d_{name}")


def test_output_that_is_not_a_state(tmp_path):
    mod = build("leaky_readout", tmp_path)
    rng = np.random.default_rng(1)
    B, T, D, U = 2, 6, 3, 5
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    layer = mod.LeakyReadout(U, return_sequences=True, return_state=True)
    layer(x)
    weights = {
        k: (0.5 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in layer.weights.items()
    }
    layer.set_weights(list(weights.values()))
    s0 = rng.standard_normal((B, U)).astype(np.float32)
    mask = np.array([[1, 1, 0, 1, 0, 1], [0, 1, 1, 1, 1, 1]], bool)
    seq, s = layer(x, initial_state=[s0])
    variables = {k: tf.Variable(v) for k, v in weights.items()}
    xv, sv = tf.constant(x), tf.constant(s0)
    proj, proj_s = (
        rng.standard_normal(seq.shape).astype(np.float32),
        rng.standard_normal(s.shape).astype(np.float32),
    )
    with tf.GradientTape() as tape:
        tape.watch([xv, sv])
        ref_seq, ref_s = leaky_tf(xv, sv, variables)
        loss = tf.reduce_sum(ref_seq * proj) + tf.reduce_sum(ref_s * proj_s)
    g = tape.gradient(loss, [xv, sv, *variables.values()])
    assert_close_abs(seq, ref_seq.numpy(), FORWARD_ATOL_F32, "readout output")
    assert not np.allclose(seq[:, -1], s)  # the output really is not the state
    grads = layer.backward(proj, [proj_s])
    assert_close_rel(grads.inputs, g[0].numpy(), GRAD_RTOL_F32, "readout d_inputs")
    assert_close_rel(grads.initial_state[0], g[1].numpy(), GRAD_RTOL_F32, "readout d_s0")
    for name, ref in zip(variables, g[2:], strict=True):
        assert_close_rel(grads.weights[name], ref.numpy(), GRAD_RTOL_F32, f"readout d_{name}")
    # masking still works for a non-state output: masked steps repeat the last output
    masked = layer(x, initial_state=[s0], mask=mask)[0]
    assert np.allclose(masked[0, 2], masked[0, 1]) and np.allclose(masked[1, 0], 0.0)


def test_dropout_the_spec_does_not_declare_is_refused(tmp_path):
    """leaky_readout declares no dropout: a rate > 0 is a clear error, not a silent no-op."""
    mod = build("leaky_readout", tmp_path)
    with pytest.raises(ValueError, match="`recurrent_dropout` is not supported by this cell"):
        mod.LeakyReadout(4, recurrent_dropout=0.2)
    mod.LeakyReadout(4, dropout=0.0)  # a zero rate is fine
