"""Weight interop between the generated torch modules and ``torch.nn.RNN``/``GRU``/``LSTM``,
and the shipped cells against those modules as an independent oracle.

* ``<Class>.from_torch(module)`` then a forward pass equals the torch module's (float64,
  ``FWD_TOL`` absolute), for ``batch_first`` True and False, and the gradients of the inputs,
  the initial states and every weight equal torch's own (mapped to Keras's layouts by
  ``keras_weights_from_torch``), within ``GRAD_RTOL`` of the largest entry;
* ``layer.to_torch()`` gives a module with the same outputs; the weight conversions round-trip;
* Keras -> rnngen torch -> ``torch.nn`` gives Keras's outputs (needs TensorFlow; float32,
  1e-5 absolute, the forward tolerance of the Keras parity tests).
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

FWD_TOL = 1e-12
GRAD_RTOL = 1e-10
KERAS_FWD_ATOL = 1e-5
#: Keras class -> (generated module stem, torch.nn class name)
SHIPPED = {"SimpleRNN": ("simple_rnn", "RNN"), "GRU": ("gru", "GRU"), "LSTM": ("lstm", "LSTM")}
B, T, INPUT, UNITS = 3, 5, 4, 6


def module(kind):
    return importlib.import_module(f"generated.{SHIPPED[kind][0]}_torch")


def nn_module(kind, batch_first, **kw):
    torch.manual_seed(0)
    m = getattr(torch.nn, SHIPPED[kind][1])(INPUT, UNITS, batch_first=batch_first, **kw).double()
    with torch.no_grad():  # torch initialises the two biases alike in law: make them differ
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m


def close(actual, expected, tol, what, relative=True):
    a = actual.detach().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    e = expected.detach().numpy() if isinstance(expected, torch.Tensor) else np.asarray(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    scale = max(float(np.max(np.abs(e))), 1e-12) if relative else 1.0
    err = float(np.max(np.abs(a - e))) / scale
    assert err <= tol, f"{what}: error {err:.3g} > {tol:g}"


@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "time_first"])
@pytest.mark.parametrize("kind", list(SHIPPED))
@pytest.mark.parametrize("implementation", ["fused", "autograd"])
def test_from_torch_matches_torch_nn(kind, batch_first, implementation):
    mod = module(kind)
    ref = nn_module(kind, batch_first)
    layer = getattr(mod, kind).from_torch(
        ref, return_sequences=True, return_state=True, implementation=implementation
    )
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, T, INPUT, generator=g, dtype=torch.float64, requires_grad=True)
    n_states = 2 if kind == "LSTM" else 1
    h0 = [0.5 * torch.randn(B, UNITS, generator=g, dtype=torch.float64) for _ in range(n_states)]
    h0 = [h.requires_grad_(True) for h in h0]
    out, *final = layer(x, initial_state=h0)

    x_ref = x if batch_first else x.transpose(0, 1)
    states_ref = tuple(h[None] for h in h0)
    ref_out, ref_final = ref(x_ref, states_ref if kind == "LSTM" else states_ref[0])
    ref_out = ref_out if batch_first else ref_out.transpose(0, 1)
    ref_final = list(ref_final) if kind == "LSTM" else [ref_final]
    close(out, ref_out, FWD_TOL, f"{kind}: outputs", relative=False)
    for a, b in zip(final, ref_final, strict=True):
        close(a, b[0], FWD_TOL, f"{kind}: final state", relative=False)

    d_out = torch.randn(out.shape, generator=g, dtype=out.dtype)
    d_final = [torch.randn(f.shape, generator=g, dtype=f.dtype) for f in final]
    loss = (out * d_out).sum() + sum((f * d).sum() for f, d in zip(final, d_final, strict=True))
    ref_loss = (ref_out * d_out).sum()
    ref_loss = ref_loss + sum((f[0] * d).sum() for f, d in zip(ref_final, d_final, strict=True))
    ours = torch.autograd.grad(loss, [x, *h0, *layer.parameters()])
    theirs = torch.autograd.grad(ref_loss, [x, *h0, *ref.parameters()])
    close(ours[0], theirs[0], GRAD_RTOL, f"{kind}: d x")
    for i in range(n_states):
        close(ours[1 + i], theirs[1 + i], GRAD_RTOL, f"{kind}: d initial state {i}")
    d_torch = dict(zip(ref.state_dict(), theirs[1 + n_states :], strict=True))
    if kind != "GRU":  # Keras's one bias is the sum of torch's two: both have its gradient
        close(d_torch["bias_hh_l0"], d_torch["bias_ih_l0"], 1e-15, f"{kind}: bias grads")
        d_torch["bias_hh_l0"] = torch.zeros_like(d_torch["bias_hh_l0"])
    expected = mod.keras_weights_from_torch(d_torch)  # a linear map: gradients map alike
    for name, a, b in zip(layer._weight_names, ours[1 + n_states :], expected, strict=True):
        close(a, b, GRAD_RTOL, f"{kind}: d {name}")


@pytest.mark.parametrize("kind", list(SHIPPED))
def test_to_torch_and_round_trips(kind):
    mod = module(kind)
    cls = getattr(mod, kind)
    layer = cls(INPUT, UNITS, return_sequences=True, dtype=torch.float64, seed=4)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    for batch_first in (True, False):
        ref = layer.to_torch(batch_first=batch_first)
        assert type(ref) is getattr(torch.nn, SHIPPED[kind][1])
        x = torch.randn(B, T, INPUT, dtype=torch.float64)
        ref_out = ref(x if batch_first else x.transpose(0, 1))[0]
        ref_out = ref_out if batch_first else ref_out.transpose(0, 1)
        close(layer(x), ref_out, FWD_TOL, f"{kind}: to_torch outputs", relative=False)
    weights = layer.get_weights()
    back = mod.keras_weights_from_torch(mod.torch_state_dict_from_keras(weights))
    for a, b in zip(back, weights, strict=True):
        np.testing.assert_array_equal(a, b)
    state = nn_module(kind, True).state_dict()
    again = mod.torch_state_dict_from_keras(mod.keras_weights_from_torch(state))
    assert list(again) == list(state)
    for key in state:
        if kind == "GRU" or not key.startswith("bias"):
            torch.testing.assert_close(again[key], state[key], rtol=0, atol=0)
    if kind != "GRU":  # the summed bias is what both torch biases add up to
        total = state["bias_ih_l0"] + state["bias_hh_l0"]
        torch.testing.assert_close(again["bias_ih_l0"] + again["bias_hh_l0"], total)
    no_bias = cls(INPUT, UNITS, use_bias=False).to_torch()
    assert no_bias.bias is False and len(no_bias.state_dict()) == 2


@pytest.mark.parametrize("kind", list(SHIPPED))
def test_interop_refuses_what_does_not_map(kind):
    mod = module(kind)
    cls = getattr(mod, kind)
    nn_cls = getattr(torch.nn, SHIPPED[kind][1])
    with pytest.raises(ValueError, match="one-layer, one-direction"):
        cls.from_torch(nn_cls(INPUT, UNITS, num_layers=2))
    with pytest.raises(ValueError, match="one-layer, one-direction"):
        cls.from_torch(nn_cls(INPUT, UNITS, bidirectional=True))
    with pytest.raises(TypeError, match=f"torch.nn.{SHIPPED[kind][1]}"):
        cls.from_torch(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="one layer, one direction"):
        mod.keras_weights_from_torch(nn_cls(INPUT, UNITS, num_layers=2).state_dict())
    with pytest.raises(ValueError, match="has no activation='softsign'"):
        cls(INPUT, UNITS, activation="softsign").to_torch()
    if kind == "GRU":
        with pytest.raises(ValueError, match="reset_after"):
            cls(INPUT, UNITS, reset_after=False).to_torch()


@pytest.mark.tf
@pytest.mark.parametrize("kind", list(SHIPPED))
def test_keras_to_rnngen_torch_to_torch_nn(kind):
    """Keras weights load into the rnngen torch module unchanged, and ``to_torch()`` then
    gives a ``torch.nn`` module with Keras's outputs (float32)."""
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, INPUT)).astype(np.float32)
    ref = getattr(keras.layers, kind)(UNITS, return_sequences=True)
    ref(x)  # builds the weights
    weights = [w + 0.1 * rng.standard_normal(w.shape).astype(np.float32) for w in ref.get_weights()]
    ref.set_weights(weights)
    expected = np.asarray(ref(x))
    layer = getattr(module(kind), kind)(INPUT, UNITS, return_sequences=True)
    layer.set_weights(ref.get_weights())
    close(
        layer(torch.from_numpy(x)),
        expected,
        KERAS_FWD_ATOL,
        f"{kind}: rnngen torch vs Keras",
        relative=False,
    )
    nn_out = layer.to_torch()(torch.from_numpy(x))[0]
    close(nn_out, expected, KERAS_FWD_ATOL, f"{kind}: torch.nn vs Keras", relative=False)
