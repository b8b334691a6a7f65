"""The benchmark's JAX worker (``run.py --worker jax``, its own process): the generated JAX module
``generated/<cell>_jax.py``, jitted, in its two implementations:

* ``jax-fused`` -- ``apply(..., implementation="fused")``: the ``jax.custom_vjp`` (hoisted input
  projection, ``lax.scan`` forward keeping only what the derived BPTT reads, reverse ``lax.scan``
  backward, weight gradients as one matrix product after it);
* ``jax-scan``  -- ``apply(..., implementation="scan")``: the plain ``lax.scan`` over the step,
  differentiated by JAX (what Flax/Equinox cells do).

Forward is ``jax.jit(apply)``; forward+BPTT is ``jax.jit`` of ``jax.grad`` of ``sum(y * dy)`` with
respect to the input and every weight (returning y too). Both are lowered and compiled ahead of
time (``jit(f).lower(...).compile()``): the compile seconds are recorded apart
(``compile_fwd_s``, ``compile_fwdbwd_s``) and never enter the timed repetitions, which call the
compiled executables and wait for the result (``block_until_ready``).

Correctness gate: the Keras reference the TF worker saved (same weights, inputs and ``dy``) to
``OUT_TOL`` on the outputs and ``GRAD_RTOL`` on the gradients, as every other implementation.

Memory (``peak_bytes``): XLA's own accounting of the compiled forward+BPTT executable,
``compiled.memory_analysis()``: arguments + outputs + temporaries - aliased bytes. It is what
XLA's buffer assignment reserves for one call (deterministic; not a measured RSS); the
temporaries (``xla_temp_bytes``) are where the scan's saved intermediates live.

Threads: the parent sets ``XLA_FLAGS`` for the worker (see ``xla_flags``): in the 1-thread regime
``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``; otherwise XLA's defaults
(all cores). What was set is in the worker's ``runtime``.

``RNNGEN_BENCH_JAX_DIR``, when set, names a folder of ``<cell>_jax.py`` modules to time instead of
``generated/`` (a build of a spec into a temporary folder).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

from bench_workers import _errors, _fill_times, _gate, _interleaved, _per_rep_ratio

ROOT = Path(__file__).resolve().parent.parent
IMPLS = {"jax-fused": "fused", "jax-scan": "scan"}
#: XLA_FLAGS of the one-thread regime (no Eigen thread pool in XLA's CPU matmuls)
ONE_THREAD_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def xla_flags(threads: int, inherited: str | None) -> str | None:
    """The ``XLA_FLAGS`` the JAX worker runs with in a regime of ``threads`` threads."""
    if threads == 1:
        return " ".join(x for x in (inherited, ONE_THREAD_FLAGS) if x)
    return inherited


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"_bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _memory(compiled) -> dict:
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend reports it
        return {"peak_bytes": "n/a"}
    if m is None:
        return {"peak_bytes": "n/a"}
    parts = {
        "xla_argument_bytes": int(m.argument_size_in_bytes),
        "xla_output_bytes": int(m.output_size_in_bytes),
        "xla_temp_bytes": int(m.temp_size_in_bytes),
        "xla_alias_bytes": int(m.alias_size_in_bytes),
    }
    parts["peak_bytes"] = (
        parts["xla_argument_bytes"]
        + parts["xla_output_bytes"]
        + parts["xla_temp_bytes"]
        - parts["xla_alias_bytes"]
    )
    return parts


def _harness(jax, jnp, module, impl, params, x, dy):
    """Compiled forward and forward+BPTT of one implementation, their compile seconds and
    the memory analysis of forward+BPTT."""

    def fwd_fn(p, a):
        return module.apply(p, a, implementation=impl)[0]

    def loss(p, a, d):
        y = module.apply(p, a, implementation=impl)[0]
        return jnp.sum(y * d), y

    grad_fn = jax.grad(loss, argnums=(0, 1), has_aux=True)
    t0 = time.perf_counter()
    fwd_c = jax.jit(fwd_fn).lower(params, x).compile()
    t1 = time.perf_counter()
    fwdbwd_c = jax.jit(grad_fn).lower(params, x, dy).compile()
    t2 = time.perf_counter()

    def fwd():
        return fwd_c(params, x).block_until_ready()

    def fwdbwd():
        (dp, dx), y = fwdbwd_c(params, x, dy)
        jax.block_until_ready((dp, dx, y))
        return y, dx, dp

    info = {"compile_fwd_s": t1 - t0, "compile_fwdbwd_s": t2 - t1, **_memory(fwdbwd_c)}
    return fwd, fwdbwd, info


def worker_jax(task):
    import jax
    import jax.numpy as jnp
    import numpy as np

    generated = Path(os.environ.get("RNNGEN_BENCH_JAX_DIR") or ROOT / "generated")
    results = []
    for case in task["cases"]:
        D, U = case["D"], case["U"]
        cell = case["cell"]
        records = {
            name: {
                "impl": name,
                "framework": "jax (generated, jit)",
                "shape": case["shape"],
                "cell": cell,
            }
            for name in IMPLS
        }
        results += records.values()
        path = generated / f"{cell}_jax.py"
        ref_path = Path(task["refdir"]) / f"{case['shape']}_{cell}.npz"
        if not path.exists():
            for rec in records.values():
                rec["status"] = f"skipped: {path.name} not found"
            continue
        if not ref_path.exists():
            for rec in records.values():
                rec["status"] = "MISMATCH: no Keras reference (TF worker failed?)"
            continue
        ref = dict(np.load(ref_path))
        module = _load(path)
        ws = [ref[f"w{i}"] for i in range(sum(1 for key in ref if key.startswith("w")))]
        names = list(module.weight_shapes(D, U))  # Keras's names, in Keras's order
        params = {n: jnp.asarray(w) for n, w in zip(names, ws, strict=True)}
        x, dy = jnp.asarray(ref["x"]), jnp.asarray(ref["dy"])
        impls = {}
        for name, impl in IMPLS.items():
            rec = records[name]
            try:
                fwd, fwdbwd, info = _harness(jax, jnp, module, impl, params, x, dy)
                y, dx, dp = fwdbwd()
            except Exception as err:  # noqa: BLE001 - report and carry on
                rec["status"] = f"skipped: {type(err).__name__}: {str(err)[:200]}"
                continue
            rec.update(info)
            grads = [np.asarray(dx)] + [np.asarray(dp[n]) for n in names]
            if _gate(rec, *_errors(np.asarray(y), grads, ref)):
                impls[name] = (fwd, fwdbwd)
        times = _interleaved(impls, task["reps"]) if impls else {}
        for name in impls:
            _fill_times(records[name], times[name])
        if "jax-fused" in times and "jax-scan" in times:
            for phase in ("fwd", "fwdbwd"):
                records["jax-fused"][f"ratio_vs_jax_scan_{phase}_per_rep"] = _per_rep_ratio(
                    times["jax-fused"][phase], times["jax-scan"][phase]
                )
        for rec in records.values():
            rec.setdefault("peak_bytes", None)
    return {
        "results": results,
        "versions": {"jax": jax.__version__, "jaxlib": _jaxlib_version()},
        "runtime": {
            "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
            "devices": [str(d) for d in jax.devices()],
            "x64": bool(jax.config.jax_enable_x64),
        },
    }


def _jaxlib_version():
    try:
        import jaxlib

        return jaxlib.__version__
    except Exception:  # noqa: BLE001
        return None


if __name__ == "__main__":  # pragma: no cover - run through run.py --worker jax
    sys.exit("run benchmarks/run.py (it starts this worker with --worker jax)")
