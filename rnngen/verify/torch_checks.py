"""The torch backend's rows of ``rnngen verify`` (``--backend torch``): the generated PyTorch
module (``<name>_torch.py``), all in float64.

``nn``
    For the shipped cells (a Keras reference of ``SimpleRNN``, ``GRU`` or ``LSTM``):
    ``<Class>.from_torch`` of a ``torch.nn.RNN``/``GRU``/``LSTM`` with random weights (its two
    biases different), both implementations, ``batch_first`` or not, with and without initial
    states: outputs, final states and the gradients of the inputs, the initial states and every
    weight (torch's, mapped to Keras's layouts by ``keras_weights_from_torch``) against torch's.
``autograd``
    The fused op (hoisted forward, derived BPTT) against torch autograd through the plain loop
    (``implementation="autograd"``), for any spec: every combination of boolean options
    (``--quick``: the defaults and each one flipped), plain, masked with ``go_backwards``,
    injected dropout masks, and the input-form variant (activations without an output-form
    derivative).
``finite_diff``
    The fused op's gradients along random directions (one per input, initial state and weight,
    and one over everything) against central differences.
``hygiene``
    The module imports in a fresh interpreter without TensorFlow, Keras or rnngen.

Tolerances are :func:`rnngen.verify.compare.compare`'s float64 rule and ``FD_TOL``.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

from .compare import FD_EPS, FD_TOL, Compared, compare, tol_text
from .configs import SMOOTH
from .hygiene import hygiene_row, start_hygiene
from .modules import import_path
from .results import CheckResult, run_matrix

_NN = {"SimpleRNN": "RNN", "GRU": "GRU", "LSTM": "LSTM"}
B, INPUT, UNITS = 3, 4, 5


@dataclass(frozen=True)
class TorchConfig:
    """One configuration of a torch check (its options, what is on, and the sizes)."""

    options: tuple = ()  # (name, value) of boolean and activation options
    mask: bool = False
    go_backwards: bool = False
    dropout: bool = False
    initial_state: bool = True
    implementation: str = "fused"
    batch_first: bool = True
    T: int = 6

    def label(self, defaults=None) -> str:
        defaults = defaults or {}
        parts = [f"{k}={v}" for k, v in self.options if defaults.get(k) != v]
        for flag in ("mask", "go_backwards", "dropout"):
            if getattr(self, flag):
                parts.append(flag)
        if not self.initial_state:
            parts.append("zero initial state")
        if self.implementation != "fused":
            parts.append(f"implementation={self.implementation}")
        if not self.batch_first:
            parts.append("time first")
        return ", ".join(parts) or "defaults"

    def size(self, defaults=None) -> int:
        return len(self.label(defaults).split(", "))


def torch_checks(cs, torch_path, checks, quick, seed, prog, defaults) -> list[CheckResult]:
    """Every torch row of one spec (see the module doc)."""
    if torch_path is None or not torch_path.is_file():
        return [CheckResult(cs.name, "torch", "all", "n/a", note="torch backend not built")]
    try:
        import torch  # noqa: F401
    except ImportError:
        return [CheckResult(cs.name, "torch", "all", "n/a", note="torch is not installed")]
    t0 = time.perf_counter()
    proc = start_hygiene(torch_path) if "hygiene" in checks else None
    out = []
    try:
        module = import_path(torch_path)
    except Exception as err:  # noqa: BLE001 - reported as a row
        out.append(CheckResult(cs.name, "torch", "import", "error", note=f"{err}"[:200]))
        module = None
    ref = (cs.reference or "").rpartition(".")[2]
    if (
        module is not None
        and "keras" in checks
        and ref in _NN
        and hasattr(module, "keras_weights_from_torch")
    ):
        cfgs = [
            TorchConfig(initial_state=h0, implementation=impl, batch_first=bf)
            for impl, bf, h0 in itertools.product(
                ("fused", "autograd"), (True, False), (True, False)
            )
        ]
        if quick:
            cfgs = cfgs[::3]
        fn = lambda cfg: _nn_check(module, cs, ref, cfg, seed)  # noqa: E731
        out.append(
            run_matrix(cs.name, "nn", "torch", cfgs, fn, tol_text("float64"), prog, defaults)
        )
    if module is not None and "autodiff" in checks:
        fn = lambda cfg: _autograd_check(module, cs, cfg, seed)  # noqa: E731
        cfgs = _autograd_configs(cs, quick, defaults)
        out.append(
            run_matrix(cs.name, "autograd", "torch", cfgs, fn, tol_text("float64"), prog, defaults)
        )
    if module is not None and "finite_diff" in checks:
        smooth = tuple(
            (o.name, o.default if o.default in SMOOTH else "tanh") for o in cs.activation_options
        )
        cfgs = [TorchConfig(options=smooth, mask=True, T=4)]
        if cs.dropout and not quick:
            cfgs.append(TorchConfig(options=smooth, dropout=True, go_backwards=True, T=4))
        fn = lambda cfg: _fd_check(module, cs, cfg, seed)  # noqa: E731
        text = f"dir {FD_TOL:g} rel"
        out.append(run_matrix(cs.name, "finite_diff", "torch", cfgs, fn, text, prog, defaults))
    if proc is not None:
        row = hygiene_row(cs, "torch", proc, True, t0)
        row.tol = "imports torch, NumPy"
        out.append(row)
    return out


def _autograd_configs(cs, quick, defaults) -> list[TorchConfig]:
    names = [o.name for o in cs.bool_options]
    if quick:
        combos = [dict(defaults)] + [{**defaults, n: not defaults[n]} for n in names]
        combos = [{n: c[n] for n in names} for c in combos]
    else:
        combos = [
            dict(zip(names, v, strict=True))
            for v in itertools.product((True, False), repeat=len(names))
        ]
    input_form = tuple((o.name, "silu") for o in cs.activation_options)
    out = []
    for combo in combos:
        opts = tuple(combo.items())
        out += [TorchConfig(opts), TorchConfig(opts, mask=True, go_backwards=True)]
        if cs.dropout:
            out.append(TorchConfig(opts, mask=True, dropout=True))
        if input_form:
            out.append(TorchConfig(opts + input_form, dropout=bool(cs.dropout), go_backwards=True))
    return out


def _layer(module, cs, cfg, implementation, seed):
    import torch

    cls = getattr(module, cs.class_name)
    layer = cls(
        INPUT,
        UNITS,
        return_sequences=True,
        return_state=True,
        go_backwards=cfg.go_backwards,
        implementation=implementation,
        dtype=torch.float64,
        seed=seed,
        **dict(cfg.options),
    )
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # off the initial values, so biases are not zero
        for p in layer.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return layer


def _data(cs, cfg, seed):
    import torch

    g = torch.Generator().manual_seed(seed + 2)
    x = 0.7 * torch.randn(B, cfg.T, INPUT, generator=g, dtype=torch.float64)
    h0 = [0.3 * torch.randn(B, UNITS, generator=g, dtype=torch.float64) for _ in cs.states]
    mask = None
    if cfg.mask:
        mask = torch.ones(B, cfg.T, dtype=torch.bool)
        mask[0, 1] = mask[1, 0] = mask[2, cfg.T - 2 :] = False
    masks = None
    if cfg.dropout:
        masks = {}
        for tensor, rate in cs.dropout:
            shape = (B, INPUT) if tensor == "x" else (B, UNITS)
            masks[rate] = (torch.rand(shape, generator=g, dtype=torch.float64) >= 0.3) / 0.7
    projections = None  # drawn on first use, once the outputs' shapes are known
    return {"x": x, "h0": h0, "mask": mask, "masks": masks, "g": g, "projections": projections}


def _loss(returned, data):
    import torch

    if data["projections"] is None:
        data["projections"] = [
            torch.randn(r.shape, generator=data["g"], dtype=r.dtype) for r in returned
        ]
    return sum((r * p).sum() for r, p in zip(returned, data["projections"], strict=True))


def _run(layer, cs, data, initial_state=True) -> dict:
    """Returned values and the gradients of a random projection of them."""
    import torch

    x = data["x"].clone().requires_grad_(True)
    h0 = [h.clone().requires_grad_(True) for h in data["h0"]]
    returned = layer(
        x,
        initial_state=h0 if initial_state else None,
        mask=data["mask"],
        dropout_masks=data["masks"],
    )
    leaves = [x, *(h0 if initial_state else []), *layer.parameters()]
    grads = torch.autograd.grad(_loss(returned, data), leaves)
    names = ["x"] + ([f"initial {s}" for s in cs.states] if initial_state else [])
    names += [n for n, _ in layer.named_parameters()]
    finals = zip(cs.states, returned[1:], strict=True)
    values = {"output": returned[0]} | {f"final {s}": r for s, r in finals}
    return {
        "values": {k: v.detach().numpy() for k, v in values.items()},
        "grads": {k: g.numpy() for k, g in zip(names, grads, strict=True)},
    }


def _autograd_check(module, cs, cfg, seed) -> Compared:
    fused = _layer(module, cs, cfg, "fused", seed)
    loop = _layer(module, cs, cfg, "autograd", seed)
    loop.set_weights(fused.get_weights())
    ours = _run(fused, cs, _data(cs, cfg, seed))
    ref = _run(loop, cs, _data(cs, cfg, seed))
    return compare(ours, ref, "float64", cfg.T)


def _nn_check(module, cs, ref_name, cfg, seed) -> Compared:
    import torch

    torch.manual_seed(seed)
    nn = getattr(torch.nn, _NN[ref_name])(INPUT, UNITS, batch_first=cfg.batch_first).double()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in nn.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    layer = getattr(module, cs.class_name).from_torch(
        nn, return_sequences=True, return_state=True, implementation=cfg.implementation
    )
    data = _data(cs, cfg, seed)
    ours = _run(layer, cs, data, cfg.initial_state)

    x = data["x"].clone().requires_grad_(True)
    h0 = [h.clone().requires_grad_(True) for h in data["h0"]]
    xin = x if cfg.batch_first else x.transpose(0, 1)
    states = tuple(h[None] for h in h0)
    if not cfg.initial_state:
        out, final = nn(xin)
    else:
        out, final = nn(xin, states if ref_name == "LSTM" else states[0])
    out = out if cfg.batch_first else out.transpose(0, 1)
    final = [f[0] for f in (final if ref_name == "LSTM" else [final])]
    leaves = [x, *(h0 if cfg.initial_state else []), *nn.parameters()]
    grads = torch.autograd.grad(_loss([out, *final], data), leaves)
    n = 1 + (len(h0) if cfg.initial_state else 0)
    d_torch = dict(zip(nn.state_dict(), grads[n:], strict=True))
    if ref_name != "GRU":  # Keras's one bias is the sum of torch's two: each has its gradient
        d_torch["bias_hh_l0"] = torch.zeros_like(d_torch["bias_hh_l0"])
    names = ["x"] + ([f"initial {s}" for s in cs.states] if cfg.initial_state else [])
    weights = module.keras_weights_from_torch(d_torch)
    reference = {
        "values": {"output": out.detach().numpy()}
        | {f"final {s}": f.detach().numpy() for s, f in zip(cs.states, final, strict=True)},
        "grads": {k: v.numpy() for k, v in zip(names, grads[:n], strict=True)}
        | dict(zip(layer._weight_names, weights, strict=True)),
    }
    return compare(ours, reference, "float64", cfg.T)


def _fd_check(module, cs, cfg, seed) -> Compared:
    """``<grad L, u>`` of the fused op against ``(L(p + eps u) - L(p - eps u)) / (2 eps)``."""
    import torch

    layer = _layer(module, cs, cfg, "fused", seed)
    data = _data(cs, cfg, seed)
    x, h0 = data["x"].clone(), [h.clone() for h in data["h0"]]
    weights = [p.detach().clone() for p in layer.parameters()]
    names = ["x"] + [f"initial {s}" for s in cs.states] + [n for n, _ in layer.named_parameters()]
    options = {o.name: getattr(layer, o.name) for o in cs.bool_options + cs.activation_options}

    def loss(params):
        x, rest = params[0], params[1:]
        states, ws = rest[: len(h0)], rest[len(h0) :]
        out, final = module.forward(
            x,
            ws,
            list(states),
            mask=data["mask"],
            dropout_masks=data["masks"],
            go_backwards=cfg.go_backwards,
            **options,
        )
        return _loss([out, *final], data)

    params = [t.clone().requires_grad_(True) for t in (x, *h0, *weights)]
    grads = torch.autograd.grad(loss(params), params)
    g = torch.Generator().manual_seed(seed + 3)
    every = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
    directions = [
        (name, [d if j == i else torch.zeros_like(d) for j, d in enumerate(every)])
        for i, name in enumerate(names)
    ]
    directions.append(("all", every))
    res = Compared()
    worst = -1.0
    base = [p.detach() for p in params]

    def shifted(u, sign):  # requiring grad, so the fused op (not the loop) evaluates it
        return [(p + sign * FD_EPS * d).requires_grad_(True) for p, d in zip(base, u, strict=True)]

    for name, u in directions:
        analytic = float(sum((gr * d).sum() for gr, d in zip(grads, u, strict=True)))
        plus, minus = (float(loss(shifted(u, sign)).detach()) for sign in (1, -1))
        numeric = (plus - minus) / (2 * FD_EPS)
        grad_norm = sum((gr * gr).sum() for gr, d in zip(grads, u, strict=True) if d.any())
        scale = float(torch.sqrt(grad_norm) * torch.sqrt(sum((d * d).sum() for d in u)))
        err = abs(analytic - numeric)
        rel = err / max(scale, abs(numeric), 1e-30)
        res.max_abs, res.max_rel = max(res.max_abs, err), max(res.max_rel, rel)
        res.ok = res.ok and rel <= FD_TOL
        if rel > worst:
            worst = rel
            res.worst = {
                "tensor": f"direction {name}",
                "index": None,
                "analytic": analytic,
                "reference": numeric,
                "rel": rel,
                "tol": FD_TOL,
            }
    return res


def count(cs, checks, quick, defaults) -> int:
    """Progress steps of the torch rows."""
    ref = (cs.reference or "").rpartition(".")[2]
    n = (8 if not quick else 3) * ("keras" in checks and ref in _NN)
    n += len(_autograd_configs(cs, quick, defaults)) * ("autodiff" in checks)
    n += (1 + bool(cs.dropout and not quick)) * ("finite_diff" in checks)
    return n
