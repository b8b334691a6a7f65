"""The benchmark's worker processes: TF (Keras reference, generated TF layers, TF GEMM floor),
NumPy (generated NumPy layers, NumPy GEMM floor) and PyTorch; the JAX worker is in
``bench_jax.py``. ``run.py`` starts each one in its own subprocess
(``run.py --worker tf|numpy|torch|jax``); the method is described in its docstring.
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

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


def _tf_floor(tf, B, T, D, U, n, rng):
    """The NumPy floor's matrix products in TensorFlow (oneDNN), same shapes and dtype.

    One ``tf.function`` per phase. The T recurrent products run in a ``tf.while_loop`` with
    ``parallel_iterations=1`` (the recurrence forbids overlapping steps, so the floor may not
    overlap them either); each step is one row-block read ``hs[t]`` and one ``tf.matmul``, the
    least a while-loop implementation does per step. The backward products use ``transpose_a``
    / ``transpose_b`` as TF's own matmul gradients do.
    """
    import numpy as np

    f32 = np.float32
    nU = n * U
    xs = tf.constant(rng.standard_normal((T * B, D)).astype(f32))
    wx = tf.constant((rng.standard_normal((D, nU)) * 0.1).astype(f32))
    wh = tf.constant((rng.standard_normal((U, nU)) * 0.1).astype(f32))
    hs = tf.constant(rng.standard_normal((T, B, U)).astype(f32))
    ds = tf.constant(rng.standard_normal((T, B, nU)).astype(f32))
    hs2, ds2 = tf.reshape(hs, (T * B, U)), tf.reshape(ds, (T * B, nU))

    def forward():
        proj = tf.matmul(xs, wx)
        _, rec = tf.while_loop(
            lambda t, _: t < T,
            lambda t, _: (t + 1, tf.matmul(hs[t], wh)),
            (tf.constant(0), tf.zeros((B, nU), f32)),
            parallel_iterations=1,
        )
        return proj, rec

    @tf.function
    def fwd_fn():
        return forward()

    @tf.function
    def fwdbwd_fn():
        proj, rec = forward()
        _, dh = tf.while_loop(
            lambda t, _: t >= 0,
            lambda t, _: (t - 1, tf.matmul(ds[t], wh, transpose_b=True)),
            (tf.constant(T - 1), tf.zeros((B, U), f32)),
            parallel_iterations=1,
        )
        dwx = tf.matmul(xs, ds2, transpose_a=True)
        dwh = tf.matmul(hs2, ds2, transpose_a=True)
        dx = tf.matmul(ds2, wx, transpose_b=True)
        return proj, rec, dh, dwx, dwh, dx

    def fwd():
        return [a.numpy() for a in fwd_fn()]

    def fwdbwd():
        return [a.numpy() for a in fwdbwd_fn()]

    return fwd, fwdbwd


def _add_xla(task, cell, cls_name, U, xt, weights, layer, harness, ref, impls, records):
    """``keras-xla`` and ``tf-fused-xla``: the same layers in ``tf.function(jit_compile=True)``
    (XLA), gated against the Keras reference like every other implementation."""
    import importlib

    candidates = {"keras-xla": ("tensorflow (XLA)", lambda: layer)}

    def fused():
        mod = importlib.import_module(f"generated.{cell}_tf")
        gen = getattr(mod, cls_name)(U, return_sequences=True, implementation="fused")
        gen(xt[:, :1])  # build
        gen.set_weights(weights)
        return gen

    if (ROOT / "generated" / f"{cell}_tf.py").exists():
        candidates["tf-fused-xla"] = ("tensorflow (generated, XLA)", fused)
    for name, (framework, make) in candidates.items():
        rec = records[name] = {"impl": name, "framework": framework}
        try:
            run_fwd, run_fwdbwd = harness(make(), jit=True)
            y, g = run_fwdbwd()
        except Exception as err:  # noqa: BLE001 - XLA may be missing or refuse an op
            rec["status"] = f"skipped: {type(err).__name__}: {str(err)[:200]}"
            continue
        if _gate(rec, *_errors(y, g, ref)):
            impls[name] = (run_fwd, run_fwdbwd)


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

        def harness(lay, jit=False, xt=xt, dyt=dyt):
            fwd_fn = tf.function(lambda a: lay(a), jit_compile=jit)

            @tf.function(jit_compile=jit)
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
        if task.get("xla"):
            _add_xla(task, cell, cls_name, U, xt, weights, layer, harness, ref, impls, records)
        records["tf-floor"] = {
            "impl": "tf-floor",
            "framework": "tensorflow GEMMs only",
            "status": "ok",
        }
        n = CELLS[cell][1]
        impls["tf-floor"] = _tf_floor(tf, B, T, D, U, n, np.random.default_rng(SEED))
        times = _interleaved(impls, task["reps"])
        for name, t in times.items():
            _fill_times(records[name], t)
        for name in impls:
            if name != "tf-floor":
                rec = records[name]
                for phase in ("fwd", "fwdbwd"):
                    rec[f"ratio_vs_tf_floor_{phase}_per_rep"] = _per_rep_ratio(
                        times[name][phase], times["tf-floor"][phase]
                    )
            if "keras-xla" in times and name not in ("keras-xla", "tf-floor"):
                for phase in ("fwd", "fwdbwd"):
                    records[name][f"ratio_vs_keras_xla_{phase}_per_rep"] = _per_rep_ratio(
                        times[name][phase], times["keras-xla"][phase]
                    )
            if name not in ("keras", "tf-floor"):
                rec = records[name]
                rec["ratio_vs_keras_fwd_per_rep"] = _per_rep_ratio(
                    times[name]["fwd"], times["keras"]["fwd"]
                )
                rec["ratio_vs_keras_fwdbwd_per_rep"] = _per_rep_ratio(
                    times[name]["fwdbwd"], times["keras"]["fwdbwd"]
                )
        for name, (_, run_fb) in impls.items():
            if name == "tf-floor":
                continue
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
    try:
        build_info = {k: str(v) for k, v in tf.sysconfig.get_build_info().items()}
    except Exception:  # noqa: BLE001 - not in every build
        build_info = None
    return {
        "results": results,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        "runtime": {
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
            "tf_build_info": build_info,
        },
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
    return {
        "results": results,
        "versions": {"numpy": np.__version__},
        "runtime": {"threadpool_info": _threadpool_info()},
    }


def _threadpool_info():
    """threadpoolctl's view of the BLAS/OpenMP pools NumPy loaded (OpenBLAS's kernel
    ``architecture``, ``num_threads``, version), or None without threadpoolctl (an optional
    dependency, the ``analyze`` extra)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return threadpool_info()


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
    import importlib

    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT))

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
            else:  # Keras's one bias is bias_ih here (bias_hh is fixed at 0): its gradient
                g = [wi.T, wh.T, bi]
            return y.detach().numpy(), [xg.grad.numpy()] + g

        y, g = fwdbwd()
        impls, records = {}, {"torch": rec}
        if _gate(rec, *_errors(y, g, ref)):
            impls["torch"] = (fwd, fwdbwd)
        # the generated torch module, both implementations, interleaved with torch.nn
        gen = importlib.import_module(f"generated.{cell}_torch")
        for impl in ("fused", "autograd"):
            name = f"torch-{impl}"
            grec = {**rec, "impl": name, "framework": "pytorch (generated)"}
            for key in ("status", "max_abs_err_output", "max_rel_err_grads"):
                grec.pop(key, None)
            results.append(grec)
            records[name] = grec
            layer = getattr(gen, CELLS[cell][0])(D, U, return_sequences=True, implementation=impl)
            layer.set_weights(ws)

            def gfwd(layer=layer, x=x):
                with torch.no_grad():
                    return layer(x)

            def gfwdbwd(layer=layer, x=x, dy=dy):
                xg = x.clone().requires_grad_(True)
                layer.zero_grad()
                y = layer(xg)
                y.backward(dy)
                grads = [p.grad.numpy() for p in layer.parameters()]
                return y.detach().numpy(), [xg.grad.numpy(), *grads]

            if _gate(grec, *_errors(*gfwdbwd(), ref)):
                impls[name] = (gfwd, gfwdbwd)
        times = _interleaved(impls, task["reps"]) if impls else {}
        for name in impls:
            _fill_times(records[name], times[name])
            if name != "torch" and "torch" in times:
                for phase in ("fwd", "fwdbwd"):
                    records[name][f"ratio_vs_torch_{phase}_per_rep"] = _per_rep_ratio(
                        times[name][phase], times["torch"][phase]
                    )
    return {"results": results, "versions": {"torch": torch.__version__}}


WORKERS = {"tf": worker_tf, "numpy": worker_numpy, "torch": worker_torch}
