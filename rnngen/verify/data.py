"""The random test data of ``rnngen verify`` and the layer arguments a configuration turns into
(shared by the generated layers and the references)."""

from __future__ import annotations

import inspect
import zlib

import numpy as np

from ..spec import CellSpec
from .configs import Config

REGS = {  # argument -> (l1, l2)
    "kernel": (0.01, 0.02),
    "recurrent": (0.03, 0.0),
    "bias": (0.0, 0.05),
    "activity": (0.01, 0.02),
}


def reg_coefficients(argument: str) -> tuple[float, float]:
    return REGS.get(argument, (0.02, 0.01))


def stable_seed(text: str) -> int:
    """A seed component from text, the same in every process (unlike ``hash``)."""
    return zlib.crc32(text.encode())


def make_data(module, cs: CellSpec, cfg: Config, seed: int) -> dict:
    """Random weights, inputs, masks, initial states, dropout masks and loss projections for
    one configuration, reproducible from ``seed``, the spec's name and the configuration."""
    rng = np.random.default_rng([seed, stable_seed(cs.name), stable_seed(cfg.label())])
    B, T, D, U = cfg.B, cfg.T, cfg.D, cfg.U
    bools = {o.name: cfg.opts[o.name] for o in cs.bool_options}
    accepted = inspect.signature(module.weight_shapes).parameters
    shapes = module.weight_shapes(D, U, **{k: v for k, v in bools.items() if k in accepted})
    # unbounded activations (exponential, relu, ...) get smaller weights so nothing overflows
    unbounded = any(
        cfg.opts[o.name] not in ("tanh", "sigmoid", "hard_sigmoid", "softsign")
        for o in cs.activation_options
    )
    a = 0.25 if unbounded else 0.6
    weights = {n: rng.uniform(-a, a, s) for n, s in shapes.items()}
    n_calls = 2 if cfg.stateful else 1
    xs = [(0.5 if unbounded else 1.0) * rng.standard_normal((B, T, D)) for _ in range(n_calls)]
    mask = None
    if cfg.mask:
        mask = rng.random((B, T)) > 0.35
        mask[0, 0] = False  # a leading masked step
        mask[0, 1:3] = True
        if B > 1:
            mask[1, -1] = False  # a masked last step
        if B > 2:
            mask[2] = False  # a fully masked row
    h0 = [0.5 * rng.standard_normal((B, U)) for _ in cs.states] if cfg.initial_state else None
    dmasks = {}
    for rate_name, (tensor, count) in module.DROPOUT.items():
        rate = getattr(cfg, rate_name, 0.0)
        if rate <= 0:
            continue
        shape = (B, D) if tensor == "x" else (B, U)
        per_gate = cfg.recurrent_dropout > 0 and count > 1
        draws = [(rng.random(shape) >= rate) / (1 - rate) for _ in range(count if per_gate else 1)]
        dmasks[rate_name] = draws if per_gate else draws[0]
    n_ret = 1 + (len(cs.states) if cfg.return_state else 0)
    proj = []
    for i in range(n_ret):
        shape = (B, T, U) if (i == 0 and cfg.return_sequences) else (B, U)
        proj.append(rng.standard_normal(shape))
    fd_state_proj = [rng.standard_normal((B, U)) for _ in cs.states]
    return {
        "weights": weights,
        "xs": xs,
        "mask": mask,
        "h0": h0,
        "dmasks": dmasks or None,
        "proj": proj,
        "fd_state_proj": fd_state_proj,
    }


def reg_kwargs(cs: CellSpec, cfg: Config, make) -> dict:
    if not cfg.regularizers:
        return {}
    args = {w.argument for w in cs.weights}
    out = {f"{a}_regularizer": make(*reg_coefficients(a)) for a in sorted(args)}
    out["activity_regularizer"] = make(*REGS["activity"])
    return out


def layer_kwargs(cfg: Config) -> dict:
    return {
        "return_sequences": cfg.return_sequences,
        "return_state": cfg.return_state,
        "go_backwards": cfg.go_backwards,
        "stateful": cfg.stateful,
        "zero_output_for_mask": cfg.zero_output_for_mask,
        "dropout": cfg.dropout,
        "recurrent_dropout": cfg.recurrent_dropout,
        "unroll": cfg.unroll,
    }


def cast(v, dtype):
    if v is None:
        return None
    if isinstance(v, list):
        return [np.asarray(a, dtype) for a in v]
    if isinstance(v, dict):
        return {k: cast(a, dtype) for k, a in v.items()}
    return np.asarray(v, dtype)
