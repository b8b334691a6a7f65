"""``rnngen verify --backend jax``: its rows pass on the code ``rnngen build`` writes for every
shipped spec and every test spec, the JSON report holds them, and each JAX mutant (a wrong derived
backward term, the weights read in the wrong gate order, a scan oracle that is itself wrong, a
dropped masked-step gradient) fails the rows that must catch it while the others still pass.
Needs no TensorFlow (the Keras reference runs Keras on the JAX backend in a subprocess)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("jax")
pytest.importorskip("keras")

from rnngen import spec as spec_mod  # noqa: E402
from rnngen import verify  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "spec").glob("*.yaml"))
TEST_SPECS = sorted((ROOT / "tests" / "specs").glob("*.yaml"))

#: the swap of the first two gate blocks of the kernel, put where ``apply`` has its weights
_SWAP = """
    _k = weights["kernel"]
    _n = _k.shape[1] // 3
    weights["kernel"] = jnp.concatenate([_k[:, _n : 2 * _n], _k[:, :_n], _k[:, 2 * _n :]], 1)
"""
_CAST = "    weights = {name: w.astype(dtype) for name, w in weights.items()}\n"

#: mutant -> (mutation of the built gru_jax.py, rows that must fail, rows that must pass)
MUTANTS = {
    "backward drops the update gate's carry": (
        lambda t: t.replace("d_h * z", "0.0 * d_h * z"),  # in every variant's BPTT
        {"autodiff", "finite_diff"},
        set(),
    ),
    "weights read in the wrong gate order (z and r swapped)": (
        lambda t: t.replace(_CAST, _CAST + _SWAP),
        {"keras"},
        {"autodiff", "finite_diff"},
    ),
    "the scan oracle's step differs": (
        lambda t: t.replace(
            "h = h_prev * z + hh * (1 - z)\n    return h, [h]",
            "h = h_prev * z + hh * (1 - z) * 1.001\n    return h, [h]",
        ),
        {"autodiff", "keras"},
        {"finite_diff"},
    ),
    "masked steps lose the carried gradient": (
        lambda t: t.replace("d_h = d_h + d_h_skip", "d_h = d_h"),
        {"autodiff", "finite_diff"},
        set(),
    ),
}


def _jax_rows(results):
    return {r.check: r for r in results if r.backend == "jax"}


def _cli_json(paths, tmp_path) -> dict:
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rnngen",
            "verify",
            "--backend",
            "jax",
            "--quick",
            "--json",
            str(out),
        ]
        + [str(p) for p in paths],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_verify_jax_passes_on_the_shipped_specs(tmp_path):
    report = _cli_json(SHIPPED, tmp_path)
    assert report["ok"] is True
    rows = [r for r in report["results"] if r["backend"] == "jax"]
    assert {r["backend"] for r in report["results"]} == {"jax"}
    by_spec = {}
    for r in rows:
        by_spec.setdefault(r["spec"], {})[r["check"]] = r
    assert set(by_spec) == {p.stem for p in SHIPPED}
    for spec, checks in by_spec.items():
        assert set(checks) == {"autodiff", "keras", "finite_diff", "hygiene"}, (spec, checks)
        for r in checks.values():
            assert r["status"] == "pass" and r["configs"] > 0, r
        # the tolerances of the other backends: float64 for autodiff, float32 for Keras
        assert checks["autodiff"]["tol"] == verify.tol_text("float64")
        assert checks["keras"]["tol"] == verify.tol_text("float32")
        assert checks["autodiff"]["max_rel"] <= 1e-8
        assert checks["keras"]["max_rel"] <= 1e-4
        assert checks["finite_diff"]["max_rel"] <= verify.FD_TOL


@pytest.mark.slow
def test_verify_jax_passes_on_the_test_specs(tmp_path):
    report = _cli_json(TEST_SPECS, tmp_path)
    assert report["ok"] is True
    rows = [r for r in report["results"] if r["backend"] == "jax"]
    checks = {}
    for r in rows:
        checks.setdefault(r["spec"], set()).add(r["check"])
    names = {spec_mod.load(p).name for p in TEST_SPECS}
    assert set(checks) == names
    for name in names:  # no Keras reference for the test specs: no keras row
        assert checks[name] == {"autodiff", "finite_diff", "hygiene"}, (name, checks[name])
    for r in rows:
        assert r["status"] == "pass" and r["configs"] > 0, r


@pytest.mark.slow
@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_jax_mutant_is_caught(mutant, tmp_path):
    mutate, must_fail, must_pass = MUTANTS[mutant]
    built = tmp_path / "built"
    verify.build_into(ROOT / "spec" / "gru.yaml", built)
    source = (built / "gru_jax.py").read_text(encoding="utf-8")
    mutated = mutate(source)
    assert mutated != source, "mutation did not apply"
    folder = tmp_path / "mutant"
    folder.mkdir()
    shutil.copy(built / "gru_numpy.py", folder / "gru_numpy.py")
    (folder / "gru_jax.py").write_text(mutated, encoding="utf-8")
    results = verify.verify_spec(
        ROOT / "spec" / "gru.yaml",
        backends=("jax",),
        quick=True,
        module_dir=folder,
        checks=tuple(sorted(must_fail | must_pass)),
    )
    rows = _jax_rows(results)
    assert set(rows) == must_fail | must_pass, rows
    for check in must_fail:
        assert rows[check].status == "fail", (check, rows[check])
        assert rows[check].failure and rows[check].failure.get("config"), rows[check]
    for check in must_pass:
        assert rows[check].status == "pass", (check, rows[check])
