"""Benchmark the generated recurrent layers against Keras, PyTorch and a GEMM floor.

Usage::

    python benchmarks/run.py                         # shapes S, M, L; all cells; 5 reps
    python benchmarks/run.py --shapes S,M --cells gru,lstm --reps 3
    python benchmarks/run.py --tiny --reps 1 --json /tmp/out.json   # smoke test (seconds)

What is timed, per shape and cell (all float32, ``return_sequences=True``, no mask/dropout):

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
* ``torch``      -- ``torch.nn.RNN/GRU/LSTM`` (weights copied from Keras), only when ``torch``
  is importable; skipped otherwise.

Process isolation: every framework runs in its own subprocess (this script re-invokes itself
with ``--worker tf|numpy|torch``), so TensorFlow's thread pools never run next to NumPy's
BLAS threads and no framework's import skews another's timings. The NumPy worker never imports
TensorFlow. Every worker gets the same thread budget (``--threads``, default: all cores):
``OMP/OPENBLAS/MKL_NUM_THREADS`` in its environment, and in the TF worker
``tf.config.threading.set_intra_op_parallelism_threads(threads)`` and
``set_inter_op_parallelism_threads(threads)``; PyTorch gets ``torch.set_num_threads(threads)``.
On a shared machine prefer ``--threads 1``: with several BLAS threads, OpenBLAS's busy-waiting
workers collapse (10-50x slower steps) as soon as other processes compete for the cores, while
TensorFlow degrades gracefully, so NumPy-vs-Keras ratios from a loaded machine mislead.

Method: each implementation is warmed up once (tf.function tracing happens there), then the
implementations of one worker are interleaved -- per repetition every implementation runs
forward then forward+BPTT, with the starting implementation rotated -- ``--reps`` times. We
report medians. Ratios:

* generated/floor (NumPy vs floor) and generated-TF/Keras are computed per repetition index
  (both run interleaved in the same process) and the median of those ratios is reported;
* generated-NumPy/Keras and generated-NumPy/PyTorch compare different processes, so they are
  ratios of medians (no per-repetition pairing is possible across subprocesses).

Each timing also records the process's CPU time; the ``cores`` column (JSON
``fwdbwd_cores_used``) is the median CPU-seconds / wall-seconds of forward+BPTT, i.e. how many
cores an implementation actually kept busy. Check it when comparing frameworks: a thread budget
is a request, and a runtime may use helper threads beyond it.

Correctness gate: the TF worker builds each Keras layer (seeded, with random non-zero biases)
and saves its weights, inputs, outputs and gradients. Before timing, each other implementation
gets copies of those weights and must reproduce the Keras outputs to 1e-4 (max abs) and the
gradients to 1e-3 relative to the largest reference gradient entry; otherwise it is marked
``MISMATCH`` and its timings are not reported.

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

Finally ``rnngen build --out <tmpdir>`` is timed from a cold start (a fresh process and a fresh
output folder each time) for all shipped specs.

Results go to a ``rich`` table on screen and to ``--json`` (default
``benchmarks/results/latest.json``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "latest.json"

#: name -> (batch, time, features, units)
SHAPES = {
    "S": (16, 200, 16, 64),
    "M": (64, 100, 64, 256),
    "L": (256, 50, 128, 512),
    "tiny": (2, 5, 3, 4),
}
#: cell -> (class name, gates n, stored activations k per step)
CELLS = {
    "simple_rnn": ("SimpleRNN", 1, 1),
    "gru": ("GRU", 3, 5),
    "lstm": ("LSTM", 4, 6),
}
OUT_TOL = 1e-4
GRAD_RTOL = 1e-3
SEED = 1234


# -- shared helpers ---------------------------------------------------------------------------


def _median(xs):
    return statistics.median(xs) if xs else None


def _time(fn):
    """(wall seconds, CPU seconds of this process) for one call."""
    gc.collect()
    gc.disable()
    try:
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        return time.perf_counter() - t0, time.process_time() - c0
    finally:
        gc.enable()


def _interleaved(impls, reps):
    """impls: name -> (fwd, fwdbwd). Returns name -> {"fwd": [s...], "fwdbwd": [s...]}."""
    names = list(impls)
    out = {n: {"fwd": [], "fwdbwd": [], "fwd_cpu": [], "fwdbwd_cpu": []} for n in names}
    for n in names:  # warm-up (and tf.function tracing)
        impls[n][0]()
        impls[n][1]()
    for rep in range(reps):
        k = rep % len(names)
        for n in names[k:] + names[:k]:
            for phase, fn in zip(("fwd", "fwdbwd"), impls[n], strict=True):
                wall, cpu = _time(fn)
                out[n][phase].append(wall)
                out[n][f"{phase}_cpu"].append(cpu)
    return out


def _errors(y, grads, ref):
    """Max abs output error and max gradient error relative to the largest reference entry."""
    import numpy as np

    out_err = float(np.max(np.abs(np.asarray(y) - ref["y"]))) if ref["y"].size else 0.0
    grad_err = 0.0
    for i, g in enumerate(grads):
        r = ref[f"g{i}"]
        if r.size:
            scale = max(1.0, float(np.max(np.abs(r))))
            grad_err = max(grad_err, float(np.max(np.abs(np.asarray(g) - r))) / scale)
    return out_err, grad_err


def _gate(record, out_err, grad_err):
    record["max_abs_err_output"] = out_err
    record["max_rel_err_grads"] = grad_err
    ok = out_err <= OUT_TOL and grad_err <= GRAD_RTOL
    record["status"] = "ok" if ok else "MISMATCH"
    return ok


def _fill_times(record, times):
    record["fwd_s"] = times["fwd"]
    record["fwdbwd_s"] = times["fwdbwd"]
    record["fwd_median_s"] = _median(times["fwd"])
    record["fwdbwd_median_s"] = _median(times["fwdbwd"])
    # CPU seconds / wall seconds: how many cores the implementation really kept busy
    record["fwdbwd_cores_used"] = _median(
        [c / w for c, w in zip(times["fwdbwd_cpu"], times["fwdbwd"], strict=True) if w > 0]
    )
    record["fwd_min_s"] = min(times["fwd"], default=None)
    record["fwdbwd_min_s"] = min(times["fwdbwd"], default=None)


def _per_rep_ratio(a, b):
    return _median([x / y for x, y in zip(a, b, strict=True) if y > 0])


# -- TF worker: reference, Keras, generated TF layers ------------------------------------------


def worker_tf(task):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import numpy as np
    import tensorflow as tf

    threads = task["threads"]
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras

    sys.path.insert(0, str(ROOT))
    results = []
    for case in task["cases"]:
        B, T, D, U = case["B"], case["T"], case["D"], case["U"]
        cell = case["cell"]
        cls_name = CELLS[cell][0]
        rng = np.random.default_rng(SEED)
        x = rng.standard_normal((B, T, D)).astype(np.float32)
        dy = rng.standard_normal((B, T, U)).astype(np.float32)
        keras.utils.set_random_seed(SEED)
        layer = getattr(keras.layers, cls_name)(U, return_sequences=True)
        layer.build((B, T, D))
        weights = layer.get_weights()
        for i, w in enumerate(weights):
            if i >= 2:  # biases: make them non-zero so the check covers them
                weights[i] = (w + 0.1 * rng.standard_normal(w.shape)).astype(np.float32)
        layer.set_weights(weights)
        xt, dyt = tf.constant(x), tf.constant(dy)

        def harness(lay, xt=xt, dyt=dyt):
            fwd_fn = tf.function(lambda a: lay(a))

            @tf.function
            def fwdbwd_fn(a, d):
                with tf.GradientTape() as tape:
                    tape.watch(a)
                    y = lay(a)
                    loss = tf.reduce_sum(y * d)
                return y, tape.gradient(loss, [a] + list(lay.trainable_weights))

            def fwd(fwd_fn=fwd_fn):
                return fwd_fn(xt).numpy()

            def fwdbwd(fwdbwd_fn=fwdbwd_fn):
                y, g = fwdbwd_fn(xt, dyt)
                return y.numpy(), [t.numpy() for t in g]

            return fwd, fwdbwd

        k_fwd, k_fwdbwd = harness(layer)
        y_ref, g_ref = k_fwdbwd()
        ref = {"x": x, "dy": dy, "y": y_ref}
        for i, w in enumerate(weights):
            ref[f"w{i}"] = w
        for i, g in enumerate(g_ref):
            ref[f"g{i}"] = g
        np.savez(Path(task["refdir"]) / f"{case['shape']}_{cell}.npz", **ref)

        impls = {"keras": (k_fwd, k_fwdbwd)}
        records = {
            "keras": {
                "impl": "keras",
                "framework": "tensorflow",
                "status": "ok",
                "max_abs_err_output": 0.0,
                "max_rel_err_grads": 0.0,
            }
        }
        tf_path = ROOT / "generated" / f"{cell}_tf.py"
        for impl in ("loop", "fused"):
            name = f"tf-{impl}"
            rec = {"impl": name, "framework": "tensorflow (generated)"}
            records[name] = rec
            if not tf_path.exists():
                rec["status"] = f"skipped: {tf_path.relative_to(ROOT)} not found"
                continue
            try:
                import importlib

                mod = importlib.import_module(f"generated.{cell}_tf")
                gen = getattr(mod, cls_name)(U, return_sequences=True, implementation=impl)
                gen(xt[:, :1])  # build
                gen.set_weights(weights)
                g_fwd, g_fwdbwd = harness(gen)
                y, g = g_fwdbwd()
            except Exception as err:  # noqa: BLE001 - report and carry on
                rec["status"] = f"skipped: {type(err).__name__}: {str(err)[:200]}"
                continue
            if _gate(rec, *_errors(y, g, ref)):
                impls[name] = (g_fwd, g_fwdbwd)
        times = _interleaved(impls, task["reps"])
        for name, t in times.items():
            _fill_times(records[name], t)
        for name in impls:
            if name != "keras":
                rec = records[name]
                rec["ratio_vs_keras_fwd_per_rep"] = _per_rep_ratio(
                    times[name]["fwd"], times["keras"]["fwd"]
                )
                rec["ratio_vs_keras_fwdbwd_per_rep"] = _per_rep_ratio(
                    times[name]["fwdbwd"], times["keras"]["fwdbwd"]
                )
        for name, (_, run_fb) in impls.items():
            peak = "n/a"
            try:
                tf.config.experimental.reset_memory_stats("CPU:0")
                run_fb()
                peak = int(tf.config.experimental.get_memory_info("CPU:0")["peak"]) or "n/a"
            except Exception:  # noqa: BLE001 - not supported on every device
                pass
            records[name]["peak_bytes"] = peak
        for rec in records.values():
            rec.setdefault("peak_bytes", None)
            rec.update(shape=case["shape"], cell=cell)
            results.append(rec)
    return {
        "results": results,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }


# -- NumPy worker: generated NumPy layers and the GEMM floor ------------------------------------


def _floor(B, T, D, U, n, rng):
    import numpy as np

    f32 = np.float32
    nU = n * U
    xs = rng.standard_normal((T * B, D)).astype(f32)
    wx = (rng.standard_normal((D, nU)) * 0.1).astype(f32)
    wh = (rng.standard_normal((U, nU)) * 0.1).astype(f32)
    hs = rng.standard_normal((T, B, U)).astype(f32)
    ds = rng.standard_normal((T, B, nU)).astype(f32)
    proj = np.empty((T * B, nU), f32)
    rec = np.empty((B, nU), f32)
    dh = np.empty((B, U), f32)
    dwx = np.empty((D, nU), f32)
    dwh = np.empty((U, nU), f32)
    dx = np.empty((T * B, D), f32)
    whT, wxT = wh.T, wx.T
    hs2, ds2 = hs.reshape(T * B, U), ds.reshape(T * B, nU)

    def fwd():
        np.matmul(xs, wx, out=proj)
        for t in range(T):
            np.matmul(hs[t], wh, out=rec)

    def fwdbwd():
        fwd()
        for t in range(T - 1, -1, -1):
            np.matmul(ds[t], whT, out=dh)
        np.matmul(xs.T, ds2, out=dwx)
        np.matmul(hs2.T, ds2, out=dwh)
        np.matmul(ds2, wxT, out=dx)

    return fwd, fwdbwd


def worker_numpy(task):
    import importlib
    import tracemalloc

    import numpy as np

    sys.path.insert(0, str(ROOT))
    results = []
    for case in task["cases"]:
        B, T, D, U = case["B"], case["T"], case["D"], case["U"]
        cell = case["cell"]
        cls_name, n, k = CELLS[cell]
        rec = {"impl": "numpy", "framework": "numpy (generated)"}
        floor = {"impl": "floor", "framework": "numpy GEMMs only", "status": "ok"}
        ref_path = Path(task["refdir"]) / f"{case['shape']}_{cell}.npz"
        impls = {}
        if not ref_path.exists():
            rec["status"] = "MISMATCH: no Keras reference (TF worker failed?)"
        else:
            ref = dict(np.load(ref_path))
            mod = importlib.import_module(f"generated.{cell}_numpy")
            layer = getattr(mod, cls_name)(U, return_sequences=True)
            nw = sum(1 for key in ref if key.startswith("w"))
            layer.set_weights([ref[f"w{i}"] for i in range(nw)])
            W = layer.weights
            x, dy = ref["x"], ref["dy"]

            def g_fwd(mod=mod, W=W, x=x):
                return mod.forward(x, W)[0]

            def g_fwdbwd(mod=mod, W=W, x=x, dy=dy):
                y, _, tape = mod.forward(x, W)
                d_x, _, d_w = mod.backward(tape, dy)
                return y, [d_x] + list(d_w.values())

            y, g = g_fwdbwd()
            if _gate(rec, *_errors(y, g, ref)):
                impls["numpy"] = (g_fwd, g_fwdbwd)
                # memory: peak of one forward+BPTT, plus the arrays that exist beforehand
                pre = x.nbytes + dy.nbytes + sum(w.nbytes for w in W.values())
                gc.collect()
                tracemalloc.start()
                base = tracemalloc.get_traced_memory()[0]
                out = g_fwdbwd()
                peak = tracemalloc.get_traced_memory()[1] - base
                tracemalloc.stop()
                del out
                rec["peak_bytes"] = int(peak + pre)
        impls["floor"] = _floor(B, T, D, U, n, np.random.default_rng(SEED))
        times = _interleaved(impls, task["reps"])
        _fill_times(floor, times["floor"])
        if "numpy" in times:
            _fill_times(rec, times["numpy"])
            rec["ratio_vs_floor_fwd_per_rep"] = _per_rep_ratio(
                times["numpy"]["fwd"], times["floor"]["fwd"]
            )
            rec["ratio_vs_floor_fwdbwd_per_rep"] = _per_rep_ratio(
                times["numpy"]["fwdbwd"], times["floor"]["fwdbwd"]
            )
        P = 4 * n * U * (D + U) + {"simple_rnn": U, "gru": 2 * 3 * U, "lstm": 4 * U}[cell]
        parts = {
            "inputs": 4 * (B * T * D + B * T * U),
            "stored_activations": 4 * k * (T + 1) * B * U,
            "weights": P,
            "gradients": 4 * B * T * D + P,
        }
        target = sum(parts.values())
        rec["memory_target_bytes"] = target
        rec["memory_target_parts"] = parts
        if rec.get("peak_bytes"):
            rec["peak_over_target"] = rec["peak_bytes"] / target
        floor["peak_bytes"] = None
        for r in (rec, floor):
            r.update(shape=case["shape"], cell=cell)
            results.append(r)
        assert "tensorflow" not in sys.modules, "the NumPy worker must not import TensorFlow"
    return {"results": results, "versions": {"numpy": np.__version__}}


# -- PyTorch worker (optional) -------------------------------------------------------------------


def _swap_first_blocks(a, U):
    """Swap the first two U-wide blocks of the last axis (Keras z, r, h <-> PyTorch r, z, n)."""
    import numpy as np

    return np.concatenate([a[..., U : 2 * U], a[..., :U], a[..., 2 * U :]], axis=-1)


def _torch_weights(cell, ws, U):
    """Keras weight list -> (weight_ih, weight_hh, bias_ih, bias_hh) in PyTorch's layout."""
    import numpy as np

    kernel, rk = ws[0], ws[1]
    if cell == "gru":  # Keras gate order z, r, h; PyTorch r, z, n

        def order(a):
            return _swap_first_blocks(a, U)

        return order(kernel).T, order(rk).T, order(ws[2][0]), order(ws[2][1])
    # SimpleRNN and LSTM (i, f, c/g, o in both)
    return kernel.T, rk.T, ws[2], np.zeros_like(ws[2])


