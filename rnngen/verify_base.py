"""Configurations, test data, the generated NumPy layer's runner and the comparison rule of
``rnngen verify`` (see :mod:`rnngen.verify` for what the checks are)."""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import codegen
from .build import build_files
from .spec import CellSpec
from .verify_configs import (  # noqa: F401 - re-exported
    SMOOTH,
    Config,
    _declared_dropout,
    configurations,
    fd_configurations,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

CHECKS = ("keras", "autodiff", "finite_diff", "truncate", "dropout", "init", "hygiene")
FWD_TOL = {"float32": 1e-5, "float64": 1e-10}
GRAD_TOL = {"float32": 1e-4, "float64": 1e-8}
FD_TOL = 1e-6
FD_EPS = 1e-5
REGS = {  # argument -> (l1, l2)
    "kernel": (0.01, 0.02),
    "recurrent": (0.03, 0.0),
    "bias": (0.0, 0.05),
    "activity": (0.01, 0.02),
}


def _reg(argument: str) -> tuple[float, float]:
    return REGS.get(argument, (0.02, 0.01))


# -- results ------------------------------------------------------------------------------------


@dataclass
class CheckResult:
    spec: str
    backend: str
    check: str
    status: str  # "pass" | "fail" | "n/a" | "error"
    configs: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0
    tol: str = ""
    seconds: float = 0.0
    note: str = ""
    remark: str = ""  # informational, e.g. a Keras bug that was worked around
    failure: dict | None = None  # smallest failing configuration and its worst entry

    @property
    def passed(self) -> bool:
        return self.status in ("pass", "n/a")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# -- modules ------------------------------------------------------------------------------------

_counter = itertools.count()


def import_path(path: Path, name: str | None = None):
    """Import a Python file under a unique module name."""
    name = name or f"_rnngen_verify_{Path(path).stem}_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def build_into(path: Path, out_dir: Path) -> Path:
    """Generate the modules of the spec at ``path`` into ``out_dir``."""
    files = build_files([Path(path)])
    codegen.write_atomically(files, Path(out_dir))
    return Path(out_dir)


def _module_dir(cs: CellSpec, path: Path | None, module_dir: Path | None, stack) -> Path:
    """The folder of the modules to verify: ``module_dir`` when given, else the code that
    ``rnngen build`` writes for the spec now, built into a temporary folder (never the files
    in ``generated/``, which may be stale)."""
    if module_dir is not None:
        return Path(module_dir)
    if path is None:
        raise ValueError("a CellSpec without a file needs module_dir=")
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rnngen-verify-")))
    return build_into(path, tmp)


def stale_generated(path: Path, built_dir: Path) -> list[str]:
    """For a shipped spec: the files of ``generated/`` that differ from the fresh build."""
    path = Path(path)
    if path.resolve().parent != codegen.spec_dir().resolve():
        return []
    generated = codegen.default_out_dir()
    if not generated.is_dir():
        return []
    stale = []
    for built in sorted(Path(built_dir).iterdir()):
        shipped = generated / built.name
        if not shipped.is_file() or shipped.read_bytes() != built.read_bytes():
            stale.append(built.name)
    return stale


# -- random data --------------------------------------------------------------------------------


def _stable(text: str) -> int:
    import zlib

    return zlib.crc32(text.encode())


def make_data(module, cs: CellSpec, cfg: Config, seed: int) -> dict:
    rng = np.random.default_rng([seed, _stable(cs.name), _stable(cfg.label())])
    B, T, D, U = cfg.B, cfg.T, cfg.D, cfg.U
    bools = {o.name: cfg.opts[o.name] for o in cs.bool_options}
    import inspect

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


def _reg_kwargs(cs: CellSpec, cfg: Config, make) -> dict:
    if not cfg.regularizers:
        return {}
    args = {w.argument for w in cs.weights}
    out = {f"{a}_regularizer": make(*_reg(a)) for a in sorted(args)}
    out["activity_regularizer"] = make(*REGS["activity"])
    return out


def _layer_kwargs(cfg: Config) -> dict:
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


def _cast(v, dtype):
    if v is None:
        return None
    if isinstance(v, list):
        return [np.asarray(a, dtype) for a in v]
    if isinstance(v, dict):
        return {k: _cast(a, dtype) for k, a in v.items()}
    return np.asarray(v, dtype)


# -- the generated NumPy layer ------------------------------------------------------------------


def run_numpy_layer(
    module,
    cs: CellSpec,
    cfg: Config,
    data: dict,
    dtype: str,
    *,
    truncate: int | None = None,
    draw_masks: bool = False,
    extra: dict | None = None,
    prepare=None,
) -> dict:
    """Run the generated NumPy layer: returned values, losses and ``backward`` gradients.

    ``data["dmasks"]`` are injected (``training=True``) unless ``draw_masks``, where the layer
    draws its own masks (``training=True``, ``dropout_masks=None``); ``truncate`` is passed to
    ``backward``; ``extra`` goes to the constructor; ``prepare(layer)`` runs before the call.
    """
    cls = getattr(module, cs.class_name)
    regs = _reg_kwargs(
        cs, cfg, lambda l1, l2: {"class_name": "L1L2", "config": {"l1": l1, "l2": l2}}
    )
    layer = cls(cfg.U, **cfg.opts, **_layer_kwargs(cfg), **regs, **(extra or {}), dtype=dtype)
    layer.set_weights([np.asarray(w, dtype) for w in data["weights"].values()])
    if prepare is not None:
        prepare(layer)
    out: dict[str, np.ndarray] = {}
    training = data["dmasks"] is not None or draw_masks
    masks = None if draw_masks else _cast(data["dmasks"], dtype)
    kw = {"mask": data["mask"], "training": training, "dropout_masks": masks}
    xs = [np.asarray(x, dtype) for x in data["xs"]]
    if cfg.stateful:
        first = layer(xs[0], **kw)
        first = list(first) if cfg.return_state else [first]
        for i, r in enumerate(first):
            out[f"call1.returned[{i}]"] = np.asarray(r)
        h0 = None
    else:
        h0 = _cast(data["h0"], dtype)
    ret = layer(xs[-1], initial_state=h0, **kw)
    ret = list(ret) if cfg.return_state else [ret]
    for i, r in enumerate(ret):
        out[f"returned[{i}]"] = np.asarray(r)
    proj = [np.asarray(p, dtype) for p in data["proj"]]
    loss_terms = layer.losses
    out["sum(losses)"] = np.asarray(
        float(np.sum([np.sum(v) for v in loss_terms])) if loss_terms else 0.0
    )
    g = layer.backward(proj[0], d_states=proj[1:] if cfg.return_state else None, truncate=truncate)
    grads = {"d inputs": np.asarray(g.inputs)}
    if data["h0"] is not None and not cfg.stateful:
        for s, d in zip(cs.states, g.initial_state, strict=True):
            grads[f"d initial {s}"] = np.asarray(d)
    for n, d in g.weights.items():
        grads[f"d {n}"] = np.asarray(d)
    return {"values": out, "grads": grads}


# -- comparison ---------------------------------------------------------------------------------


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


# -- one row of the report ---------------------------------------------------------------------


class _Progress:
    def __init__(self, progress, task):
        self.progress, self.task = progress, task

    def advance(self, n=1):
        if self.progress is not None:
            self.progress.advance(self.task, n)


def _run_matrix(
    name, check, backend, configs, fn, dtype_for_tol, progress, defaults, label=None
) -> CheckResult:
    """Run ``fn(cfg) -> Compared`` over ``configs`` into one row; ``label(cfg)`` names the
    smallest failing configuration (default ``cfg.label(defaults)``)."""
    t0 = time.perf_counter()
    res = CheckResult(spec=name, backend=backend, check=check, status="pass", configs=0)
    failures = []
    skipped = 0
    for cfg in configs:
        try:
            with np.errstate(all="ignore"):
                c = fn(cfg)
        except Exception as err:  # noqa: BLE001 - reported as a failing row
            c = Compared(
                ok=False,
                max_abs=float("inf"),
                max_rel=float("inf"),
                worst={
                    "tensor": "exception",
                    "index": None,
                    "analytic": f"{type(err).__name__}: {err}"[:300],
                    "reference": None,
                    "rel": float("inf"),
                    "tol": None,
                },
            )
        if c.skipped:
            skipped += 1
            progress.advance()
            continue
        res.configs += 1
        res.max_abs = max(res.max_abs, c.max_abs)
        res.max_rel = max(res.max_rel, c.max_rel)
        if not c.ok:
            failures.append((cfg, c))
        progress.advance()
    res.tol = dtype_for_tol
    if failures:
        cfg, c = min(failures, key=lambda fc: fc[0].size(defaults))
        res.status = "fail"
        res.failure = {
            "config": label(cfg) if label else cfg.label(defaults),
            "failing_configs": len(failures),
            **c.worst,
        }
        res.note = f"{len(failures)}/{res.configs} configurations fail"
    if skipped:
        res.remark = (res.remark + "; " if res.remark else "") + (
            f"{skipped} configuration(s) skipped: the reference overflowed (inf/nan)"
        )
        if res.configs == 0:  # nothing was compared: not a pass
            res.status = "fail"
            res.note = "every configuration overflowed in the reference"
    res.seconds = round(time.perf_counter() - t0, 2)
    return res


def _tol_text(dtype: str) -> str:
    return f"fwd {FWD_TOL[dtype]:g}·s, grad {GRAD_TOL[dtype]:g}·s"
