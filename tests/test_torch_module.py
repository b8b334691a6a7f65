"""The generated torch module's Keras-style API, for the shipped cells: what a call returns,
weights (names, order, layouts, initial values), dropout in train()/eval(), callables,
torch.func and torch.compile, and the errors for bad input.

The NumPy layer (itself checked against Keras by the rest of the suite) is the reference for
values: float32 forward within ``FWD_ATOL`` absolute. float64 gradient comparisons use
``GRAD_RTOL`` relative to the largest entry.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

FWD_ATOL = 1e-5
GRAD_RTOL = 1e-10
SHIPPED = {"SimpleRNN": "simple_rnn", "GRU": "gru", "LSTM": "lstm"}
B, T, INPUT, UNITS = 3, 5, 4, 6


def classes(kind):
    stem = SHIPPED[kind]
    torch_mod = importlib.import_module(f"generated.{stem}_torch")
    numpy_mod = importlib.import_module(f"generated.{stem}_numpy")
    return torch_mod, getattr(torch_mod, kind), getattr(numpy_mod, kind)


def as_np(t):
    return t.detach().numpy()


@pytest.mark.parametrize("kind", list(SHIPPED))
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("return_state", [False, True])
def test_call_returns_what_keras_returns(kind, return_sequences, return_state):
    _, cls, np_cls = classes(kind)
    kw = dict(return_sequences=return_sequences, return_state=return_state)
    layer = cls(INPUT, UNITS, seed=0, **kw)
    twin = np_cls(UNITS, **kw)
    twin.set_weights(layer.get_weights())
    x = np.random.default_rng(1).standard_normal((B, T, INPUT)).astype(np.float32)
    mask = np.ones((B, T), bool)
    mask[1, 3:] = False
    got, expected = layer(torch.from_numpy(x), mask=torch.from_numpy(mask)), twin(x, mask=mask)
    if not return_state:
        got, expected = (got,), (expected,)
    assert isinstance(got, tuple) == isinstance(expected, tuple)
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert a.dtype == torch.float32
        np.testing.assert_allclose(as_np(a), b, rtol=0, atol=FWD_ATOL)


@pytest.mark.parametrize("kind", list(SHIPPED))
def test_weights_are_keras_names_order_layouts_and_initial_values(kind):
    mod, cls, np_cls = classes(kind)
    layer = cls(INPUT, UNITS, seed=11)
    names = list(mod.weight_shapes(INPUT, UNITS))
    assert [n for n, _ in layer.named_parameters()] == names
    assert all(isinstance(p, torch.nn.Parameter) for p in layer.parameters())
    # the same seed draws the NumPy layer's initial weights (Keras's initializers, its order)
    twin = np_cls(UNITS, seed=11)
    twin.build(INPUT)
    for a, b in zip(layer.get_weights(), twin.get_weights(), strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-7)
    new = [w + 1.0 for w in twin.get_weights()]
    layer.set_weights(new)
    for a, b in zip(layer.get_weights(), new, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="expects 3 weights"):
        layer.set_weights(new[:-1] if len(new) == 3 else new + new)
    with pytest.raises(ValueError, match="has shape"):
        layer.set_weights([w[..., :1] for w in new])


@pytest.mark.parametrize("kind", list(SHIPPED))
def test_dropout_drawn_in_train_off_in_eval_and_replayable(kind):
    _, cls, _ = classes(kind)
    x = torch.randn(B, T, INPUT)
    plain = cls(INPUT, UNITS, seed=2)
    a = cls(INPUT, UNITS, seed=2, dropout=0.4, recurrent_dropout=0.3)
    b = cls(INPUT, UNITS, seed=2, dropout=0.4, recurrent_dropout=0.3)
    torch.testing.assert_close(a.eval()(x), plain(x), rtol=0, atol=0)
    first, second = a.train()(x), a(x)
    assert (first - plain(x)).abs().max() > 1e-3
    assert (first - second).abs().max() > 1e-3  # new masks every call
    masks = b._draw_dropout_masks(B, x)  # b's generator is where a's was for its first call
    torch.testing.assert_close(b.eval()(x, dropout_masks=masks), first, rtol=0, atol=0)
    # per-gate masks (recurrent_dropout > 0), Keras-scaled, independent between gates
    gates = masks["recurrent_dropout"]
    assert len(gates) == (1 if kind == "SimpleRNN" else 3 if kind == "GRU" else 4)
    for rate, drawn in ((0.4, masks["dropout"]), (0.3, gates)):
        for m in drawn:
            kept = m[m != 0]
            assert 0 < kept.numel() < m.numel()
            torch.testing.assert_close(kept, torch.full_like(kept, 1 / (1 - rate)))
    if len(gates) > 1:
        assert not torch.equal(gates[0], gates[1])


def test_dropout_kept_fraction_and_scale():
    """Kept fraction within 5 binomial standard deviations of 1 - rate; kept value 1/(1-rate)."""
    _, cls, _ = classes("GRU")
    layer = cls(INPUT, 200, dropout=0.25, seed=3).train()
    masks = layer._draw_dropout_masks(500, torch.zeros(1))
    m = masks["dropout"]
    n = m.numel()
    kept = float((m > 0).double().mean())
    assert abs(kept - 0.75) <= 5 * np.sqrt(0.75 * 0.25 / n)
    assert torch.allclose(m[m > 0], torch.tensor(1 / 0.75), rtol=1e-6, atol=0)
    assert "recurrent_dropout" not in masks


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_callable_activation_differentiated_by_autograd_in_the_fused_backward(kind):
    _, cls, _ = classes(kind)

    def scaled_tanh(u):
        return 1.7159 * torch.tanh(2 / 3 * u)

    layers = [
        cls(INPUT, UNITS, activation=scaled_tanh, dtype=torch.float64, implementation=impl, seed=1)
        for impl in ("fused", "autograd")
    ]
    x = torch.randn(B, T, INPUT, dtype=torch.float64)
    grads = []
    for layer in layers:
        out = layer(x)
        grads.append(torch.autograd.grad((out**2).sum(), list(layer.parameters())))
    for a, b in zip(*grads, strict=True):
        assert float((a - b).abs().max() / b.abs().max()) <= GRAD_RTOL


@pytest.mark.parametrize("kind", list(SHIPPED))
def test_torch_func_falls_back_to_the_loop(kind):
    """Under torch.func transforms the fused op is replaced by the plain loop: the gradient
    torch.func.grad returns equals the fused op's derived one, and vmap over a stack of
    batches equals a Python loop over them."""
    mod, cls, _ = classes(kind)
    layer = cls(INPUT, UNITS, dtype=torch.float64, seed=5)
    weights = [p.detach() for p in layer.parameters()]
    x = torch.randn(B, T, INPUT, dtype=torch.float64)

    def loss(ws):
        out, _ = mod.forward(x, ws)
        return (out[:, -1] ** 2).sum()

    got = torch.func.grad(loss)(weights)
    ws = [w.clone().requires_grad_(True) for w in weights]
    expected = torch.autograd.grad(loss(ws), ws)
    for a, b in zip(got, expected, strict=True):
        assert float((a - b).abs().max() / b.abs().max()) <= GRAD_RTOL
    batches = torch.randn(2, B, T, INPUT, dtype=torch.float64)
    mapped = torch.func.vmap(lambda x: mod.forward(x, weights)[0])(batches)
    looped = torch.stack([mod.forward(x, weights)[0] for x in batches])
    assert float((mapped - looped).abs().max()) <= 1e-12


@pytest.mark.slow
def test_torch_compile_runs_the_fused_op_eagerly():
    """torch.compile of a model holding the fused GRU: same outputs and gradients as eager
    (the fused op is a graph break, torch.compiler.disable)."""
    _, cls, _ = classes("GRU")
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(3, INPUT), cls(INPUT, UNITS), torch.nn.Linear(UNITS, 1)
    )
    x = torch.randn(B, T, 3)
    compiled = torch.compile(model)
    eager_grads = torch.autograd.grad(model(x).sum(), list(model.parameters()))
    out = compiled(x)
    torch.testing.assert_close(out, model(x), rtol=0, atol=1e-6)
    compiled_grads = torch.autograd.grad(out.sum(), list(model.parameters()))
    for a, b in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_torch_compile_fullgraph_of_the_loop():
    """implementation="autograd" compiles as one graph (fullgraph=True), same outputs."""
    _, cls, _ = classes("LSTM")
    layer = cls(INPUT, UNITS, implementation="autograd", seed=0)
    x = torch.randn(B, 4, INPUT)
    out = torch.compile(layer, fullgraph=True)(x)
    torch.testing.assert_close(out, layer(x), rtol=0, atol=1e-6)


def test_bad_input_is_a_clear_error():
    mod, cls, _ = classes("LSTM")
    layer = cls(INPUT, UNITS)
    x = torch.zeros(B, T, INPUT)
    cases = [
        (lambda: layer(torch.zeros(B, T, INPUT + 1)), "must be \\(batch, timesteps, 4\\)"),
        (lambda: layer(torch.zeros(B, INPUT)), "must be \\(batch, timesteps, 4\\)"),
        (lambda: layer(x, initial_state=[torch.zeros(B, UNITS)]), "expects 2 initial state"),
        (lambda: layer(x, initial_state=[torch.zeros(B, 2)] * 2), "must have shape"),
        (lambda: layer(x, mask=torch.ones(B, T + 1, dtype=torch.bool)), "`mask` must have shape"),
        (lambda: cls(INPUT, UNITS, implementation="cudnn"), "`implementation` must be one of"),
        (lambda: cls(INPUT, UNITS, activation="tanhh"), "Unknown activation for `activation`"),
        (lambda: cls(INPUT, UNITS, dropout=1.5), "`dropout` must be a float in \\[0, 1\\]"),
        (lambda: cls(0, UNITS), "argument `input_size`"),
        (lambda: cls(INPUT, UNITS, kernel_initializer="nope"), "Unknown initializer"),
        (lambda: layer(x, dropout_masks={"dropout": torch.ones(B, 1)}), "masks must have shape"),
        (lambda: mod.forward(x, layer.keras_weights[:2]), "`weights` must be 3 tensors"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
