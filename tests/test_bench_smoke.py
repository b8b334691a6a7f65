"""Smoke test for benchmarks/run.py: the tiny configuration runs and writes the expected JSON."""

import json
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
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert {"meta", "results", "ratios", "build", "errors"} <= set(report)
    assert report["errors"] == []
    assert report["meta"]["shapes"] == ["tiny"]
    assert {"reps", "threads", "versions", "ratio_method", "tolerances"} <= set(report["meta"])

    cells = {"simple_rnn", "gru", "lstm"}
    impls = {(r["cell"], r["impl"]) for r in report["results"]}
    for cell in cells:
        for impl in ("numpy", "floor", "keras", "tf-loop", "tf-fused"):
            assert (cell, impl) in impls
    for r in report["results"]:
        assert {"shape", "cell", "impl", "status"} <= set(r)
        if r["impl"] in ("numpy", "floor", "keras"):
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

    assert {row["cell"] for row in report["ratios"]} == cells
    for row in report["ratios"]:
        for key in (
            "numpy_over_keras_fwd",
            "numpy_over_keras_fwdbwd",
            "numpy_over_floor_fwd",
            "numpy_over_floor_fwdbwd",
            "numpy_peak_over_target",
        ):
            assert row[key] is not None and row[key] > 0, (key, row)
        assert "numpy_over_torch_fwdbwd" in row

    # `rnngen build` timing is recorded (its success depends on the templates, not on us)
    assert {"command", "runs_s", "median_s", "error", "files"} <= set(report["build"])
