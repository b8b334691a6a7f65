"""The TF backend's rows of ``rnngen verify``: the generated Keras 3 layer, both
implementations, against the Keras reference and the autodiff equation interpreter, plus its
``dropout``, ``init`` and ``hygiene`` rows (what the checks are: :mod:`rnngen.verify`)."""

from __future__ import annotations

import time

from . import dropout, init
from .compare import compare, tol_text
from .hygiene import hygiene_row, reap, start_hygiene
from .modules import import_path
from .refs import import_tf, run_keras_layer
from .results import CheckResult, run_matrix


def _tf_layer_dtype(cls, U: int) -> str:
    """``"float64"`` when the generated TF layer builds and runs in float64, else ``"float32"``."""
    tf = import_tf()
    try:
        layer = cls(U, dtype="float64")
        y = layer(tf.zeros((1, 2, 2), tf.float64))
        ok = y.dtype == tf.float64 and all(w.dtype == "float64" for w in layer.weights)
    except Exception:  # noqa: BLE001 - no float64 support: fall back on float32
        ok = False
    return "float64" if ok else "float32"


def tf_checks(
    cs, tf_path, cfgs, checks, defaults, refs, prog, hygiene_proc=None, quick=False
) -> list[CheckResult]:
    """The generated Keras 3 layer, both implementations: against the Keras reference (float32)
    and against the equation interpreter with autodiff (float64 when the layer supports it)."""
    if tf_path is None:
        if hygiene_proc is not None:
            reap({"tf": hygiene_proc})
        return [CheckResult(cs.name, "tf", "all", "n/a", note="tf backend not available")]
    t_start = time.perf_counter()
    if "hygiene" in checks and hygiene_proc is None:
        hygiene_proc = start_hygiene(tf_path)
    try:
        rows = _tf_layer_checks(cs, tf_path, cfgs, checks, defaults, refs, prog, quick)
    finally:
        hyg = hygiene_row(cs, "tf", hygiene_proc, False, t_start) if hygiene_proc else None
    return ([hyg] if hyg else []) + rows


def _tf_layer_checks(cs, tf_path, cfgs, checks, defaults, refs, prog, quick=False):
    out = []
    wanted = ("keras" in checks and cs.reference is not None) or any(
        c in checks for c in ("autodiff", "dropout", "init")
    )
    if not wanted:
        return out
    try:
        module = import_path(tf_path)
        cls = getattr(module, cs.class_name)
    except Exception as err:  # noqa: BLE001
        note = f"{type(err).__name__}: {err}"[:200]
        return [CheckResult(cs.name, "tf", "import", "error", note=note)]
    if "keras" in checks and cs.reference is not None:
        for impl in ("loop", "fused"):

            def fn(cfg, impl=impl):
                ref = refs.keras(cfg)
                ours = run_keras_layer(cls, cs, cfg, refs.data(cfg), extra={"implementation": impl})
                return compare(ours, ref, "float32", cfg.T)

            r = run_matrix(
                cs.name, f"keras/{impl}", "tf", cfgs, fn, tol_text("float32"), prog, defaults
            )
            r.remark = (
                "keras/* and autodiff/* inject dropout masks via "
                "cell.get_(recurrent_)dropout_mask; dropout/* check the masks the layer draws"
            )
            out.append(r)
    # the dtype the autodiff and dropout rows run the layer in, found once
    dtype = _tf_layer_dtype(cls, 2) if ("autodiff" in checks or "dropout" in checks) else None
    if "autodiff" in checks:
        for impl in ("loop", "fused"):

            def auto_fn(cfg, impl=impl):
                ref = refs.equations(cfg)
                ours = run_keras_layer(
                    cls, cs, cfg, refs.data(cfg), extra={"implementation": impl}, dtype=dtype
                )
                return compare(ours, ref, dtype, cfg.T)

            r = run_matrix(
                cs.name, f"autodiff/{impl}", "tf", cfgs, auto_fn, tol_text(dtype), prog, defaults
            )
            if dtype != "float64":
                r.note = "layer does not run in float64; float32 tolerances"
            out.append(r)
    module, seed = refs.module, refs.seed
    if "dropout" in checks:
        out += dropout.tf_rows(cs, cls, module, quick, seed, prog, defaults, dtype)
    if "init" in checks:
        out += init.tf_rows(cs, cls, module, quick, seed, prog, defaults)
    return out
