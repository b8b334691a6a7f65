"""``rnngen verify --backend torch``: its rows pass on the code ``rnngen build`` writes, and
each torch mutant (a wrong derived backward, a wrong interop gate order, a plain loop that
disagrees with the fused op, a dropped masked-step gradient) fails the checks that must catch
it while the others still pass. Needs no TensorFlow."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")

from rnngen import verify  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHECKS = ("keras", "autodiff", "finite_diff")

#: mutant -> (mutation of generated/gru_torch.py, rows that must fail, rows that must pass)
MUTANTS = {
    "backward drops the update gate's carry": (
        lambda t: t.replace(
            "d_h = d_h * z + d_h_prev_via_recurrent_kernel", "d_h = d_h_prev_via_recurrent_kernel"
        ),
        {"autograd", "finite_diff"},
        set(),
    ),
    "interop keeps torch's gate order": (
        lambda t: t.replace(
            "torch.cat([a[n : 2 * n], a[:n], a[2 * n :]])",
            "torch.cat([a[:n], a[n : 2 * n], a[2 * n :]])",
        ),
        {"nn"},
        {"autograd", "finite_diff"},
    ),
    "plain loop's step differs": (
        lambda t: t.replace(
            "h = h_prev * z + hh * (1 - z)\n    return h, [h]",
            "h = h_prev * z + hh * (1 - z) * 1.001\n    return h, [h]",
        ),
        {"autograd", "nn"},
        {"finite_diff"},
    ),
    "masked steps lose the carried gradient": (
        lambda t: t.replace("d_h = d_h + d_h_skip", "d_h = d_h"),
        {"autograd"},
        set(),
    ),
}


def _status(results):
    return {r.check: r.status for r in results if r.backend == "torch"}


@pytest.mark.parametrize(
    "path", [ROOT / "spec" / "gru.yaml", ROOT / "tests" / "specs" / "mgu.yaml"]
)
def test_verify_torch_passes(path):
    results = verify.verify_spec(path, backends=("torch",), quick=True, checks=CHECKS)
    status = _status(results)
    expected = {"autograd", "finite_diff"} | ({"nn"} if path.parent.name == "spec" else set())
    assert set(status) == expected, status
    assert all(s == "pass" for s in status.values()), [r for r in results if not r.passed]
    assert all(r.configs > 0 for r in results)


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_torch_mutant_is_caught(mutant, tmp_path):
    mutate, must_fail, must_pass = MUTANTS[mutant]
    with_built = tmp_path / "built"
    verify.build_into(ROOT / "spec" / "gru.yaml", with_built)
    source = (with_built / "gru_torch.py").read_text(encoding="utf-8")
    mutated = mutate(source)
    assert mutated != source, "mutation did not apply"
    folder = tmp_path / "mutant"
    folder.mkdir()
    shutil.copy(with_built / "gru_numpy.py", folder / "gru_numpy.py")
    (folder / "gru_torch.py").write_text(mutated, encoding="utf-8")
    results = verify.verify_spec(
        ROOT / "spec" / "gru.yaml",
        backends=("torch",),
        quick=True,
        module_dir=folder,
        checks=CHECKS,
    )
    status = _status(results)
    for check in must_fail:
        assert status[check] == "fail", status
    for check in must_pass:
        assert status[check] == "pass", status
    for r in results:
        if r.status == "fail":
            assert r.failure and r.failure.get("config"), r