def worker_torch(task):
    import numpy as np
    import torch

    torch.set_num_threads(task["threads"])
    results = []
    for case in task["cases"]:
        D, U = case["D"], case["U"]
        cell = case["cell"]
        rec = {
            "impl": "torch",
            "framework": "pytorch",
            "shape": case["shape"],
            "cell": cell,
            "peak_bytes": "n/a",
        }
        results.append(rec)
        ref_path = Path(task["refdir"]) / f"{case['shape']}_{cell}.npz"
        if not ref_path.exists():
            rec["status"] = "MISMATCH: no Keras reference"
            continue
        ref = dict(np.load(ref_path))
        ws = [ref[f"w{i}"] for i in range(sum(1 for key in ref if key.startswith("w")))]
        mod = {"simple_rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell]
        net = mod(D, U, batch_first=True)
        params = _torch_weights(cell, ws, U)
        with torch.no_grad():
            for p, v in zip(
                (net.weight_ih_l0, net.weight_hh_l0, net.bias_ih_l0, net.bias_hh_l0),
                params,
                strict=True,
            ):
                p.copy_(torch.from_numpy(np.ascontiguousarray(v)))
        x = torch.from_numpy(ref["x"])
        dy = torch.from_numpy(ref["dy"])

        def fwd(net=net, x=x):
            with torch.no_grad():
                return net(x)[0]

        def fwdbwd(net=net, x=x, dy=dy, cell=cell):
            xg = x.clone().requires_grad_(True)
            net.zero_grad()
            y = net(xg)[0]
            y.backward(dy)
            wi, wh, bi, bh = (
                p.grad.numpy()
                for p in (net.weight_ih_l0, net.weight_hh_l0, net.bias_ih_l0, net.bias_hh_l0)
            )
            if cell == "gru":  # back to Keras's layout and gate order
                U = wh.shape[1]
                g = [
                    _swap_first_blocks(wi.T, U),
                    _swap_first_blocks(wh.T, U),
                    np.stack([_swap_first_blocks(bi, U), _swap_first_blocks(bh, U)]),
                ]
            else:
                g = [wi.T, wh.T, bi + bh]
            return y.detach().numpy(), [xg.grad.numpy()] + g

        y, g = fwdbwd()
        if _gate(rec, *_errors(y, g, ref)):
            _fill_times(rec, _interleaved({"torch": (fwd, fwdbwd)}, task["reps"])["torch"])
    return {"results": results, "versions": {"torch": torch.__version__}}


WORKERS = {"tf": worker_tf, "numpy": worker_numpy, "torch": worker_torch}


# -- parent: orchestrate, tabulate, save -------------------------------------------------------


def _run_worker(kind, task, tmp):
    task_path, out_path = Path(tmp) / f"task_{kind}.json", Path(tmp) / f"out_{kind}.json"
    task_path.write_text(json.dumps(task))
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(task["threads"])
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
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
    try:
        import importlib.util

        return importlib.util.find_spec("torch") is not None
    except Exception:  # noqa: BLE001
        return False


def _ratio(a, b):
    return a / b if a and b else None


def _compute_ratios(results):
    by = {}
    for r in results:
        by.setdefault((r["shape"], r["cell"]), {})[r["impl"]] = r
    ratios = []
    for (shape, cell), impls in by.items():
        gen = impls.get("numpy", {})
        row = {"shape": shape, "cell": cell}
        for other in ("keras", "torch"):
            o = impls.get(other, {})
            for phase in ("fwd", "fwdbwd"):
                row[f"numpy_over_{other}_{phase}"] = _ratio(
                    gen.get(f"{phase}_median_s"), o.get(f"{phase}_median_s")
                )
        for phase in ("fwd", "fwdbwd"):
            row[f"numpy_over_floor_{phase}"] = gen.get(f"ratio_vs_floor_{phase}_per_rep")
            for impl in ("tf-loop", "tf-fused"):
                row[f"{impl}_over_keras_{phase}"] = impls.get(impl, {}).get(
                    f"ratio_vs_keras_{phase}_per_rep"
                )
        row["numpy_peak_over_target"] = gen.get("peak_over_target")
        ratios.append(row)
    return ratios


def _fmt_ms(s):
    return "-" if s is None else f"{1e3 * s:.2f}"


def _fmt_mb(b):
    if isinstance(b, str) or b is None:
        return b or "-"
    return f"{b / 2**20:.1f}" if b >= 2**20 else f"{b / 2**20:.3f}"


def _fmt_x(r):
    return "-" if r is None else f"{r:.2f}x"


def _print_tables(report):
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(shutil.get_terminal_size((150, 24)).columns, 150))
    order = ["numpy", "floor", "keras", "tf-loop", "tf-fused", "torch"]
    for shape in report["meta"]["shapes"]:
        B, T, D, U = SHAPES[shape]
        table = Table(
            title=f"shape {shape}: batch {B} x time {T} x features {D} x units {U} "
            f"(float32, median of {report['meta']['reps']} reps)"
        )
        for col in (
            "cell",
            "impl",
            "status",
            "fwd ms",
            "fwd+BPTT ms",
            "peak MB",
            "target MB",
            "out err",
            "grad rel err",
            "cores",
        ):
            table.add_column(
                col, justify="left" if col in ("cell", "impl", "status") else "right", no_wrap=True
            )
        rows = [r for r in report["results"] if r["shape"] == shape]
        rows.sort(
            key=lambda r: (
                list(CELLS).index(r["cell"]),
                order.index(r["impl"]) if r["impl"] in order else 99,
            )
        )
        for r in rows:
            status = r.get("status", "?")
            style = (
                "red"
                if status.startswith("MISMATCH")
                else ("dim" if status.startswith("skipped") else None)
            )
            err = r.get("max_abs_err_output")
            gerr = r.get("max_rel_err_grads")
            table.add_row(
                r["cell"],
                r["impl"],
                status[:60],
                _fmt_ms(r.get("fwd_median_s")),
                _fmt_ms(r.get("fwdbwd_median_s")),
                _fmt_mb(r.get("peak_bytes")),
                _fmt_mb(r.get("memory_target_bytes")),
                "-" if err is None else f"{err:.1e}",
                "-" if gerr is None else f"{gerr:.1e}",
                "-" if r.get("fwdbwd_cores_used") is None else f"{r['fwdbwd_cores_used']:.2f}",
                style=style,
            )
        console.print(table)
    rt = Table(
        title="ratios (numpy/floor and tf-*/keras: median of per-rep ratios, same "
        "process; numpy/keras and numpy/torch: ratio of medians, across processes)"
    )
    cols = [
        ("shape", "shape"),
        ("cell", "cell"),
        ("np/keras fwd", "numpy_over_keras_fwd"),
        ("np/keras f+b", "numpy_over_keras_fwdbwd"),
        ("np/torch fwd", "numpy_over_torch_fwd"),
        ("np/torch f+b", "numpy_over_torch_fwdbwd"),
        ("np/floor fwd", "numpy_over_floor_fwd"),
        ("np/floor f+b", "numpy_over_floor_fwdbwd"),
        ("tfloop/keras f+b", "tf-loop_over_keras_fwdbwd"),
        ("tffused/keras f+b", "tf-fused_over_keras_fwdbwd"),
        ("np peak/target", "numpy_peak_over_target"),
    ]
    for title, _ in cols:
        rt.add_column(title, justify="right", no_wrap=True)
    for row in report["ratios"]:
        rt.add_row(row["shape"], row["cell"], *[_fmt_x(row.get(key)) for _, key in cols[2:]])
    console.print(rt)
    b = report.get("build")
    if b:
        if b.get("error"):
            console.print(f"[red]rnngen build failed:[/red] {b['error']}")
        else:
            runs = ", ".join(f"{t:.2f}" for t in b["runs_s"])
            console.print(
                f"rnngen build (cold, all shipped specs): median {b['median_s']:.2f} s "
                f"(runs: {runs} s)"
            )
    for err in report.get("errors", []):
        console.print(f"[red]{err}[/red]")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="S,M,L", help="comma list of S, M, L")
    parser.add_argument("--cells", default=",".join(CELLS), help="comma list of cells")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--tiny", action="store_true", help="one tiny shape (smoke test)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--build-reps", type=int, default=3, help="cold `rnngen build` runs (0 to skip)"
    )
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--task", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        task = json.loads(args.task.read_text())
        args.out.write_text(json.dumps(WORKERS[args.worker](task)))
        return 0

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
            "threads": args.threads,
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "dtype": "float32",
            "tolerances": {"output_max_abs": OUT_TOL, "grad_max_rel": GRAD_RTOL},
            "ratio_method": {
                "numpy_over_floor, tf_over_keras": "median of per-repetition ratios "
                "(interleaved in one process)",
                "numpy_over_keras, numpy_over_torch": "ratio of medians (separate processes)",
            },
            "versions": {},
            "workers": {},
        },
        "results": [],
        "errors": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        refdir = Path(tmp) / "ref"
        refdir.mkdir()
        task = {"cases": cases, "reps": args.reps, "threads": args.threads, "refdir": str(refdir)}
        kinds = ["tf", "numpy"] + (["torch"] if _torch_available() else [])
        if "torch" not in kinds:
            report["meta"]["workers"]["torch"] = "skipped: torch not importable"
        for kind in kinds:  # tf first: it writes the Keras references
            out = _run_worker(kind, task, tmp)
            report["results"] += out["results"]
            report["meta"]["versions"].update(out.get("versions", {}))
            report["meta"]["workers"][kind] = {"wall_s": out["wall_s"]}
            if out.get("error"):
                report["errors"].append(out["error"])
    report["ratios"] = _compute_ratios(report["results"])
    report["build"] = _time_build(args.build_reps) if args.build_reps > 0 else None
    _print_tables(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {args.json}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
