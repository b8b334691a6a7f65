"""Every example runs as ``python examples/<name>.py --tiny``; the Keras example's two loss
curves agree step by step."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
#: |loss_keras − loss_rnngen| / loss_keras at every one of the first 100 optimiser steps
CURVE_RTOL = 1e-4


def run_example(name: str, *args: str, cwd: Path) -> str:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), "--tiny", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_numpy_char_rnn(tmp_path):
    out = run_example("numpy_char_rnn", cwd=tmp_path)
    assert "nats/char" in out and "iteration 20" in out


def test_custom_cell(tmp_path):
    pytest.importorskip("matplotlib")
    out = run_example("custom_cell", "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert "MGU(8) on (2, 5, 3) -> (2, 5, 8)" in out
    assert (tmp_path / "o" / "mgu_generated" / "mgu_numpy.py").is_file()
    report = (tmp_path / "o" / "report" / "report.html").read_text()
    assert "mgu" in report and "simple_rnn" in report


@pytest.mark.tf
def test_seed_example(tmp_path):
    pytest.importorskip("tensorflow")
    out = run_example("seed_example", cwd=tmp_path)
    for label in ("output:", "whole_sequence_output:", "final_state:"):
        assert label in out
    assert "shape=(4, 4)" in out and "shape=(4, 4, 4)" in out


@pytest.mark.tf
def test_keras_sequence_classification_smoke(tmp_path):
    pytest.importorskip("tensorflow")
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    out = run_example("keras_sequence_classification", "--out", str(tmp_path), cwd=tmp_path)
    assert "5 optimiser steps" in out
    assert (tmp_path / "keras_vs_rnngen_digits.png").stat().st_size > 1000


@pytest.mark.tf
@pytest.mark.slow
def test_keras_and_generated_loss_curves_agree_for_100_steps():
    """Same initial weights, same batches, dropout 0: the generated layer's loss follows
    Keras's within CURVE_RTOL at each of the first 100 Adam steps (measured: about 2e-6)."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("sklearn")
    spec = importlib.util.spec_from_file_location(
        "kseq", EXAMPLES / "keras_sequence_classification.py"
    )
    kseq = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kseq)
    x, y = kseq.load_digits()
    curves, _ = kseq.train_both(x, y, epochs=3)  # 43 steps per epoch
    a, b = curves["keras"][:100], curves["rnngen"][:100]
    assert len(a) == len(b) == 100
    rel = np.abs(a - b) / np.abs(a)
    assert rel.max() <= CURVE_RTOL, (
        f"step {rel.argmax() + 1}: {a[rel.argmax()]} vs {b[rel.argmax()]}"
    )
    assert a[-10:].mean() < 0.5 * a[:10].mean()  # and it is learning
