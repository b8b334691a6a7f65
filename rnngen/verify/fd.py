"""Finite differences on the generated NumPy functional core (``forward``/``backward``)."""

from __future__ import annotations

import numpy as np

from ..spec import CellSpec
from .compare import FD_EPS, FD_TOL, Compared
from .configs import Config
from .data import cast, stable_seed

# -- finite differences -------------------------------------------------------------------------


def fd_setup(module, cs: CellSpec, cfg: Config, data: dict):
    """The finite-difference problem of one configuration on the generated functional core:
    ``(params, outputs, loss, grad)`` with ``params`` = ``{"x", "initial <state>", weights}``,
    ``loss(p) = sum(P * outputs) + sum(Q_i * final state i)`` and ``grad(p)`` its gradient by
    the generated ``backward``."""
    w0 = {n: np.asarray(w, np.float64) for n, w in data["weights"].items()}
    x0 = np.asarray(data["xs"][-1], np.float64)
    h0 = (
        [np.asarray(h, np.float64) for h in data["h0"]]
        if data["h0"] is not None
        else [np.zeros((cfg.B, cfg.U)) for _ in cs.states]
    )
    P = np.random.default_rng(stable_seed(cfg.label())).standard_normal((cfg.B, cfg.T, cfg.U))
    Q = data["fd_state_proj"]
    kw = dict(
        mask=data["mask"],
        dropout_masks=cast(data["dmasks"], np.float64),
        go_backwards=cfg.go_backwards,
        zero_output_for_mask=cfg.zero_output_for_mask,
        **cfg.opts,
    )
    params = {
        "x": x0,
        **{f"initial {s}": h for s, h in zip(cs.states, h0, strict=True)},
        **{n: w for n, w in w0.items()},
    }

    def unpack(p):
        return (p["x"], {n: p[n] for n in w0}, [p[f"initial {s}"] for s in cs.states])

    def outputs(p):
        x, w, h = unpack(p)
        y, states, tape = module.forward(x, w, h, **kw)
        return y, states, tape

    def loss(p):
        y, states, _ = outputs(p)
        return float(np.sum(P * y) + sum(np.sum(q * s) for q, s in zip(Q, states, strict=True)))

    def grad(p, dy=P, ds=Q):
        _, _, tape = outputs(p)
        dx, dh, dw = module.backward(tape, dy, [np.array(d) for d in ds])
        g = {"x": dx, **{f"initial {s}": d for s, d in zip(cs.states, dh, strict=True)}}
        g.update(dw)
        return g

    return params, outputs, loss, grad


def central_difference(loss, params: dict, u: dict, eps: float = FD_EPS) -> float:
    """``(loss(p + eps u) - loss(p - eps u)) / (2 eps)``: the derivative of ``loss`` at
    ``params`` along the direction ``u`` (both ``{name: array}``)."""
    plus = {n: params[n] + eps * u[n] for n in params}
    minus = {n: params[n] - eps * u[n] for n in params}
    return (loss(plus) - loss(minus)) / (2 * eps)


def fd_check(module, cs: CellSpec, cfg: Config, data: dict, seed: int) -> Compared:
    """``<grad, u>`` against :func:`central_difference` for a random direction per tensor and
    one over every tensor; a failing tensor's worst entry is found by per-entry differences."""
    params, _, loss, grad = fd_setup(module, cs, cfg, data)
    g = grad(params)
    rng = np.random.default_rng([seed, stable_seed(cfg.label()), 7])
    res = Compared()
    worst_group = None
    groups = [[n] for n in params] + [list(params)]
    for group in groups:
        u = {
            n: (rng.standard_normal(params[n].shape) if n in group else np.zeros_like(params[n]))
            for n in params
        }
        analytic = float(sum(np.sum(np.asarray(g[n], np.float64) * u[n]) for n in group))
        numeric = central_difference(loss, params, u)
        if not np.isfinite(numeric):
            return Compared(skipped=True)  # the loss itself overflows: no oracle to trust
        scale = np.sqrt(sum(np.sum(np.asarray(g[n]) ** 2) for n in group)) * np.sqrt(
            sum(np.sum(u[n] ** 2) for n in group)
        )
        err = abs(analytic - numeric)
        rel = err / max(scale, abs(numeric), 1e-30)
        if not np.isfinite(rel):
            rel = float("inf")
        res.max_abs, res.max_rel = max(res.max_abs, err), max(res.max_rel, rel)
        if rel > FD_TOL:
            res.ok = False
        if res.worst is None or rel > res.worst["rel"]:
            worst_group = group
            res.worst = {
                "tensor": "direction over " + ("all" if len(group) > 1 else group[0]),
                "index": None,
                "analytic": analytic,
                "reference": numeric,
                "rel": rel,
                "tol": FD_TOL,
            }
    if not res.ok and len(worst_group) == 1:  # name the worst entry of that one tensor
        res.worst.update(_localize(params, loss, g, worst_group[0]))
    return res


