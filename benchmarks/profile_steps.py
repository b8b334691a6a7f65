"""Where the time goes per step in the generated NumPy layers (and the fused TF op).

Usage::

    python benchmarks/profile_steps.py                       # S and M, threads 1 and all cores
    python benchmarks/profile_steps.py --shapes S --threads 1 --cells gru --json /tmp/p.json
    python benchmarks/profile_steps.py --tf                  # also the fused TF op (slower)

For each cell (default variant: biases, no mask, no dropout, tanh/sigmoid) it reports:

* **NumPy calls per step**, forward and backward, counted exactly: the module runs once with a
  NumPy whose arrays are an ndarray subclass that counts every ufunc call (``matmul`` = GEMM,
  other ufuncs = elementwise, ``ufunc.reduce`` = reductions), every NumPy function call, every
  store into an array (``a[...] = b``) and every view taken (``a[t]``), at two sequence lengths;
  the difference divided by the difference in steps is the per-step count. Elementwise calls
  that have no ``out=`` allocate their result: those are the temporaries.
* **Time per line**, with ``line_profiler`` (optional: ``pip install line_profiler``) on the
  variant's ``_forward_v*``/``_backward_v*``, each line classified from its source: ``gemm``
  (an ``@``), ``store`` (``buf[...] = name``, a copy), ``alloc`` (``np.empty``/``zeros``...),
  ``elementwise`` (arithmetic, activations, ``where``, ``concatenate``, ``sum``), ``python``
  (views, loop and branch bookkeeping). Time inside the time loop is divided by T.
* **Unit costs** at the step's shape (B, U) float32: one elementwise op allocating its result,
  the same with ``out=``, one view, one (B, U) store; and the GEMM of one step.

With ``--tf``: the fused TF op's while-loop bodies (forward and backward) are read from the
traced graph and their ops counted by type, and per-step costs are timed on loops alone:
an empty ``tf.while_loop``, one with a (B, nU) row read + matmul per step (the TF floor's loop),
the same plus a (B, U) column slice, and plus 5 ``TensorArray.write`` of it per step (the fused
op writes 5-7 per step).

Each thread budget runs in its own process (``OPENBLAS_NUM_THREADS``/TF intra-op threads).
Results: text on screen and ``--json``.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import types
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHAPES = {"S": (16, 200, 16, 64), "M": (64, 100, 64, 256), "L": (256, 50, 128, 512)}
CELLS = {"simple_rnn": ("SimpleRNN", 1), "gru": ("GRU", 3), "lstm": ("LSTM", 4)}
ALLOCATORS = {"empty", "zeros", "ones", "full", "zeros_like", "empty_like", "ones_like", "array"}


def _load(cell, name=None):
    """A fresh copy of generated/<cell>_numpy.py (so its ``np`` can be swapped)."""
    path = ROOT / "generated" / f"{cell}_numpy.py"
    spec = importlib.util.spec_from_file_location(name or f"_prof_{cell}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _inputs(mod, np, B, T, D, U, seed=0):
    rng = np.random.default_rng(seed)
    weights = {
        k: (0.1 * rng.standard_normal(s)).astype(np.float32)
        for k, s in mod.weight_shapes(D, U).items()
    }
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    dy = rng.standard_normal((B, T, U)).astype(np.float32)
    return x, weights, dy


# -- exact call counts ------------------------------------------------------------------------


def _counting_numpy():
    """(shim module standing in for numpy, Counter of calls, array class)."""
    import numpy as np

    counts = Counter()
    depth = [0]

    class Counted(np.ndarray):
        def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
            if depth[0] == 0:
                if ufunc is np.matmul:
                    counts["gemm"] += 1
                elif method == "__call__":
                    counts["elementwise"] += 1
                    counts[f"ufunc:{ufunc.__name__}"] += 1
                    if kwargs.get("out") is None:
                        counts["temporaries"] += 1
                else:
                    counts[f"reduce:{ufunc.__name__}.{method}"] += 1
                    counts["reductions"] += 1
            plain = [i.view(np.ndarray) if isinstance(i, Counted) else i for i in inputs]
            if kwargs.get("out") is not None:
                kwargs["out"] = tuple(
                    o.view(np.ndarray) if isinstance(o, Counted) else o for o in kwargs["out"]
                )
            depth[0] += 1
            try:
                result = getattr(ufunc, method)(*plain, **kwargs)
            finally:
                depth[0] -= 1
            return _wrap(result)

        def __array_function__(self, func, types_, args, kwargs):
            depth[0] += 1
            try:
                return _wrap(super().__array_function__(func, types_, args, kwargs))
            finally:
                depth[0] -= 1

        def __getitem__(self, key):
            if depth[0] == 0:
                counts["views"] += 1
            return super().__getitem__(key)

        def __setitem__(self, key, value):
            if depth[0] == 0:
                counts["stores"] += 1
            depth[0] += 1
            try:
                super().__setitem__(key, value)
            finally:
                depth[0] -= 1

    def _wrap(result):
        if isinstance(result, np.ndarray) and not isinstance(result, Counted):
            return result.view(Counted)
        if isinstance(result, tuple | list):
            return type(result)(_wrap(r) for r in result)
        return result

    def counted_function(name, f):
        def call(*args, **kwargs):
            if depth[0] == 0:
                kind = "alloc" if name in ALLOCATORS else "function"
                counts[kind + "s"] += 1
                counts[f"{kind}:{name}"] += 1
            depth[0] += 1
            try:
                return _wrap(f(*args, **kwargs))
            finally:
                depth[0] -= 1

        return call

    shim = types.ModuleType("numpy_counted")
    for name in dir(np):
        obj = getattr(np, name)
        if callable(obj) and not isinstance(obj, type | np.ufunc) and not name.startswith("_"):
            obj = counted_function(name, obj)
        setattr(shim, name, obj)
    return shim, counts, Counted


def count_calls(cell, T1=3, T2=7, B=2, D=3, U=4):
    """Per-step NumPy call counts of forward and backward (and the fixed part per call)."""
    import numpy as np

    mod = _load(cell, f"_count_{cell}")
    shim, counts, Counted = _counting_numpy()
    mod.np = shim
    per = {}
    for T in (T1, T2):
        x, w, dy = _inputs(mod, np, B, T, D, U)
        x, dy = x.view(Counted), dy.view(Counted)
        w = {k: v.view(Counted) for k, v in w.items()}
        counts.clear()
        _, _, tape = mod.forward(x, w)
        fwd = Counter(counts)
        counts.clear()
        mod.backward(tape, dy)
        per[T] = {"forward": fwd, "backward": Counter(counts)}
    out = {}
    for phase in ("forward", "backward"):
        keys = set(per[T1][phase]) | set(per[T2][phase])
        step = {k: (per[T2][phase][k] - per[T1][phase][k]) / (T2 - T1) for k in keys}
        fixed = {k: per[T1][phase][k] - step[k] * T1 for k in keys}
        step = {k: v for k, v in sorted(step.items()) if v}
        summary = {
            k: step.get(k, 0)
            for k in (
                "gemm",
                "elementwise",
                "temporaries",
                "reductions",
                "stores",
                "functions",
                "allocs",
                "views",
            )
        }
        summary["numpy_calls"] = (
            sum(summary[k] for k in ("gemm", "elementwise", "reductions", "stores", "functions"))
            + summary["allocs"]
        )
        out[phase] = {"per_step": summary, "per_step_detail": step, "fixed": fixed}
    return out


# -- line timings -----------------------------------------------------------------------------


def _classify(stmt):
    """The category of one simple statement, from its source."""
    nodes = list(ast.walk(stmt))
    if any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.MatMult) for n in nodes):
        return "gemm"
    calls = [n for n in nodes if isinstance(n, ast.Call)]
    names = {
        n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
        for n in calls
    }
    if "matmul" in names:
        return "gemm"
    ops = [n for n in nodes if isinstance(n, ast.BinOp | ast.UnaryOp | ast.AugAssign)]
    value = getattr(stmt, "value", None)
    if isinstance(stmt, ast.Assign) and isinstance(value, ast.Call | ast.DictComp):
        func = value.func if isinstance(value, ast.Call) else None
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in ALLOCATORS or isinstance(value, ast.DictComp):
            return "alloc"  # np.zeros((T, B, 3 * units)): the product is a shape
    if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Subscript) for t in stmt.targets):
        if isinstance(value, ast.Name | ast.Subscript | ast.Attribute):
            return "store"
    if ops or (calls and not names <= {"len", "range"}):
        return "elementwise"
    return "python"


def _line_map(fn):
    """{absolute line: (category, in the time loop)} for every line of fn's statements."""
    src_lines, start = inspect.getsourcelines(fn)
    tree = ast.parse(textwrap.dedent("".join(src_lines)))
    out = {}

    def visit(body, in_loop):
        for stmt in body:
            if isinstance(stmt, ast.For | ast.While | ast.If | ast.With):
                out[stmt.lineno + start - 1] = ("python", in_loop)
                loop = in_loop or isinstance(stmt, ast.For | ast.While)
                visit(stmt.body, loop)
                visit(stmt.orelse, loop)
            elif isinstance(stmt, ast.FunctionDef):
                visit(stmt.body, in_loop)
            else:
                cat = _classify(stmt)
                for line in range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1):
                    out[line + start - 1] = (cat, in_loop)

    visit(tree.body[0].body, False)
    return out


