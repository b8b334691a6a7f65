"""The generated PyTorch modules (``generated/<name>_torch.py``) for every spec.

Oracles, all in float64:

* the fused op's derived BPTT against torch autograd through the plain loop
  (``implementation="autograd"``), for every spec in spec/ and tests/specs, every variant
  (each combination of boolean options, with and without dropout masks, the input-form
  variant), with masks, ``go_backwards`` and initial states: gradients of the inputs, the
  initial states and every weight within ``GRAD_RTOL`` of the largest entry;
* the generated NumPy layer on the same weights (cross-backend): outputs, final states and
  gradients;
* ``torch.autograd.gradcheck`` (central finite differences) of the fused op, for a few specs.

The comparison with ``torch.nn.RNN``/``GRU``/``LSTM`` and the weight interop are in
``test_torch_interop.py``.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rnngen import codegen, functions, spec  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "spec").glob("*.yaml")) + sorted((ROOT / "tests" / "specs").glob("*.yaml"))
#: float64 tolerances: forward values absolute (after scaling by max(1, |reference|)),
#: gradients relative to the largest entry of the reference tensor
FWD_TOL = 1e-12
GRAD_RTOL = 1e-10
B, T, INPUT, UNITS = 3, 6, 4, 5


def _import(path: Path, name: str):
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """spec stem -> (cell spec, torch module, numpy module), built from the spec now."""
    out = tmp_path_factory.mktemp("torch_gen")
    cache = {}

    def get(path: Path):
        if path.stem not in cache:
            cell = spec.load(path)
            files = codegen.render(cell, path.name)
            for suffix in ("_torch.py", "_numpy.py"):
                (out / f"{cell.name}{suffix}").write_text(files[f"{cell.name}{suffix}"])
            cache[path.stem] = (
                cell,
                _import(out / f"{cell.name}_torch.py", f"t_{cell.name}_torch"),
                _import(out / f"{cell.name}_numpy.py", f"t_{cell.name}_numpy"),
            )
        return cache[path.stem]

    return get


def close(actual, expected, tol, what, relative_to_max=True):
    a = actual.detach().cpu().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    e = expected.detach().cpu().numpy() if isinstance(expected, torch.Tensor) else expected
    e = np.asarray(e)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    if not a.size:
        return 0.0
    scale = max(float(np.max(np.abs(e))), 1.0 if not relative_to_max else 1e-12)
    err = float(np.max(np.abs(a - e))) / scale
    assert err <= tol, f"{what}: error {err:.3g} > {tol:g} (worst at {np.argmax(np.abs(a - e))})"
    return err


def _options(cell):
    """Every combination of the spec's boolean options."""
    names = [o.name for o in cell.bool_options]
    return [
        dict(zip(names, values, strict=True))
        for values in itertools.product((True, False), repeat=len(names))
    ]


def _input_form(cell):
    """Each activation option set to an activation without an output-form derivative."""
    return {o.name: "silu" for o in cell.activation_options}


def _layer(mod, cell, implementation, options, **kw):
    layer = getattr(mod, cell.class_name)(
        INPUT, UNITS, dtype=torch.float64, implementation=implementation, seed=3, **options, **kw
    )
    return layer


