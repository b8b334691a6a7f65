"""Benchmark the generated recurrent layers against Keras, PyTorch and GEMM floors.

Usage::

    python benchmarks/run.py                         # shapes S, M, L; all cells; 5 reps;
                                                     # threads 1 and all cores, side by side
    python benchmarks/run.py --shapes S,M --cells gru,lstm --reps 3
    python benchmarks/run.py --threads 1             # one regime only
    python benchmarks/run.py --tiny --reps 1 --json /tmp/out.json   # smoke test (seconds)

What is timed, per thread regime, shape and cell (all float32, ``return_sequences=True``, no
mask/dropout):

* ``numpy``      -- the generated NumPy module ``generated/<cell>_numpy.py``, through its
  functional core: ``forward(x, weights)`` and ``forward`` + ``backward(tape, d_outputs)``.
* ``floor``      -- the same matrix products alone, in NumPy, into preallocated buffers: the
  input projection (T*B, D) x (D, nU) once, T recurrent (B, U) x (U, nU) products forward;
  backward adds T products (B, nU) x (nU, U), the weight-gradient GEMMs (D, T*B) x (T*B, nU) and
  (U, T*B) x (T*B, nU) and the input gradient (T*B, nU) x (nU, D). (n = 1, 3, 4 gates.)
* ``keras``      -- ``keras.layers.SimpleRNN/GRU/LSTM`` (TensorFlow backend) called inside
  ``tf.function``; forward+BPTT is a ``tf.GradientTape`` gradient of ``sum(y * dy)`` with
  respect to the input and all weights.
* ``tf-loop`` / ``tf-fused`` -- the generated TensorFlow layers ``generated/<cell>_tf.py``
  (``implementation="loop" | "fused"``), same harness as Keras; skipped when the file is
  absent or the class cannot be built.
* ``tf-floor``   -- the ``floor``'s matrix products in TensorFlow (oneDNN) at the same shapes
  and dtype, each phase one ``tf.function``: the input projection, the T recurrent products in
  a ``tf.while_loop`` (``parallel_iterations=1``: one ``hs[t]`` read and one ``tf.matmul`` per
  step, the least a while-loop implementation does), then the T backward products in a second
  loop and the three all-steps gradient GEMMs (``transpose_a``/``transpose_b`` as TF's matmul
  gradients use). The fused TF op is judged against it as the NumPy layer is against ``floor``.
* ``keras-xla`` / ``tf-fused-xla`` -- with ``--xla`` only: Keras and the fused TF op in
  ``tf.function(jit_compile=True)``, gated like the rest; ``tf-fused-xla_over_keras-xla``
  compares the two compiled versions.
* ``torch``      -- ``torch.nn.RNN/GRU/LSTM`` (weights copied from Keras), only when ``torch``
  is importable; skipped otherwise.
* ``jax-fused`` / ``jax-scan`` -- the generated JAX module ``generated/<cell>_jax.py``, jitted:
  the ``jax.custom_vjp`` with the derived BPTT, and JAX autodiff through the plain ``lax.scan``
  (only when ``jax`` is importable). Compiled ahead of time; compile seconds are recorded apart
  (``compile_fwd_s``, ``compile_fwdbwd_s``) and are not in the timings. Their ``peak_bytes`` is
  XLA's ``memory_analysis()`` of the compiled forward+BPTT (arguments + outputs + temporaries,
  deterministic). See ``bench_jax.py``.

Thread regimes: ``--threads`` takes a comma list; the default ``1,<all cores>`` measures both
regimes in one command (the single-threaded one first), each with its own worker processes,
and prints their ratios side by side. Users run the default-thread regime; ``--threads 1``
shows the cost of the code itself when nothing competes for the cores.

Process isolation: every framework runs in its own subprocess per regime (this script
re-invokes itself with ``--worker tf|numpy|torch|jax``), so TensorFlow's thread pools never run
next to NumPy's BLAS threads and no framework's import skews another's timings. The NumPy
worker never imports TensorFlow. Every worker of a regime gets the same thread budget:
``OMP/OPENBLAS/MKL_NUM_THREADS`` in its environment, and in the TF worker
``tf.config.threading.set_intra_op_parallelism_threads(threads)`` and
``set_inter_op_parallelism_threads(threads)``; PyTorch gets ``torch.set_num_threads(threads)``;
the JAX worker gets ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``
in the 1-thread regime and XLA's defaults otherwise (JSON ``meta.jax_runtime``).
On a shared machine, read the multi-threaded regime with care: OpenBLAS's busy-waiting workers
collapse (10-50x slower steps) as soon as other processes compete for the cores, while
TensorFlow degrades gracefully (the load average before and after the run is recorded).

Method: each implementation is warmed up once (tf.function tracing happens there), then the
implementations of one worker are interleaved -- per repetition every implementation runs
forward then forward+BPTT, with the starting implementation rotated -- ``--reps`` times. We
report medians. Ratios (JSON ``ratios``, one row per regime, shape and cell):

* same process, median of per-repetition ratios: ``numpy_over_floor``, ``tf-loop_over_keras``,
  ``tf-fused_over_keras``, ``tf-fused_over_tf-floor``, ``tf-loop_over_tf-floor`` and
  ``keras_over_tf-floor``;
* across processes, ratio of medians: ``numpy_over_keras``, ``numpy_over_torch`` and
  ``tf-floor_over_floor`` (oneDNN's GEMMs against OpenBLAS's);
* JAX: ``jax-fused_over_jax-scan`` (same process, median of per-repetition ratios),
  ``jax-fused_over_keras`` and ``jax-scan_over_keras`` (across processes, ratio of medians), and
  ``jax-fused_peak_over_jax-scan`` (XLA's forward+BPTT memory, fused / scan).

Each ends in ``_fwd`` or ``_fwdbwd``. JSON ``summary`` holds the forward+BPTT headline ratios as
``{shape: {cell: {ratio: {threads: value}}}}``, both regimes side by side.

Each timing also records the process's CPU time; the ``cores`` column (JSON
``fwdbwd_cores_used``) is the median CPU-seconds / wall-seconds of forward+BPTT, i.e. how many
cores an implementation actually kept busy. Check it when comparing frameworks: a thread budget
is a request, and a runtime may use helper threads beyond it.

Correctness gate: in each regime the TF worker builds each Keras layer (seeded, with random
non-zero biases) and saves its weights, inputs, outputs and gradients. Before timing, each other
implementation gets copies of those weights and must reproduce the Keras outputs to 1e-4 (max
abs) and the gradients to 1e-3 relative to the largest reference gradient entry; otherwise it is
marked ``MISMATCH`` and its timings are not reported. (The floors compute nothing to check.)

Memory: peak bytes of one forward+BPTT for the generated NumPy layer, measured with
``tracemalloc`` (NumPy reports its buffers to it), plus the arrays that exist beforehand
(x, dy, weights). It is compared with an analytic target, inputs + stored activations +
weights + gradients:

    4 bytes * ( B*T*D + B*T*U                 inputs x and d_output
              + k*(T+1)*B*U                    stored activations (k per cell, below)
              + P                              weights
              + B*T*D + P )                    gradients (d_x and d_weights)

with k = 1 for SimpleRNN (h), 5 for GRU (h, z, r, candidate, recurrent-kernel candidate
product needed by reset_after) and 6 for LSTM (h, c, i, f, g, o). For TensorFlow the peak is
what ``tf.config.experimental.get_memory_info("CPU:0")["peak"]`` reports after
``reset_memory_stats`` around one forward+BPTT (TF's own allocator only; it is not comparable
byte for byte with tracemalloc, and reads ``n/a`` where unsupported or zero). PyTorch: ``n/a``.

Machine (JSON ``meta.machine``, ``meta.blas``, ``meta.tf_runtime``, ``meta.versions``): CPU
model, CPU count and the CPUs this process may use, SIMD flags, load average before and after,
relevant environment variables; per regime, ``threadpoolctl.threadpool_info()`` inside the NumPy
worker (OpenBLAS's version, kernel ``architecture`` and ``num_threads``; null without
threadpoolctl, an optional dependency from the ``analyze`` extra) and the TF worker's thread
settings and build info; NumPy, TensorFlow and Keras versions.

Finally ``rnngen build --out <tmpdir>`` is timed from a cold start (a fresh process and a fresh
output folder each time) for all shipped specs.

Results go to ``rich`` tables on screen and to ``--json`` (default
``benchmarks/results/latest.json``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_jax import worker_jax, xla_flags
from bench_report import compute_ratios, print_tables, summarize
from bench_workers import CELLS, GRAD_RTOL, OUT_TOL, SHAPES, WORKERS, _median

WORKERS = {**WORKERS, "jax": worker_jax}

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "latest.json"
#: CPU flags worth knowing when reading GEMM timings
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")
#: environment variables that change what the frameworks do
ENV_VARS = (
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "TF_ENABLE_ONEDNN_OPTS",
)


# -- parent: orchestrate, tabulate, save -------------------------------------------------------


def _run_worker(kind, task, tmp):
    tag = f"{kind}_{task['threads']}"
    task_path, out_path = Path(tmp) / f"task_{tag}.json", Path(tmp) / f"out_{tag}.json"
    task_path.write_text(json.dumps(task))
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(task["threads"])
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if kind == "jax":  # XLA's CPU thread pools take their size from XLA_FLAGS, not OMP
        flags = xla_flags(task["threads"], os.environ.get("XLA_FLAGS"))
        if flags:
            env["XLA_FLAGS"] = flags
        else:
            env.pop("XLA_FLAGS", None)
        env.pop("JAX_ENABLE_X64", None)  # float32, as every other implementation
    if kind == "numpy":
        # Some machines pin OpenBLAS to an older kernel (OPENBLAS_CORETYPE=Haswell) to dodge
        # bugs of old OpenBLAS builds; it slows a current NumPy's GEMMs by ~25%. The benchmark
        # (only) lets OpenBLAS pick its own kernel; tests and CI keep the machine's setting.
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        kind,
        "--task",
        str(task_path),
        "--out",
        str(out_path),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not out_path.exists():
        tail = (proc.stderr or proc.stdout)[-2000:]
        return {
            "results": [],
            "error": f"worker {kind} failed (rc={proc.returncode}): {tail}",
            "wall_s": wall,
        }
    out = json.loads(out_path.read_text())
    out["wall_s"] = wall
    return out


def _time_build(reps):
    exe = shutil.which("rnngen")
    base = [exe] if exe else [sys.executable, "-m", "rnngen"]
    times, error = [], None
    for _ in range(reps):
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            proc = subprocess.run(base + ["build", "--out", out], capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            if proc.returncode != 0:
                error = (proc.stderr or proc.stdout)[-500:]
                break
            files = sorted(p.name for p in Path(out).iterdir())
    return {
        "command": "rnngen build --out <tmpdir>",
        "runs_s": times,
        "median_s": _median(times),
        "error": error,
        "files": None if error else files,
    }


def _torch_available():
    return _importable("torch")


def _importable(name):
    try:
        import importlib.util

        return importlib.util.find_spec(name) is not None
    except Exception:  # noqa: BLE001
        return False


def _loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _machine():
    """What the timings ran on (the parent's view; the workers add their runtime details)."""
    model, flags = None, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model is None:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:
        available = None
    return {
        "cpu_model": model or platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "cpus_available": available,
        "simd_flags": [f for f in SIMD_FLAGS if f in flags] if flags else None,
        "arch": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "env": {v: os.environ.get(v) for v in ENV_VARS},
        "loadavg_start": _loadavg(),
    }


def _git_state():
    """The commit measured, and whether generated/ differs from it (code being edited)."""

    def git(*args):
        proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return proc.stdout.rstrip() if proc.returncode == 0 else None

    status = git("status", "--porcelain", "--", "generated", "benchmarks")
    return {
        "commit": git("rev-parse", "HEAD"),
        "uncommitted_changes": None if status is None else status.splitlines(),
        # what was measured, exactly, even when generated/ was being rewritten at the time
        "generated_sha256": {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:16]
            for p in sorted((ROOT / "generated").glob("*.py"))
        },
    }