def line_times(cell, B, T, D, U, reps):
    """line_profiler on the variant's forward and backward: seconds per category."""
    import numpy as np

    try:
        from line_profiler import LineProfiler
    except ImportError:
        return None
    mod = _load(cell)
    x, w, dy = _inputs(mod, np, B, T, D, U)
    _, _, tape = mod.forward(x, w)
    fwd_fn, bwd_fn = mod._VARIANTS[tape["key"]]
    mod.backward(tape, dy)  # warm-up
    wall = []
    for _ in range(reps):
        t0 = time.perf_counter()
        _, _, tape = mod.forward(x, w)
        mod.backward(tape, dy)
        wall.append(time.perf_counter() - t0)
    # one profiler per repetition; each line's time is the median over repetitions, so a
    # preemption by another process (a shared machine) lands in one repetition only
    per_line = {}
    for _ in range(reps):
        prof = LineProfiler(fwd_fn, bwd_fn)
        prof.enable_by_count()
        _, _, tape = mod.forward(x, w)
        mod.backward(tape, dy)
        prof.disable_by_count()
        stats = prof.get_stats()
        for (_, _, name), entries in stats.timings.items():
            for line, hits, total in entries:
                per_line.setdefault((name, line), []).append((total * stats.unit, hits))
    result = {}
    top = {}
    for fn, phase in ((fwd_fn, "forward"), (bwd_fn, "backward")):
        cats = _line_map(fn)
        lines, first = inspect.getsourcelines(fn)
        src = dict(enumerate(lines, first))
        acc = result.setdefault(phase, {})
        for (name, line), samples in per_line.items():
            if name != fn.__name__:
                continue
            seconds = statistics.median(s_ for s_, _ in samples)
            hits = samples[0][1]
            cat, in_loop = cats.get(line, ("python", False))
            key = f"{cat}{'_loop' if in_loop else '_outside'}"
            acc[key] = acc.get(key, 0.0) + seconds
            top.setdefault(phase, []).append((seconds, line, hits, cat, src.get(line, "").strip()))
    for phase, acc in result.items():
        total = sum(acc.values())
        loop = sum(v for k, v in acc.items() if k.endswith("_loop"))
        cats = {}
        for k, v in acc.items():
            cats.setdefault(k.rsplit("_", 1)[0], 0.0)
            cats[k.rsplit("_", 1)[0]] += v
        result[phase] = {
            "profiled_s": total,
            "loop_share": loop / total if total else None,
            "per_step_loop_us": {
                k[: -len("_loop")]: 1e6 * v / T for k, v in acc.items() if k.endswith("_loop")
            },
            "outside_loop_ms": {
                k[: -len("_outside")]: 1e3 * v for k, v in acc.items() if k.endswith("_outside")
            },
            "share": {k: v / total for k, v in sorted(cats.items())},
            "top_lines": [
                {"s": round(s, 6), "line": ln, "hits": h, "cat": c, "src": s_[:90]}
                for s, ln, h, c, s_ in sorted(top[phase], reverse=True)[:8]
            ],
        }
    result["unprofiled_fwdbwd_s"] = statistics.median(wall)
    return result