def _perturb(layer, seed):
    """Move the weights off their initial values (biases off zero), reproducibly."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _inputs(cell, seed, with_mask, with_dropout):
    g = torch.Generator().manual_seed(seed)
    x = 0.7 * torch.randn(B, T, INPUT, generator=g, dtype=torch.float64)
    h0 = [0.3 * torch.randn(B, UNITS, generator=g, dtype=torch.float64) for _ in cell.states]
    mask = None
    if with_mask:
        mask = torch.ones(B, T, dtype=torch.bool)
        mask[0, 2] = mask[1, 0] = mask[1, 3] = mask[2, 4:] = False
    masks = None
    if with_dropout:
        masks = {}
        for tensor, rate in cell.dropout:
            shape = (B, INPUT) if tensor == "x" else (B, UNITS)
            keep = torch.rand(shape, generator=g, dtype=torch.float64) >= 0.3
            masks[rate] = keep / 0.7
    return x, h0, mask, masks


def _run(layer, x, h0, mask, masks, seed):
    """Outputs, final states and the gradients of a random linear loss of all of them."""
    g = torch.Generator().manual_seed(seed + 1)
    x = x.clone().requires_grad_(True)
    h0 = [h.clone().requires_grad_(True) for h in h0]
    out, *final = layer(x, initial_state=h0, mask=mask, dropout_masks=masks)
    loss = (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum()
    for f in final:
        loss = loss + (f * torch.randn(f.shape, generator=g, dtype=f.dtype)).sum()
    params = list(layer.parameters())
    grads = torch.autograd.grad(loss, [x, *h0, *params])
    return [out, *final], grads


CASES = [pytest.param(p, id=p.stem) for p in SPECS]


@pytest.mark.parametrize("path", CASES)
def test_fused_bptt_matches_torch_autograd(built, path):
    """Every variant of every spec: the derived BPTT equals autograd of the plain loop."""
    cell, mod, _ = built(path)
    checked = 0
    for options in _options(cell):
        configs = [(False, False, {}), (True, False, {}), (False, False, _input_form(cell))]
        if cell.dropout:
            configs += [(True, True, {}), (False, True, _input_form(cell))]
        for k, (with_mask, with_dropout, acts) in enumerate(configs):
            go_backwards = k % 2 == 1
            kw = dict(return_sequences=True, return_state=True, go_backwards=go_backwards)
            kw["zero_output_for_mask"] = k == 3  # masked steps output zeros (dropout + mask)
            fused = _layer(mod, cell, "fused", {**options, **acts}, **kw)
            _perturb(fused, k)
            loop = _layer(mod, cell, "autograd", {**options, **acts}, **kw)
            loop.set_weights(fused.get_weights())
            x, h0, mask, masks = _inputs(cell, k, with_mask, with_dropout)
            what = f"{cell.name} {options} acts={acts} mask={with_mask} dropout={with_dropout}"
            out_f, grads_f = _run(fused, x, h0, mask, masks, k)
            out_l, grads_l = _run(loop, x, h0, mask, masks, k)
            for a, b in zip(out_f, out_l, strict=True):
                close(a, b, FWD_TOL, f"{what}: forward", relative_to_max=False)
            names = ["x"] + [f"initial {s}" for s in cell.states]
            names += [n for n, _ in fused.named_parameters()]
            for name, a, b in zip(names, grads_f, grads_l, strict=True):
                assert torch.isfinite(b).all(), f"{what}: d {name} not finite"
                close(a, b, GRAD_RTOL, f"{what}: d {name}")
            checked += 1
    assert checked >= len(_options(cell)) * 3


@pytest.mark.parametrize("zero_output_for_mask", [False, True], ids=["carry", "zero"])
@pytest.mark.parametrize("path", CASES)
def test_matches_the_numpy_layer(built, path, zero_output_for_mask):
    """Same weights, inputs, masks (masked steps carry the last output, or zeros) and injected
    dropout: the torch module and the NumPy layer agree on outputs, final states and every
    gradient (float64)."""
    cell, mod, npmod = built(path)
    with_dropout = bool(cell.dropout)
    kw = dict(
        return_sequences=True,
        return_state=True,
        go_backwards=True,
        zero_output_for_mask=zero_output_for_mask,
    )
    layer = _layer(mod, cell, "fused", {}, **kw)
    _perturb(layer, 7)
    x, h0, mask, masks = _inputs(cell, 7, True, with_dropout)
    (out, *final), grads = _run(layer, x, h0, mask, masks, 7)

    twin = getattr(npmod, cell.class_name)(UNITS, dtype="float64", **kw)
    twin.set_weights(layer.get_weights())
    np_masks = None if masks is None else {k: v.numpy() for k, v in masks.items()}
    np_out = twin(
        x.numpy(), initial_state=[h.numpy() for h in h0], mask=mask.numpy(), dropout_masks=np_masks
    )
    close(out, np_out[0], FWD_TOL, f"{cell.name}: outputs vs NumPy", relative_to_max=False)
    for a, b in zip(final, np_out[1:], strict=True):
        close(a, b, FWD_TOL, f"{cell.name}: final state vs NumPy", relative_to_max=False)
    g = torch.Generator().manual_seed(8)
    d_out = torch.randn(out.shape, generator=g, dtype=out.dtype).numpy()
    d_final = [torch.randn(f.shape, generator=g, dtype=f.dtype).numpy() for f in final]
    np_grads = twin.backward(d_out, d_final)
    expected = [np_grads.inputs, *np_grads.initial_state, *np_grads.weights.values()]
    names = ["x"] + list(cell.states) + list(np_grads.weights)
    for name, a, b in zip(names, grads, expected, strict=True):
        close(a, b, GRAD_RTOL, f"{cell.name}: d {name} vs NumPy")


@pytest.mark.parametrize("stem", ["simple_rnn", "gru", "lstm", "mgu", "edge", "layer_norm_lstm"])
def test_fused_gradcheck(built, stem):
    """Central finite differences (torch.autograd.gradcheck, float64) of the fused op with
    respect to the inputs, the initial states and every weight, with a mask."""
    path = next(p for p in SPECS if p.stem == stem)
    cell, mod, _ = built(path)
    layer = getattr(mod, cell.class_name)(
        2, 3, dtype=torch.float64, return_sequences=True, return_state=True, seed=1
    )
    _perturb(layer, 1)
    names = [n for n, _ in layer.named_parameters()]
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 2, generator=g, dtype=torch.float64, requires_grad=True)
    h0 = [0.3 * torch.randn(2, 3, generator=g, dtype=torch.float64) for _ in cell.states]
    h0 = [h.requires_grad_(True) for h in h0]
    mask = torch.tensor([[True, False, True, True], [True, True, True, False]])
    weights = [p.detach().clone().requires_grad_(True) for p in layer.parameters()]

    def run(x, *rest):
        states, ws = rest[: len(h0)], rest[len(h0) :]
        out, final = mod.forward(
            x,
            ws,
            list(states),
            mask=mask,
            **{o.name: getattr(layer, o.name) for o in cell.bool_options},
        )
        return (out, *final)

    assert names
    assert torch.autograd.gradcheck(run, (x, *h0, *weights), eps=1e-6, atol=1e-7, rtol=1e-6)


def test_every_table_function_prints_for_torch():
    """Each table function's torch forward equals its NumPy forward, and its printed torch
    derivative and VJP (torch's own backward kernel where ``TORCH_VJP`` names one) equal torch
    autograd of that forward, on a grid that misses the kinks."""
    u = torch.linspace(-4.0, 4.0, 2001, dtype=torch.float64) + 1e-6 * math.sqrt(2)
    for name, entry in functions.TABLE.items():
        domain = u.abs() + 0.1 if name in ("sqrt", "log") else u
        scope = {"torch": torch, "np": np}
        exec(f"def f(u):\n    return {entry.torch}\n", scope)
        exec(f"def grad({entry._var}):\n    return {entry.torch_grad}\n", scope)
        v = domain.clone().requires_grad_(True)
        y = scope["f"](v)
        (expected,) = torch.autograd.grad(y.sum(), v, retain_graph=True)
        arg = y.detach() if entry.grad_from == "output" else domain
        got = scope["grad"](arg)
        got = torch.as_tensor(got, dtype=torch.float64).expand_as(expected)
        close(got, expected, 1e-9, f"{name}: printed torch derivative vs autograd")
        # the VJP the fused backward calls (torch's own kernel for TORCH_VJP's entries)
        d = torch.cos(3.0 * domain)  # an arbitrary output gradient, of both signs
        scope[f"{name}_grad"] = scope["grad"]  # as the generated module names it
        exec(f"def vjp({entry._var}, d):\n    return {entry.torch_vjp}\n", scope)
        (expected_vjp,) = torch.autograd.grad(y, v, d)
        close(scope["vjp"](arg, d), expected_vjp, 1e-9, f"{name}: torch VJP vs autograd")
        np_scope = {"np": np, "_erf": np.vectorize(math.erf, otypes=[float])}
        exec(f"def f(u):\n    return {entry.numpy}\n", np_scope)
        close(y, np_scope["f"](domain.numpy()), 1e-12, f"{name}: torch vs NumPy forward")
