"""The comparison rule of ``rnngen verify``: tolerances and :func:`compare` of a layer's
values and gradients with a reference's."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FWD_TOL = {"float32": 1e-5, "float64": 1e-10}
GRAD_TOL = {"float32": 1e-4, "float64": 1e-8}
#: finite differences (float64): relative tolerance and central-difference step
FD_TOL = 1e-6
FD_EPS = 1e-5

#: the rule the tolerances apply by (in the package doc and the ``--json`` report)
TOLERANCE_RULE = f"""\
(``s = max(1, T / 20)`` grows with the sequence length T):

* forward values (outputs, states, losses): ``max|a - b| / max(1, max|b|) <= f * s`` with
  ``f = {FWD_TOL["float32"]:g}`` (float32) or ``{FWD_TOL["float64"]:g}`` (float64);
* gradients: ``max|a - b| / max(max|b|, 0.01 * G) <= g * s`` per tensor, relative to the largest
  reference entry of that tensor (``G``: the largest reference gradient entry of the
  configuration, so nearly-zero tensors are not judged on noise), with
  ``g = {GRAD_TOL["float32"]:g}`` (float32) or ``{GRAD_TOL["float64"]:g}`` (float64);
* finite differences (float64, ``eps = {FD_EPS:g}``):
  ``|analytic - numeric| / max(|grad| |u|, |numeric|) <= {FD_TOL:g}`` (grad and u restricted to
  the direction's group); full Jacobian: per entry, relative to the
  largest Jacobian entry, ``<= {FD_TOL:g}``."""


@dataclass
class Compared:
    max_abs: float = 0.0
    max_rel: float = 0.0
    ok: bool = True
    worst: dict | None = None  # the worst failing (or worst overall) entry
    skipped: bool = False  # the reference itself overflowed: nothing to compare


def compare(ours: dict, ref: dict, dtype: str, T: int) -> Compared:
    s = max(1.0, T / 20)
    res = Compared()
    if not all(
        np.all(np.isfinite(np.asarray(b, np.float64)))
        for kind in ("values", "grads")
        for b in ref[kind].values()
    ):
        res.skipped = True  # e.g. an exponential activation overflowing: no oracle to trust
        return res
    worst_ratio = -1.0
    gscale = max([float(np.max(np.abs(g))) for g in ref["grads"].values() if np.size(g)] + [0.0])
    for kind in ("values", "grads"):
        tol = (FWD_TOL if kind == "values" else GRAD_TOL)[dtype] * s
        for name, b in ref[kind].items():
            b = np.asarray(b, np.float64)
            a = ours[kind].get(name)
            if a is None:
                entry = {
                    "tensor": name,
                    "index": None,
                    "analytic": None,
                    "reference": "present",
                    "rel": float("inf"),
                    "tol": tol,
                }
                res.ok, res.max_rel, res.worst = False, float("inf"), entry
                worst_ratio = float("inf")
                continue
            a = np.asarray(a, np.float64)
            if a.shape != b.shape:
                entry = {
                    "tensor": name,
                    "index": None,
                    "analytic": f"shape {a.shape}",
                    "reference": f"shape {b.shape}",
                    "rel": float("inf"),
                    "tol": tol,
                }
                res.ok, res.max_rel, res.worst = False, float("inf"), entry
                worst_ratio = float("inf")
                continue
            if a.size == 0:
                continue
            diff = np.abs(a - b)
            diff = np.where(np.isnan(diff), np.inf, diff)
            i = int(np.argmax(diff))
            err = float(diff.flat[i])
            if kind == "values":
                denom = max(1.0, float(np.max(np.abs(b))))
            else:
                denom = max(float(np.max(np.abs(b))), 0.01 * gscale, 1e-30)
            rel = err / denom
            res.max_abs = max(res.max_abs, err)
            res.max_rel = max(res.max_rel, rel)
            if rel > tol:
                res.ok = False
            if rel / tol > worst_ratio:
                worst_ratio = rel / tol
                idx = tuple(int(k) for k in np.unravel_index(i, b.shape)) if b.ndim else ()
                res.worst = {
                    "tensor": name,
                    "index": idx,
                    "analytic": float(a.flat[i]),
                    "reference": float(b.flat[i]),
                    "rel": rel,
                    "tol": tol,
                }
    return res


def tol_text(dtype: str) -> str:
    return f"fwd {FWD_TOL[dtype]:g}·s, grad {GRAD_TOL[dtype]:g}·s"