def unit_costs(B, U, n, D, reps=2000):
    """Microseconds for one elementwise op (new result / out=), one view, one store, and the
    step's GEMM (B, U) x (U, nU), at this shape."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((B, U)).astype(np.float32)
    b = rng.standard_normal((B, U)).astype(np.float32)
    c = np.empty_like(a)
    seq = np.empty((4, B, U), np.float32)
    wh = rng.standard_normal((U, n * U)).astype(np.float32)
    wide = rng.standard_normal((B, n * U)).astype(np.float32)
    rec = np.empty((B, n * U), np.float32)

    def timeit(f):
        best = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(reps):
                f()
            best.append((time.perf_counter() - t0) / reps)
        return 1e6 * min(best)

    return {
        "mul_new_us": timeit(lambda: a * b),
        "mul_out_us": timeit(lambda: np.multiply(a, b, out=c)),
        "tanh_new_us": timeit(lambda: np.tanh(a)),
        "tanh_out_us": timeit(lambda: np.tanh(a, out=c)),
        "tanh_wide_nU_us": timeit(lambda: np.tanh(wide)),
        "view_us": timeit(lambda: seq[1]),
        "slice_view_us": timeit(lambda: wide[:, U : 2 * U]),
        "store_us": timeit(lambda: seq.__setitem__(1, a)),
        "gemm_step_us": timeit(lambda: np.matmul(a, wh, out=rec)),
        "gemm_step_back_us": timeit(lambda: np.matmul(wide, wh.T)),
    }


def worker_numpy(task):
    out = {}
    for cell in task["cells"]:
        n = CELLS[cell][1]
        entry = out.setdefault(cell, {})
        if task["counts"]:
            entry["counts"] = count_calls(cell)
        for shape in task["shapes"]:
            B, T, D, U = SHAPES[shape]
            entry[shape] = {
                "lines": line_times(cell, B, T, D, U, task["reps"]),
                "unit_costs": unit_costs(B, U, n, D),
            }
    try:
        from threadpoolctl import threadpool_info

        out["_threadpool"] = threadpool_info()
    except ImportError:
        out["_threadpool"] = None
    return out


# -- the fused TF op --------------------------------------------------------------------------


def _while_bodies(graph_def):
    """{function name: Counter(op type)} for the while-loop bodies in a graph's library."""
    bodies = {}
    for f in graph_def.library.function:
        name = f.signature.name
        if "body" in name.lower():
            bodies[name] = Counter(node.op for node in f.node_def)
    return bodies


