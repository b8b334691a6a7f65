"""Hand-written GRU and LSTM steps that apply the codegen rules the profile suggests, timed
against the generated NumPy layers: what those rules would buy, measured, before anyone
changes the templates.

Usage::

    python benchmarks/prototype_steps.py                 # S and M, threads 1 and all cores
    python benchmarks/prototype_steps.py --shapes S,M,L --threads 1 --reps 9

The rules (none is cell-specific; each is a statement about blocks of a fused weight):

1. one ``out=`` matrix product per step into a reused (B, nU) buffer;
2. elementwise ops over adjacent gate blocks that share a function and an operand layout are
   one op over the contiguous slice (GRU: z|r; LSTM: i|f|o once the gate blocks are reordered
   internally so the three sigmoid gates are adjacent -- the weight columns are permuted once
   per call and the gradients permuted back, O(weights), not O(T));
3. every elementwise result is written with ``out=`` into its place in the tape (no
   temporary, no separate store), and in-place ufuncs chain on it (``sigmoid`` as
   ``0.5 + 0.5 * tanh(0.5 * u)`` is four in-place calls on the tape slice, bit-identical);
4. algebra that saves a pass: ``h_prev * z + hh * (1 - z)`` is ``hh + z * (h_prev - hh)``;
   GRU keeps ``h_prev @ rk_h + rb_h`` (with the bias) for the backward, which reads it so;
5. backward: the pre-activation gradients are written once into one (T, B, nU) buffer that
   feeds the step's product and, after the loop, the weight products; GRU's input-kernel
   gradient shares the z|r blocks with it and keeps only the h block separately (saves
   2/3 of d_x_kernel: memory).

Each prototype is checked against the generated module (same inputs and weights) before it
is timed: outputs to 1e-6 and gradients to 1e-5 relative to the largest entry; a mismatch is
reported and not timed. NumPy calls per step are counted with ``profile_steps.py``'s counting
NumPy, the same way as for the generated code.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_steps import SHAPES, _counting_numpy, _inputs, _load  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _sigmoid_(u):
    """sigmoid in place, as the generated code computes it (0.5 + 0.5 * tanh(0.5 * u))."""
    np.multiply(u, 0.5, out=u)
    np.tanh(u, out=u)
    np.multiply(u, 0.5, out=u)
    np.add(u, 0.5, out=u)
    return u


def _sigmoid_into(u, out):
    np.multiply(u, 0.5, out=out)
    np.tanh(out, out=out)
    np.multiply(out, 0.5, out=out)
    np.add(out, 0.5, out=out)
    return out


# -- GRU (reset_after=True, Keras layout: z, r, h blocks; bias (2, 3U)) -----------------------


def gru_forward(x, w):
    """x (B, T, D) -> (outputs (B, T, U), tape)."""
    kernel, rk, bias = w["kernel"], w["recurrent_kernel"], w["bias"]
    B, T, D = x.shape
    U = rk.shape[0]
    dt = kernel.dtype
    x_tm = np.ascontiguousarray(np.swapaxes(x, 0, 1), dtype=dt)
    xk = (x_tm.reshape(T * B, D) @ kernel).reshape(T, B, 3 * U)
    xk += np.concatenate([bias[0, : 2 * U] + bias[1, : 2 * U], bias[0, 2 * U :]])
    rb_h = bias[1, 2 * U :]
    h_seq = np.empty((T + 1, B, U), dt)
    h_seq[0] = 0.0
    zr_seq = np.empty((T, B, 2 * U), dt)
    rkh_seq = np.empty((T, B, U), dt)
    hh_seq = np.empty((T, B, U), dt)
    rec = np.empty((B, 3 * U), dt)
    for t in range(T):
        np.matmul(h_seq[t], rk, out=rec)
        zr = np.add(rec[:, : 2 * U], xk[t, :, : 2 * U], out=zr_seq[t])
        _sigmoid_(zr)
        rkh = np.add(rec[:, 2 * U :], rb_h, out=rkh_seq[t])
        hh = np.multiply(zr[:, U:], rkh, out=hh_seq[t])
        np.add(hh, xk[t, :, 2 * U :], out=hh)
        np.tanh(hh, out=hh)
        h = np.subtract(h_seq[t], hh, out=h_seq[t + 1])
        np.multiply(h, zr[:, :U], out=h)
        np.add(h, hh, out=h)
    tape = {"x": x_tm, "w": w, "h": h_seq, "zr": zr_seq, "rkh": rkh_seq, "hh": hh_seq}
    return np.swapaxes(h_seq[1:], 0, 1), tape


def gru_backward(tape, d_out):
    """-> (d_x (B, T, D), {name: gradient})."""
    x, w = tape["x"], tape["w"]
    h_seq, zr_seq, rkh_seq, hh_seq = tape["h"], tape["zr"], tape["rkh"], tape["hh"]
    kernel, rk = w["kernel"], w["recurrent_kernel"]
    T, B, D = x.shape
    U = rk.shape[0]
    dt = x.dtype
    d_out = np.swapaxes(d_out, 0, 1)
    rk_T = np.ascontiguousarray(rk.T)
    d_pre = np.empty((T, B, 3 * U), dt)  # z, r, and the product h block (d_hh_pre * r)
    d_xh = np.empty((T, B, U), dt)  # the input-kernel h block (d_hh_pre)
    d_h = np.zeros((B, U), dt)
    tmp = np.empty((B, U), dt)
    tmp2 = np.empty((B, 2 * U), dt)
    for t in range(T - 1, -1, -1):
        np.add(d_h, d_out[t], out=d_h)
        zr, hh, dp, dxh = zr_seq[t], hh_seq[t], d_pre[t], d_xh[t]
        z = zr[:, :U]
        np.square(hh, out=dxh)  # d_hh_pre = d_h * (1 - z) * (1 - hh**2)
        np.subtract(1.0, dxh, out=dxh)
        np.subtract(1.0, z, out=tmp)
        np.multiply(tmp, d_h, out=tmp)
        np.multiply(dxh, tmp, out=dxh)
        dz = np.subtract(h_seq[t], hh, out=dp[:, :U])  # d_z = d_h * (h_prev - hh)
        np.multiply(dz, d_h, out=dz)
        np.multiply(dxh, rkh_seq[t], out=dp[:, U : 2 * U])  # d_r = d_hh_pre * (rk_h + rb_h)
        np.subtract(1.0, zr, out=tmp2)  # both sigmoid derivatives at once
        np.multiply(tmp2, zr, out=tmp2)
        np.multiply(dp[:, : 2 * U], tmp2, out=dp[:, : 2 * U])
        np.multiply(dxh, zr[:, U:], out=dp[:, 2 * U :])
        np.multiply(d_h, z, out=d_h)
        d_h += dp @ rk_T
    X = x.reshape(T * B, D)
    P = d_pre.reshape(T * B, 3 * U)
    Xh = d_xh.reshape(T * B, U)
    d_kernel = np.empty_like(kernel)
    np.matmul(X.T, P[:, : 2 * U], out=d_kernel[:, : 2 * U])
    np.matmul(X.T, Xh, out=d_kernel[:, 2 * U :])
    d_rk = h_seq[:-1].reshape(T * B, U).T @ P
    d_x = P[:, : 2 * U] @ kernel[:, : 2 * U].T
    d_x += Xh @ kernel[:, 2 * U :].T
    s_p, s_h = P.sum(axis=0), Xh.sum(axis=0)
    d_bias = np.empty_like(w["bias"])
    d_bias[0, : 2 * U] = d_bias[1, : 2 * U] = s_p[: 2 * U]
    d_bias[0, 2 * U :] = s_h
    d_bias[1, 2 * U :] = s_p[2 * U :]
    d_x = np.swapaxes(d_x.reshape(T, B, D), 0, 1)
    return d_x, {"kernel": d_kernel, "recurrent_kernel": d_rk, "bias": d_bias}


# -- LSTM (Keras layout i, f, c, o; internally i, f, o, g so the sigmoid gates are adjacent) --


def _lstm_perm(U):
    i, f, g, o = (np.arange(k * U, (k + 1) * U) for k in range(4))
    perm = np.concatenate([i, f, o, g])
    return perm, np.argsort(perm)


def lstm_forward(x, w):
    kernel, rk, bias = w["kernel"], w["recurrent_kernel"], w["bias"]
    B, T, D = x.shape
    U = rk.shape[0]
    dt = kernel.dtype
    perm, _ = _lstm_perm(U)
    kp, rkp = kernel[:, perm], np.ascontiguousarray(rk[:, perm])
    x_tm = np.ascontiguousarray(np.swapaxes(x, 0, 1), dtype=dt)
    xk = (x_tm.reshape(T * B, D) @ kp).reshape(T, B, 4 * U)
    xk += bias[perm]
    h_seq = np.empty((T + 1, B, U), dt)
    h_seq[0] = 0.0
    c_seq = np.empty((T + 1, B, U), dt)
    c_seq[0] = 0.0
    gates = np.empty((T, B, 4 * U), dt)  # i, f, o, g
    ac_seq = np.empty((T, B, U), dt)
    pre = np.empty((B, 4 * U), dt)
    tmp = np.empty((B, U), dt)
    for t in range(T):
        np.matmul(h_seq[t], rkp, out=pre)
        np.add(pre, xk[t], out=pre)
        gt = gates[t]
        _sigmoid_into(pre[:, : 3 * U], gt[:, : 3 * U])
        np.tanh(pre[:, 3 * U :], out=gt[:, 3 * U :])
        c = np.multiply(c_seq[t], gt[:, U : 2 * U], out=c_seq[t + 1])
        np.multiply(gt[:, 3 * U :], gt[:, :U], out=tmp)
        np.add(c, tmp, out=c)
        ac = np.tanh(c, out=ac_seq[t])
        np.multiply(ac, gt[:, 2 * U : 3 * U], out=h_seq[t + 1])
    tape = {"x": x_tm, "w": w, "h": h_seq, "c": c_seq, "gates": gates, "ac": ac_seq}
    tape.update(kp=kp, rkp=rkp)
    return np.swapaxes(h_seq[1:], 0, 1), tape


def lstm_backward(tape, d_out):
    x, h_seq, c_seq = tape["x"], tape["h"], tape["c"]
    gates, ac_seq, kp, rkp = tape["gates"], tape["ac"], tape["kp"], tape["rkp"]
    T, B, D = x.shape
    U = rkp.shape[0]
    dt = x.dtype
    _, inv = _lstm_perm(U)
    d_out = np.swapaxes(d_out, 0, 1)
    rkp_T = np.ascontiguousarray(rkp.T)
    dG = np.empty((T, B, 4 * U), dt)  # pre-activation gradients, i, f, o, g
    d_h = np.zeros((B, U), dt)
    d_c = np.zeros((B, U), dt)
    tmp = np.empty((B, U), dt)
    tmp3 = np.empty((B, 3 * U), dt)
    for t in range(T - 1, -1, -1):
        np.add(d_h, d_out[t], out=d_h)
        gt, ac, dg = gates[t], ac_seq[t], dG[t]
        i, f, o, g = gt[:, :U], gt[:, U : 2 * U], gt[:, 2 * U : 3 * U], gt[:, 3 * U :]
        np.square(ac, out=tmp)  # d_c += d_h * o * (1 - ac**2)
        np.subtract(1.0, tmp, out=tmp)
        np.multiply(tmp, o, out=tmp)
        np.multiply(tmp, d_h, out=tmp)
        np.add(d_c, tmp, out=d_c)
        np.multiply(d_c, g, out=dg[:, :U])  # d_i
        np.multiply(d_c, c_seq[t], out=dg[:, U : 2 * U])  # d_f
        np.multiply(ac, d_h, out=dg[:, 2 * U : 3 * U])  # d_o
        np.subtract(1.0, gt[:, : 3 * U], out=tmp3)  # the three sigmoid derivatives at once
        np.multiply(tmp3, gt[:, : 3 * U], out=tmp3)
        np.multiply(dg[:, : 3 * U], tmp3, out=dg[:, : 3 * U])
        np.square(g, out=tmp)  # d_g_pre = d_c * i * (1 - g**2)
        np.subtract(1.0, tmp, out=tmp)
        np.multiply(tmp, i, out=tmp)
        np.multiply(tmp, d_c, out=dg[:, 3 * U :])
        np.matmul(dg, rkp_T, out=d_h)
        np.multiply(d_c, f, out=d_c)
    X = x.reshape(T * B, D)
    P = dG.reshape(T * B, 4 * U)
    d_kernel = (X.T @ P)[:, inv]
    d_rk = (h_seq[:-1].reshape(T * B, U).T @ P)[:, inv]
    d_x = np.swapaxes((P @ kp.T).reshape(T, B, D), 0, 1)
    d_bias = P.sum(axis=0)[inv]
    return d_x, {"kernel": d_kernel, "recurrent_kernel": d_rk, "bias": d_bias}


PROTOTYPES = {"gru": (gru_forward, gru_backward), "lstm": (lstm_forward, lstm_backward)}


# -- checks, counts and timings ---------------------------------------------------------------


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


def check(cell, B, T, D, U):
    """Max errors of the prototype against the generated module (its own reference)."""
    mod = _load(cell)
    x, w, dy = _inputs(mod, np, B, T, D, U)
    fwd, bwd = PROTOTYPES[cell]
    y_ref, _, tape_ref = mod.forward(x, w)
    dx_ref, _, dw_ref = mod.backward(tape_ref, dy)
    y, tape = fwd(x, w)
    dx, dw = bwd(tape, dy)
    out_err = float(np.max(np.abs(y - y_ref)))
    grad_err = max([_rel(dx, dx_ref)] + [_rel(dw[k], dw_ref[k]) for k in dw_ref])
    return {"out_err": out_err, "grad_err": grad_err, "ok": out_err <= 1e-6 and grad_err <= 1e-5}


def count(cell, T1=3, T2=7, B=2, D=3, U=4):
    """NumPy calls per step of the prototype, counted as profile_steps counts the generated
    code."""
    this = sys.modules[__name__]
    shim, counts, Counted = _counting_numpy()
    fwd, bwd = PROTOTYPES[cell]
    mod = _load(cell)
    per = {}
    saved = this.np
    this.np = shim
    try:
        for T in (T1, T2):
            x, w, dy = _inputs(mod, np, B, T, D, U)
            x, dy = x.view(Counted), dy.view(Counted)
            w = {k: v.view(Counted) for k, v in w.items()}
            counts.clear()
            _, tape = fwd(x, w)
            f = dict(counts)
            counts.clear()
            bwd(tape, dy)
            per[T] = {"forward": f, "backward": dict(counts)}
    finally:
        this.np = saved
    out = {}
    for phase in ("forward", "backward"):
        keys = ("gemm", "elementwise", "temporaries", "stores", "functions", "allocs", "views")
        step = {k: (per[T2][phase].get(k, 0) - per[T1][phase].get(k, 0)) / (T2 - T1) for k in keys}
        step["numpy_calls"] = sum(step[k] for k in keys if k not in ("temporaries", "views"))
        out[phase] = step
    return out


def _time(fn):
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    finally:
        gc.enable()


def timing(cell, B, T, D, U, reps):
    """Interleaved medians (ms) of generated vs prototype, forward and forward+backward."""
    mod = _load(cell)
    x, w, dy = _inputs(mod, np, B, T, D, U)
    fwd, bwd = PROTOTYPES[cell]
    impls = {
        "generated": (
            lambda: mod.forward(x, w),
            lambda: mod.backward(mod.forward(x, w)[2], dy),
        ),
        "prototype": (lambda: fwd(x, w), lambda: bwd(fwd(x, w)[1], dy)),
    }
    times = {n: {"fwd": [], "fwdbwd": []} for n in impls}
    for f, fb in impls.values():
        f()
        fb()
    for rep in range(reps):
        names = list(impls) if rep % 2 == 0 else list(impls)[::-1]
        for n in names:
            times[n]["fwd"].append(_time(impls[n][0]))
            times[n]["fwdbwd"].append(_time(impls[n][1]))
    out = {n: {k: 1e3 * statistics.median(v) for k, v in t.items()} for n, t in times.items()}
    for phase in ("fwd", "fwdbwd"):
        ratios = [
            p / g for p, g in zip(times["prototype"][phase], times["generated"][phase], strict=True)
        ]
        out[f"prototype_over_generated_{phase}"] = statistics.median(ratios)
    return out


def worker(task):
    res = {}
    for cell in task["cells"]:
        entry = res.setdefault(cell, {})
        small, s_shape = check(cell, 4, 9, 5, 6), check(cell, *SHAPES["S"])
        entry["check"] = {
            "out_err": max(small["out_err"], s_shape["out_err"]),
            "grad_err": max(small["grad_err"], s_shape["grad_err"]),
            "ok": small["ok"] and s_shape["ok"],
            "shapes": [[4, 9, 5, 6], list(SHAPES["S"])],
        }
        if not entry["check"]["ok"]:
            continue
        if task["counts"]:
            entry["counts"] = count(cell)
        for shape in task["shapes"]:
            entry[shape] = timing(cell, *SHAPES[shape], task["reps"])
    return res


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="S,M")
    parser.add_argument("--cells", default="gru,lstm")
    parser.add_argument("--threads", default=f"1,{os.cpu_count() or 1}")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--task", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.out.write_text(json.dumps(worker(json.loads(args.task.read_text()))))
        return 0
    shapes = [s for s in args.shapes.split(",") if s]
    cells = [c for c in args.cells.split(",") if c]
    bad = [s for s in shapes if s not in SHAPES] + [c for c in cells if c not in PROTOTYPES]
    if bad:
        parser.error(f"unknown {bad}; shapes {list(SHAPES)}, cells {list(PROTOTYPES)}")
    report = {}
    for k, threads in enumerate(dict.fromkeys(int(t) for t in args.threads.split(",") if t)):
        env = dict(os.environ)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
        env.pop("OPENBLAS_CORETYPE", None)
        with tempfile.TemporaryDirectory() as tmp:
            tp, op = Path(tmp) / "task.json", Path(tmp) / "out.json"
            task = {"cells": cells, "shapes": shapes, "reps": args.reps, "counts": k == 0}
            tp.write_text(json.dumps(task))
            cmd = [sys.executable, __file__, "--worker", "--task", str(tp), "--out", str(op)]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stderr[-3000:])
                return 1
            res = json.loads(op.read_text())
        report[str(threads)] = res
        for cell, entry in res.items():
            print(f"threads {threads} {cell}: check {entry['check']}")
            if "counts" in entry:
                print(f"  calls/step: {entry['counts']}")
            for shape in shapes:
                if shape in entry:
                    print(f"  {shape}: " + json.dumps(entry[shape]))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
