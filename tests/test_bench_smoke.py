"""Smoke test for benchmarks/run.py: the tiny configuration runs both thread regimes and writes
the expected JSON."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.tf

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "run.py"


def test_bench_tiny_writes_json(tmp_path):
    pytest.importorskip("tensorflow")
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--reps", "1", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert {"meta", "results", "ratios", "build", "errors"} <= set(report)
    assert report["errors"] == []
    assert report["meta"]["shapes"] == ["tiny"]
    meta = report["meta"]
    assert {"reps", "threads", "versions", "ratio_method", "tolerances"} <= set(meta)
    # both regimes by default: one thread, then all cores (one regime on a 1-CPU machine)
    regimes = list(dict.fromkeys([1, os.cpu_count() or 1]))
    assert meta["threads"] == regimes
    assert {"numpy", "tensorflow", "keras"} <= set(meta["versions"])
    machine = meta["machine"]
    assert machine["cpu_count"] == os.cpu_count()
    assert {"cpu_model", "cpus_available", "loadavg_start", "loadavg_end", "env"} <= set(machine)
    assert set(meta["blas"]) == {str(t) for t in regimes}
    for threads, pools in meta["blas"].items():
        if pools is not None:  # threadpoolctl is optional
            blas = [p for p in pools if p["user_api"] == "blas"]
            assert blas and all(p["num_threads"] == int(threads) for p in blas), pools
    assert set(meta["tf_runtime"]) == {str(t) for t in regimes}
    for threads, rt in meta["tf_runtime"].items():
        assert rt["intra_op_threads"] == int(threads)

    cells = {"simple_rnn", "gru", "lstm"}
    impls = {(r["threads"], r["cell"], r["impl"]) for r in report["results"]}
    for threads in regimes:
        for cell in cells:
            for impl in ("numpy", "floor", "keras", "tf-loop", "tf-fused", "tf-floor"):
                assert (threads, cell, impl) in impls
    for r in report["results"]:
        assert {"shape", "cell", "impl", "status", "threads"} <= set(r)
        if r["impl"] in ("numpy", "floor", "keras", "tf-floor"):
            assert r["status"] == "ok", r
            assert r["fwd_median_s"] > 0 and r["fwdbwd_median_s"] > 0
        if r["impl"] == "numpy":
            assert r["peak_bytes"] > 0 and r["memory_target_bytes"] > 0
            assert set(r["memory_target_parts"]) == {
                "inputs",
                "stored_activations",
                "weights",
                "gradients",
            }
            assert r["max_abs_err_output"] <= 1e-4

    assert {(row["threads"], row["cell"]) for row in report["ratios"]} == {
        (t, c) for t in regimes for c in cells
    }
    headline = (
        "numpy_over_floor_fwdbwd",
        "numpy_over_keras_fwdbwd",
        "tf-fused_over_tf-floor_fwdbwd",
        "tf-fused_over_keras_fwdbwd",
        "keras_over_tf-floor_fwdbwd",
        "tf-floor_over_floor_fwdbwd",
    )
    for row in report["ratios"]:
        for key in (
            "numpy_over_keras_fwd",
            "numpy_over_floor_fwd",
            "tf-fused_over_tf-floor_fwd",
            "numpy_peak_over_target",
            *headline,
        ):
            assert row[key] is not None and row[key] > 0, (key, row)
        assert "numpy_over_torch_fwdbwd" in row
    # the side-by-side summary holds each regime's value of the same ratio row
    by_row = {(r["threads"], r["cell"]): r for r in report["ratios"]}
    for cell in cells:
        for key in headline:
            per_regime = report["summary"]["tiny"][cell][key]
            assert per_regime == {str(t): by_row[t, cell][key] for t in regimes}

    _check_jax(report, regimes, cells)

    # `rnngen build` timing is recorded (its success depends on the templates, not on us)
    assert {"command", "runs_s", "median_s", "error", "files"} <= set(report["build"])


def _check_jax(report, regimes, cells):
    """The JAX worker's rows, when JAX is installed: both implementations gated and timed in
    each regime, compile time and XLA's memory analysis apart, the single-thread XLA_FLAGS
    recorded, and the jax ratios in every ratio row."""
    import importlib.util

    if importlib.util.find_spec("jax") is None:
        assert report["meta"]["workers"]["jax"] == "skipped: jax not importable"
        return
    meta = report["meta"]
    assert "jax" in meta["versions"]
    assert set(meta["jax_runtime"]) == {str(t) for t in regimes}
    assert "--xla_cpu_multi_thread_eigen=false" in meta["jax_runtime"]["1"]["XLA_FLAGS"]
    rows = {(r["threads"], r["cell"], r["impl"]): r for r in report["results"]}
    for threads in regimes:
        for cell in cells:
            for impl in ("jax-fused", "jax-scan"):
                r = rows[threads, cell, impl]
                assert r["status"] == "ok", r
                assert r["fwd_median_s"] > 0 and r["fwdbwd_median_s"] > 0
                assert r["compile_fwd_s"] > 0 and r["compile_fwdbwd_s"] > 0
                assert r["max_abs_err_output"] <= 1e-4 and r["max_rel_err_grads"] <= 1e-3
                assert isinstance(r["peak_bytes"], int) and r["peak_bytes"] > 0
                assert r["xla_temp_bytes"] >= 0
    for row in report["ratios"]:
        for key in (
            "jax-fused_over_jax-scan_fwd",
            "jax-fused_over_jax-scan_fwdbwd",
            "jax-fused_over_keras_fwdbwd",
            "jax-scan_over_keras_fwdbwd",
            "jax-fused_peak_over_jax-scan",
        ):
            assert row[key] is not None and row[key] > 0, (key, row)
    for cell in cells:
        per_regime = report["summary"]["tiny"][cell]["jax-fused_over_jax-scan_fwdbwd"]
        assert set(per_regime) == {str(t) for t in regimes}