def _tf_loop(tf, T, B, U, hs, wh, k_writes, with_matmul, with_slice):
    """A T-step ``tf.while_loop`` (``parallel_iterations=1``, as the recurrence forces): per
    step optionally one row read + matmul, one (B, U) column slice of its result (carried, so
    it is not pruned) and k ``TensorArray.write`` of that slice, stacked after the loop."""
    nU = wh.shape[1]

    @tf.function
    def run():
        tas = [tf.TensorArray(tf.float32, size=T) for _ in range(k_writes)]

        def body(t, rec, part, tas):
            if with_matmul:
                rec = tf.matmul(hs[t], wh)
            if with_slice:
                part = rec[:, :U]
            return t + 1, rec, part, [ta.write(t, part) for ta in tas]

        _, rec, part, tas = tf.while_loop(
            lambda t, *_: t < T,
            body,
            (tf.constant(0), tf.zeros((B, nU)), tf.zeros((B, U)), tas),
            parallel_iterations=1,
        )
        return [rec, part] + [ta.stack() for ta in tas]

    return run


def worker_tf(task):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import numpy as np
    import tensorflow as tf

    threads = task["threads"]
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    sys.path.insert(0, str(ROOT))
    out = {}

    def timeit(f, reps):
        f()
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    for cell in task["cells"]:
        cls_name, n = CELLS[cell]
        mod = importlib.import_module(f"generated.{cell}_tf")
        entry = out.setdefault(cell, {})
        for shape in task["shapes"]:
            B, T, D, U = SHAPES[shape]
            rng = np.random.default_rng(0)
            x = tf.constant(rng.standard_normal((B, T, D)).astype(np.float32))
            dy = tf.constant(rng.standard_normal((B, T, U)).astype(np.float32))
            layer = getattr(mod, cls_name)(U, return_sequences=True, implementation="fused")
            layer(x[:, :1])

            @tf.function
            def fwd(layer=layer, x=x):
                return layer(x)

            @tf.function
            def fwdbwd(layer=layer, x=x, dy=dy):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = layer(x)
                    loss = tf.reduce_sum(y * dy)
                return tape.gradient(loss, [x] + list(layer.trainable_weights))

            graph = fwdbwd.get_concrete_function().graph.as_graph_def()
            bodies = _while_bodies(graph)
            t_fwd = timeit(lambda f=fwd: f().numpy(), task["reps"])
            t_fb = timeit(lambda f=fwdbwd: [g.numpy() for g in f()], task["reps"])

            nU = n * U
            hs = tf.constant(rng.standard_normal((T, B, U)).astype(np.float32))
            wh = tf.constant(rng.standard_normal((U, nU)).astype(np.float32))

            loops = {}
            for label, k, mm, sl in (
                ("empty", 0, False, False),
                ("matmul", 0, True, False),
                ("matmul+slice", 0, True, True),
                ("matmul+slice+5 TensorArray writes", 5, True, True),
            ):
                run = _tf_loop(tf, T, B, U, hs, wh, k, mm, sl)
                seconds = timeit(lambda r=run: [a.numpy() for a in r()], task["reps"])
                loops[label] = 1e6 * seconds / T
            entry[shape] = {
                "fused_fwd_ms": 1e3 * t_fwd,
                "fused_fwdbwd_ms": 1e3 * t_fb,
                "fused_fwd_per_step_us": 1e6 * t_fwd / T,
                "fused_bwd_per_step_us": 1e6 * (t_fb - t_fwd) / T,
                "loop_per_step_us": loops,
                "while_bodies": {k: dict(v) for k, v in bodies.items()},
                "while_body_op_counts": {k: sum(v.values()) for k, v in bodies.items()},
            }
    return out