def _contention(results):
    """Single-threaded timings whose process kept less than 0.9 of a core busy (median CPU /
    wall seconds): other processes took the core, so read those timings with care."""
    return [
        f"threads 1, {r['shape']} {r['cell']} {r['impl']}: {r['fwdbwd_cores_used']:.2f} cores"
        for r in results
        if r.get("threads") == 1 and (r.get("fwdbwd_cores_used") or 1.0) < 0.9
    ]


def _parse_threads(text, parser):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        parser.error(f"--threads takes a comma list of positive integers, got {text!r}")
    return list(dict.fromkeys(values))  # keep order, drop repeats


def main(argv=None):
    default_threads = os.cpu_count() or 1
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="S,M,L", help="comma list of S, M, L")
    parser.add_argument("--cells", default=",".join(CELLS), help="comma list of cells")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--tiny", action="store_true", help="one tiny shape (smoke test)")
    parser.add_argument(
        "--threads",
        default=f"1,{default_threads}",
        help="comma list of thread budgets, one regime each (default: 1 and all cores, "
        f"here 1,{default_threads})",
    )
    parser.add_argument(
        "--build-reps", type=int, default=3, help="cold `rnngen build` runs (0 to skip)"
    )
    parser.add_argument(
        "--xla",
        action="store_true",
        help="also time Keras and the fused TF op in tf.function(jit_compile=True)",
    )
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--task", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        task = json.loads(args.task.read_text())
        args.out.write_text(json.dumps(WORKERS[args.worker](task)))
        return 0

    threads_list = _parse_threads(args.threads, parser)
    shapes = ["tiny"] if args.tiny else [s.strip() for s in args.shapes.split(",") if s.strip()]
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    for s in shapes:
        if s not in SHAPES:
            parser.error(f"unknown shape {s!r}; choose from {', '.join(SHAPES)}")
    for c in cells:
        if c not in CELLS:
            parser.error(f"unknown cell {c!r}; choose from {', '.join(CELLS)}")
    if args.reps < 1:
        parser.error("--reps must be >= 1")
    cases = [
        {"shape": s, "cell": c, **dict(zip("BTDU", SHAPES[s], strict=True))}
        for s in shapes
        for c in cells
    ]

    report = {
        "meta": {
            "shapes": shapes,
            "shape_dims": {s: SHAPES[s] for s in shapes},
            "cells": cells,
            "reps": args.reps,
            "xla": args.xla,
            "threads": threads_list,
            "default_threads": default_threads,
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "dtype": "float32",
            "tolerances": {"output_max_abs": OUT_TOL, "grad_max_rel": GRAD_RTOL},
            "ratio_method": {
                "numpy_over_floor, tf-*_over_keras, *_over_tf-floor": "median of "
                "per-repetition ratios (interleaved in one process)",
                "numpy_over_keras, numpy_over_torch, tf-floor_over_floor": "ratio of medians "
                "(separate processes)",
            },
            "machine": _machine(),
            "git": _git_state(),
            "blas": {},
            "tf_runtime": {},
            "jax_runtime": {},
            "versions": {},
            "workers": {},
        },
        "results": [],
        "errors": [],
    }
    meta = report["meta"]
    kinds = ["tf", "numpy"] + (["torch"] if _torch_available() else [])
    kinds += ["jax"] if _importable("jax") else []
    for kind in ("torch", "jax"):
        if kind not in kinds:
            meta["workers"][kind] = f"skipped: {kind} not importable"
    with tempfile.TemporaryDirectory() as tmp:
        for threads in threads_list:
            refdir = Path(tmp) / f"ref_{threads}"
            refdir.mkdir()
            task = {
                "cases": cases,
                "reps": args.reps,
                "threads": threads,
                "refdir": str(refdir),
                "xla": args.xla,
            }
            for kind in kinds:  # tf first: it writes the Keras references
                out = _run_worker(kind, task, tmp)
                for r in out["results"]:
                    r["threads"] = threads
                report["results"] += out["results"]
                meta["versions"].update(out.get("versions", {}))
                meta["workers"][f"{kind}@{threads}"] = {
                    "wall_s": out["wall_s"],
                    "loadavg_end": _loadavg(),
                }
                runtime = out.get("runtime", {})
                if kind == "numpy":
                    meta["blas"][str(threads)] = runtime.get("threadpool_info")
                elif kind == "tf":
                    meta["tf_runtime"][str(threads)] = runtime
                elif kind == "jax":
                    meta["jax_runtime"][str(threads)] = runtime
                if out.get("error"):
                    report["errors"].append(f"threads {threads}: {out['error']}")
    meta["machine"]["loadavg_end"] = _loadavg()
    meta["contention"] = _contention(report["results"])
    report["ratios"] = compute_ratios(report["results"])
    report["summary"] = summarize(report["ratios"], threads_list)
    report["build"] = _time_build(args.build_reps) if args.build_reps > 0 else None
    print_tables(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {args.json}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