FD_LOCALIZE_MAX = 4000


def _localize(params, loss, g, name):
    """The worst entry of one tensor by per-entry central differences (small tensors only)."""
    value = params[name]
    if value.size > FD_LOCALIZE_MAX:
        return {}
    analytic = np.asarray(g[name], np.float64)
    worst = None
    for i in range(value.size):
        shifted = []
        for sign in (1, -1):
            v = value.copy()
            v.flat[i] += sign * FD_EPS
            shifted.append(loss({**params, name: v}))
        numeric = (shifted[0] - shifted[1]) / (2 * FD_EPS)
        err = abs(analytic.flat[i] - numeric)
        if worst is None or err > worst[0]:
            worst = (err, i, float(analytic.flat[i]), numeric)
    _, i, a, n = worst
    return {
        "tensor": name,
        "index": [int(k) for k in np.unravel_index(i, value.shape)],
        "analytic": a,
        "reference": n,
    }


def full_jacobian_check(module, cs: CellSpec, cfg: Config, data: dict) -> Compared:
    params, outputs, _, _ = fd_setup(module, cs, cfg, data)

    def flat_out(p):
        y, states, _ = outputs(p)
        return np.concatenate([y.ravel()] + [s.ravel() for s in states])

    y0, states0, tape = outputs(params)
    n_out = y0.size + sum(s.size for s in states0)
    names = list(params)
    numeric = {n: np.zeros((n_out,) + params[n].shape) for n in names}
    for n in names:
        for idx in np.ndindex(params[n].shape):
            plus = dict(params)
            minus = dict(params)
            plus[n] = params[n].copy()
            minus[n] = params[n].copy()
            plus[n][idx] += FD_EPS
            minus[n][idx] -= FD_EPS
            numeric[n][(slice(None),) + idx] = (flat_out(plus) - flat_out(minus)) / (2 * FD_EPS)
    analytic = {n: np.zeros_like(numeric[n]) for n in names}
    for k in range(n_out):
        e = np.zeros(n_out)
        e[k] = 1.0
        dy = e[: y0.size].reshape(y0.shape)
        ds, off = [], y0.size
        for s in states0:
            ds.append(e[off : off + s.size].reshape(s.shape))
            off += s.size
        dx, dh, dw = module.backward(tape, dy, ds)
        g = {"x": dx, **{f"initial {s}": d for s, d in zip(cs.states, dh, strict=True)}, **dw}
        for n in names:
            analytic[n][k] = g[n]
    scale = max(float(np.max(np.abs(v))) for v in numeric.values())
    res = Compared()
    for n in names:
        diff = np.abs(analytic[n] - numeric[n])
        i = int(np.argmax(diff))
        err = float(diff.flat[i])
        rel = err / max(scale, 1e-30)
        res.max_abs, res.max_rel = max(res.max_abs, err), max(res.max_rel, rel)
        if rel > FD_TOL:
            res.ok = False
        if res.worst is None or rel > res.worst["rel"]:
            idx = np.unravel_index(i, diff.shape)
            res.worst = {
                "tensor": f"jacobian d out[{idx[0]}] / d {n}",
                "index": tuple(int(k) for k in idx[1:]),
                "analytic": float(analytic[n].flat[i]),
                "reference": float(numeric[n].flat[i]),
                "rel": rel,
                "tol": FD_TOL,
            }
    return res