WORKERS = {"numpy": worker_numpy, "tf": worker_tf}


def _run(kind, task, threads):
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env.pop("OPENBLAS_CORETYPE", None)  # as benchmarks/run.py does
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    with tempfile.TemporaryDirectory() as tmp:
        tp, op = Path(tmp) / "task.json", Path(tmp) / "out.json"
        tp.write_text(json.dumps({**task, "threads": threads}))
        cmd = [sys.executable, __file__, "--worker", kind, "--task", str(tp), "--out", str(op)]
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            return {"error": proc.stderr[-3000:]}
        return json.loads(op.read_text())


def _print_numpy(threads, res):
    for cell, entry in res.items():
        if cell.startswith("_"):
            continue
        counts = entry.get("counts")
        if counts:
            for phase in ("forward", "backward"):
                print(f"[{cell}] {phase} calls/step: {counts[phase]['per_step']}")
        for shape, data in entry.items():
            if shape == "counts":
                continue
            lines = data["lines"]
            print(f"[{cell} {shape} threads={threads}] unit costs: {data['unit_costs']}")
            if not lines:
                print("  (line_profiler not installed)")
                continue
            print(f"  unprofiled fwd+bwd: {1e3 * lines['unprofiled_fwdbwd_s']:.2f} ms")
            for phase in ("forward", "backward"):
                p = lines[phase]
                share = ", ".join(f"{k} {100 * v:.0f}%" for k, v in p["share"].items())
                step = ", ".join(f"{k} {v:.1f}" for k, v in p["per_step_loop_us"].items())
                print(f"  {phase}: {1e3 * p['profiled_s']:.2f} ms profiled; {share}")
                print(f"    per step (us): {step}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="S,M")
    parser.add_argument("--cells", default=",".join(CELLS))
    parser.add_argument("--threads", default=f"1,{os.cpu_count() or 1}")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--tf", action="store_true", help="also profile the fused TF op")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--task", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        task = json.loads(args.task.read_text())
        args.out.write_text(json.dumps(WORKERS[args.worker](task)))
        return 0
    shapes = [s for s in args.shapes.split(",") if s]
    cells = [c for c in args.cells.split(",") if c]
    threads_list = list(dict.fromkeys(int(t) for t in args.threads.split(",") if t))
    bad = [s for s in shapes if s not in SHAPES] + [c for c in cells if c not in CELLS]
    if bad:
        parser.error(f"unknown shapes/cells {bad}; shapes {list(SHAPES)}, cells {list(CELLS)}")
    report = {"shapes": shapes, "cells": cells, "threads": threads_list, "numpy": {}, "tf": {}}
    for i, threads in enumerate(threads_list):
        task = {"shapes": shapes, "cells": cells, "reps": args.reps, "counts": i == 0}
        res = _run("numpy", task, threads)
        report["numpy"][str(threads)] = res
        if "error" in res:
            print(res["error"])
        else:
            _print_numpy(threads, res)
        if args.tf:
            res = _run("tf", task, threads)
            report["tf"][str(threads)] = res
            print(json.dumps(res, indent=1)[:4000])
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
