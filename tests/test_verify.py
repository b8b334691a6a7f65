"""``rnngen verify``: passes on the shipped specs and a new spec, and catches deliberate bugs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")

from rnngen import (
    codegen,  # noqa: E402
    verify,  # noqa: E402
)
from rnngen import spec as spec_mod  # noqa: E402
from rnngen.verify import hygiene  # noqa: E402

pytestmark = pytest.mark.tf

SPEC_DIR = codegen.spec_dir()
GENERATED = SPEC_DIR.parent / "generated"

INDRNN = """\
name: indrnn
class_name: IndRNN
doc: Independently recurrent network, h_t = activation(x_t @ kernel + u * h_{t-1} + bias).
options:
  activation: tanh
  use_bias: true
weights:
  kernel: {shape: [input_dim, units], initializer: glorot_uniform}
  u: {shape: [units], initializer: ones}
  bias: {shape: [units], initializer: zeros, when: use_bias}
states: [h]
output: h
dropout: {x: dropout, h_prev: recurrent_dropout}
full_dropout: drops
step:
  h: activation(x @ kernel + u * h_prev + bias)
"""


def _status(results):
    return {(r.backend, r.check): r.status for r in results}


def _failing(results):
    return {r.check for r in results if r.status in ("fail", "error")}


@pytest.mark.parametrize("name", ["simple_rnn", "gru", "lstm"])
def test_shipped_specs_pass_quick(name):
    results = verify.verify_spec(SPEC_DIR / f"{name}.yaml", quick=True, seed=0)
    bad = [(r.check, r.failure) for r in results if not r.passed]
    assert not bad, bad
    checks = {r.check for r in results if r.status == "pass"}
    assert checks == {"keras", "autodiff", "finite_diff", "truncate", "dropout", "init", "hygiene"}
    assert all(r.configs > 0 for r in results)


def test_new_spec_without_reference(tmp_path):
    path = tmp_path / "indrnn.yaml"
    path.write_text(INDRNN, encoding="utf-8")
    results = verify.verify_spec(path, quick=True, seed=1, full_jacobian=True)
    status = _status(results)
    assert status[("numpy", "keras")] == "n/a"
    for check in ("autodiff", "finite_diff", "truncate", "dropout", "init", "hygiene"):
        assert status[("numpy", check)] == "pass", [r for r in results if r.check == check]


def test_new_spec_without_reference_tf_backend(tmp_path):
    """A brand-new cell (built into a temp folder) is verified on the tf backend too."""
    path = tmp_path / "indrnn.yaml"
    path.write_text(INDRNN, encoding="utf-8")
    results = verify.verify_spec(path, backends=("numpy", "tf"), quick=True, seed=1)
    status = _status(results)
    bad = [(r.backend, r.check, r.failure) for r in results if not r.passed]
    assert not bad, bad
    for check in ("hygiene", "autodiff/loop", "autodiff/fused", "dropout/loop", "init"):
        assert status[("tf", check)] == "pass", status
    tf_rows = {r.check: r for r in results if r.backend == "tf"}
    assert not any(c.startswith("keras") for c in tf_rows)  # no Keras reference for IndRNN
    auto = tf_rows["autodiff/fused"]
    assert auto.configs == len(verify.configurations(spec_mod.load(path), quick=True))
    assert auto.tol == verify.tol_text("float64")  # the generated layer runs in float64
    assert auto.max_rel < 1e-10


def test_shipped_spec_tf_backend_includes_dropout():
    results = verify.verify_spec(
        SPEC_DIR / "gru.yaml", backends=("tf",), quick=True, checks=("keras", "autodiff")
    )
    cs = spec_mod.load(SPEC_DIR / "gru.yaml")
    cfgs = verify.configurations(cs, quick=True)
    assert any(c.dropout > 0 and c.recurrent_dropout > 0 for c in cfgs)
    rows = {r.check: r for r in results}
    assert set(rows) == {"keras/loop", "keras/fused", "autodiff/loop", "autodiff/fused"}
    for r in rows.values():
        assert r.status == "pass", (r.check, r.failure)
        assert r.configs == len(cfgs)  # dropout configurations included


def test_cli_json(tmp_path):
    out = tmp_path / "r.json"
    ok = verify.run_cli(
        [SPEC_DIR / "simple_rnn.yaml"], backends=["numpy"], quick=True, seed=3, json_path=out
    )
    assert ok
    import json

    data = json.loads(out.read_text())
    assert data["ok"] and data["seed"] == 3
    assert {r["check"] for r in data["results"]} == set(verify.CHECKS)


def test_numpy_module_argument_injects_a_module(tmp_path):
    source = (GENERATED / "simple_rnn_numpy.py").read_text(encoding="utf-8")
    path = tmp_path / "mutant.py"
    path.write_text(source.replace("d_x = _per_step(", "d_x = -_per_step("), "utf-8")
    module = verify.import_path(path)
    results = verify.verify_spec(
        SPEC_DIR / "simple_rnn.yaml", quick=True, numpy_module=module, checks=("autodiff",)
    )
    assert [(r.check, r.status) for r in results] == [("autodiff", "fail")]
    assert results[0].failure["tensor"] == "d inputs"


# -- mutation tests: a deliberate bug in the generated source must be caught ---------------------


def _swap(text, a, b):
    return text.replace(a, "\0").replace(b, a).replace("\0", b)


MUTANTS = {
    # name: (spec, mutate(text) -> text, checks that must fail)
    "gradient sign": (
        "simple_rnn",
        lambda t: t.replace("d_x = _per_step(", "d_x = -_per_step("),
        {"keras", "autodiff", "finite_diff"},
    ),
    "missing bias gradient": (
        "simple_rnn",
        lambda t: re.sub(r"d_bias = .*\n", 'd_bias = np.zeros_like(weights["bias"])\n', t),
        {"keras", "autodiff", "finite_diff"},
    ),
    "recurrent dropout mask on the wrong gate": (
        "gru",
        lambda t: t.replace(
            'h_prev_mask_1 = masks["h_prev"][1]', 'h_prev_mask_1 = masks["h_prev"][2]'
        ),
        {"keras", "autodiff", "finite_diff"},
    ),
    "mask ignored in backward": (
        "simple_rnn",
        lambda t: t.replace('x, mask = tape["x"], tape["mask"]', 'x, mask = tape["x"], None'),
        {"keras", "autodiff", "finite_diff"},
    ),
    "go_backwards outputs reversed": (
        "simple_rnn",
        lambda t: t.replace(
            "return np.swapaxes(outputs, 0, 1), final_state, tape",
            "return np.swapaxes(outputs[::-1] if go_backwards else outputs, 0, 1), "
            "final_state, tape",
        ),
        {"keras", "autodiff", "finite_diff"},
    ),
    "GRU gates z and r swapped": (
        "gru",
        lambda t: _swap(t, "0:units]", "units : 2 * units]"),
        {"keras", "autodiff"},
    ),
    "activity regularizer gradient dropped": (
        "lstm",
        lambda t: t.replace(
            "d_output = d_output + _penalty_grad(reg, output) / max(B, 1)", "d_output = d_output"
        ),
        {"keras", "autodiff"},
    ),
    "numpy module imports tensorflow": (
        "simple_rnn",
        lambda t: t.replace("import numpy as np\n", "import numpy as np\nimport tensorflow\n", 1),
        {"hygiene"},
    ),
}


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_mutant_is_caught(mutant, tmp_path):
    name, mutate, must_fail = MUTANTS[mutant]
    source = (GENERATED / f"{name}_numpy.py").read_text(encoding="utf-8")
    mutated = mutate(source)
    assert mutated != source, "mutation did not apply"
    (tmp_path / f"{name}_numpy.py").write_text(mutated, encoding="utf-8")
    checks = (
        ("keras", "autodiff", "finite_diff", "hygiene")
        if "hygiene" in must_fail
        else ("keras", "autodiff", "finite_diff")
    )
    results = verify.verify_spec(
        SPEC_DIR / f"{name}.yaml", quick=True, seed=0, module_dir=tmp_path, checks=checks
    )
    failing = _failing(results)
    assert must_fail <= failing, (failing, [r.failure for r in results])
    for r in results:
        if r.status == "fail":
            assert r.failure and r.failure.get("config"), r
    # the unmutated module passes the same checks from the same folder
    shutil.copy(GENERATED / f"{name}_numpy.py", tmp_path / f"{name}_numpy.py")
    assert not _failing(
        verify.verify_spec(
            SPEC_DIR / f"{name}.yaml", quick=True, seed=0, module_dir=tmp_path, checks=checks
        )
    )


# -- the tf backend: a deliberate bug in the generated TF layer must be caught ------------------


def _fused_v0_grad_sign(text):
    """Flip the sign of the input gradient in the ``grad`` of ``_fused_v0`` only."""
    head, sep, tail = text.partition("def _step_v1(")
    line = "d_x = _seq_matmul("
    assert head.count(line) == 1
    return head.replace(line, "d_x = -_seq_matmul(") + sep + tail


TF_MUTANTS = {
    # name: (mutate(text) -> text, rows that must fail, rows that must pass, dropout-only)
    "fused backward sign": (
        _fused_v0_grad_sign,
        {"keras/fused", "autodiff/fused"},
        {"keras/loop", "autodiff/loop"},
        False,
    ),
    "recurrent dropout mask ignored": (
        lambda t: t.replace("h_prev_dropped = h_prev * h_prev_mask_0", "h_prev_dropped = h_prev"),
        {"keras/loop", "keras/fused", "autodiff/loop", "autodiff/fused"},
        set(),
        True,
    ),
}


@pytest.mark.parametrize("mutant", sorted(TF_MUTANTS))
def test_tf_mutant_is_caught(mutant, tmp_path):
    mutate, must_fail, must_pass, dropout_only = TF_MUTANTS[mutant]
    source = (GENERATED / "simple_rnn_tf.py").read_text(encoding="utf-8")
    mutated = mutate(source)
    assert mutated != source, "mutation did not apply"
    shutil.copy(GENERATED / "simple_rnn_numpy.py", tmp_path / "simple_rnn_numpy.py")
    (tmp_path / "simple_rnn_tf.py").write_text(mutated, encoding="utf-8")
    results = verify.verify_spec(
        SPEC_DIR / "simple_rnn.yaml",
        backends=("tf",),
        quick=True,
        seed=0,
        module_dir=tmp_path,
        checks=("keras", "autodiff"),
    )
    status = _status(results)
    for check in must_fail:
        assert status[("tf", check)] == "fail", status
    for check in must_pass:
        assert status[("tf", check)] == "pass", status
    for r in results:
        if r.status == "fail":
            assert r.failure and r.failure.get("config"), r
            if dropout_only:
                assert "dropout" in r.failure["config"], r.failure
    # the unmutated module passes the same checks from the same folder
    shutil.copy(GENERATED / "simple_rnn_tf.py", tmp_path / "simple_rnn_tf.py")
    assert not _failing(
        verify.verify_spec(
            SPEC_DIR / "simple_rnn.yaml",
            backends=("tf",),
            quick=True,
            seed=0,
            module_dir=tmp_path,
            checks=("keras", "autodiff"),
        )
    )


def test_finite_difference_failure_names_tensor_and_index(tmp_path):
    """A wrong bias gradient: the finite-difference row points at `bias` and an entry of it."""
    source = (GENERATED / "simple_rnn_numpy.py").read_text(encoding="utf-8")
    mutated = re.sub(r"(d_bias = .*)\n", r"\1\n    d_bias[1] += 0.5\n", source)
    assert mutated != source
    (tmp_path / "simple_rnn_numpy.py").write_text(mutated, encoding="utf-8")
    results = verify.verify_spec(
        SPEC_DIR / "simple_rnn.yaml",
        quick=True,
        seed=0,
        module_dir=tmp_path,
        checks=("finite_diff",),
    )
    (row,) = results
    assert row.status == "fail"
    assert row.failure["tensor"] == "bias"
    assert row.failure["index"] == [1]
    assert abs(row.failure["analytic"] - row.failure["reference"]) == pytest.approx(0.5, rel=1e-3)


def test_cell_whose_output_is_not_a_state_verifies_on_both_backends():
    spec = Path(__file__).parent / "specs" / "leaky_readout.yaml"
    results = verify.verify_spec(spec, backends=("numpy", "tf"), quick=True, seed=0)
    rows = {(r.backend, r.check): r.status for r in results}
    assert rows[("numpy", "autodiff")] == "pass" and rows[("tf", "autodiff/fused")] == "pass"
    assert not _failing(results)


@pytest.mark.parametrize("name", ["exotic", "peephole_lstm", "edge", "scaled", "multi", "cond"])
def test_stress_cells_verify_on_both_backends(name):
    """exotic: silu/abs (derivatives from inputs), powers, division, an optional weight;
    peephole_lstm: rows of blocks, a second recurrent product, an equation alternative;
    edge: a product shared by two equations, three states, an output alias."""
    spec = Path(__file__).parent / "specs" / f"{name}.yaml"
    results = verify.verify_spec(spec, backends=("numpy", "tf"), quick=True, seed=1)
    checks = {(r.backend, r.check) for r in results if r.status == "pass"}
    assert {("numpy", "autodiff"), ("numpy", "finite_diff"), ("tf", "autodiff/fused")} <= checks
    assert not _failing(results)


# -- checks outside the configuration matrix: truncated BPTT and initial weights ----------------

OUTSIDE_MUTANTS = {
    # name: (spec, backend, (old, new), check that must fail, text the failing tensor contains)
    "truncate off by one": (
        "simple_rnn",
        "numpy",
        (
            "stop = 0 if truncate is None else max(T - truncate, 0)",
            "stop = 0 if truncate is None else max(T - truncate - 1, 0)",
        ),
        "truncate",
        "d ",
    ),
    "wide orthogonal left untransposed (numpy)": (
        "gru",
        "numpy",
        ("        if rows < cols:\n            q = q.T\n", ""),
        "init",
        "recurrent_kernel (orthogonal): orthonormal rows",
    ),
    "wide orthogonal left untransposed (tf)": (
        "lstm",
        "tf",
        (
            "        init = self.recurrent_initializer\n        return init\n",
            "        init = self.recurrent_initializer\n"
            "        return lambda shape, dtype=None: (\n"
            "            tf.reshape(init(shape[::-1], dtype), shape)\n"
            "        )\n",
        ),
        "init",
        "recurrent_kernel (orthogonal): orthonormal rows",
    ),
    "glorot limit from per-gate fans (numpy)": (
        "gru",
        "numpy",
        (
            "fan_in, fan_out = _fans(shape)",
            "fan_in, fan_out = _fans((*shape[:-1], shape[-1] // 3))",
        ),
        "init",
        "kernel (glorot_uniform): max |w| above the limit",
    ),
    "glorot limit from per-gate fans (tf)": (
        "gru",
        "tf",
        (
            "        init = self.kernel_initializer\n        return init\n",
            "        init = self.kernel_initializer\n"
            "        return lambda shape, dtype=None: tf.concat(\n"
            "            [init((shape[0], shape[1] // 3), dtype) for _ in range(3)], 1\n"
            "        )\n",
        ),
        "init",
        "kernel (glorot_uniform): max |w| above the limit",
    ),
}


@pytest.mark.parametrize("mutant", sorted(OUTSIDE_MUTANTS))
def test_outside_the_matrix_mutant_is_caught(mutant, tmp_path):
    """A bug the configuration matrix cannot see fails its own check, which names the tensor."""
    name, backend, (old, new), check, tensor = OUTSIDE_MUTANTS[mutant]
    for b in ("numpy", "tf"):
        shutil.copy(GENERATED / f"{name}_{b}.py", tmp_path / f"{name}_{b}.py")
    target = tmp_path / f"{name}_{backend}.py"
    source = target.read_text(encoding="utf-8")
    assert source.count(old) >= 1, "mutation did not apply"
    target.write_text(source.replace(old, new), encoding="utf-8")
    backends = ("numpy", "tf") if backend == "tf" else ("numpy",)
    kw = dict(backends=backends, quick=True, seed=0, module_dir=tmp_path, checks=(check,))
    results = verify.verify_spec(SPEC_DIR / f"{name}.yaml", **kw)
    rows = {r.backend: r for r in results}
    row = rows[backend]
    assert row.check == check and row.status == "fail", (row.check, row.status, row.failure)
    assert tensor in row.failure["tensor"], row.failure
    assert row.failure.get("config"), row.failure
    if backend == "tf":  # the NumPy module was not touched
        assert rows["numpy"].status == "pass", rows["numpy"].failure
    # the unmutated module passes the same check from the same folder
    shutil.copy(GENERATED / f"{name}_{backend}.py", target)
    assert not _failing(verify.verify_spec(SPEC_DIR / f"{name}.yaml", **kw))


def test_verify_builds_what_rnngen_build_writes(tmp_path, monkeypatch):
    """A shipped spec is verified from a fresh build, never from generated/: a bug planted in
    generated/ is not what gets checked, and the report says generated/ is stale."""
    fake_root = tmp_path / "root"
    shutil.copytree(SPEC_DIR, fake_root / "spec")
    shutil.copytree(GENERATED, fake_root / "generated")
    broken = fake_root / "generated" / "simple_rnn_numpy.py"
    text = broken.read_text(encoding="utf-8")
    planted = text.replace("d_x = _per_step(", "d_x = -_per_step(")
    assert planted != text, "mutation did not apply"
    broken.write_text(planted, encoding="utf-8")
    monkeypatch.setattr(codegen, "spec_dir", lambda: fake_root / "spec")
    monkeypatch.setattr(codegen, "default_out_dir", lambda: fake_root / "generated")
    results = verify.verify_spec(
        fake_root / "spec" / "simple_rnn.yaml", quick=True, seed=0, checks=("autodiff",)
    )
    assert [(r.check, r.status) for r in results] == [("autodiff", "pass")]
    assert "generated/ is stale" in results[0].remark and "simple_rnn_numpy.py" in results[0].remark


def test_shared_hygiene_interpreter_reports_each_module(tmp_path):
    """The TF modules share one fresh interpreter; a module that fails to import is named on
    its own, and the others still pass."""
    good, bad = tmp_path / "good_tf.py", tmp_path / "bad_tf.py"
    good.write_text("X = 1\n", encoding="utf-8")
    bad.write_text("import no_such_module_anywhere\n", encoding="utf-8")
    procs = hygiene.prestart_hygiene({"spec": tmp_path}, backends=("tf",))
    assert set(procs) == {good.resolve(), bad.resolve()}
    assert hygiene.finish_hygiene(procs[good.resolve()], forbid=False) == (True, "")
    ok, why = hygiene.finish_hygiene(procs[bad.resolve()], forbid=False)
    assert not ok and "no_such_module_anywhere" in why, why


BUILD_ALL = """
import contextlib, json, multiprocessing, os, sys
from pathlib import Path
from rnngen.build import build_files
from rnngen.errors import SpecError
from rnngen.verify import modules

spec_dir, bad = Path(sys.argv[1]), Path(sys.argv[2])
paths = [spec_dir / "simple_rnn.yaml", spec_dir / "gru.yaml"]
calls = []
out = {}


def meanwhile():
    calls.append(len(multiprocessing.active_children()))


def same(built):
    return all(
        (built[p] / name).read_text(encoding="utf-8") == text
        for p in paths
        for name, text in build_files([p]).items()
    )


with contextlib.ExitStack() as stack:
    built, value = modules.build_all(
        paths, stack, meanwhile=meanwhile, when_built=lambda f: (same(f), sorted(map(str, f)))
    )
    out["same"], out["folders"] = same(built), len({str(f) for f in built.values()})
    out["when_built"] = value == (True, sorted(map(str, built)))
out["calls"] = list(calls)
parent, real = os.getpid(), modules.build_into


def fails_in_the_child(path, folder):
    if os.getpid() != parent:
        raise RuntimeError("planted")
    return real(path, folder)


modules.build_into = fails_in_the_child
with contextlib.ExitStack() as stack:
    built, value = modules.build_all(paths, stack, meanwhile=meanwhile, when_built=same)
    out["fallback_same"] = same(built) and value
out["calls_after_fallback"] = len(calls)  # the child may be gone by then
try:
    with contextlib.ExitStack() as stack:
        modules.build_all([paths[0], bad], stack, meanwhile=meanwhile)
except SpecError as err:
    out["error"] = str(err)
out["calls_after_error"] = len(calls)
print(json.dumps(out))
"""


def test_build_all_builds_in_a_child_while_this_process_works(tmp_path):
    """``rnngen verify`` builds every spec in a forked child while it imports TensorFlow (here a
    fresh interpreter: no TensorFlow, one thread): the files are what ``rnngen build`` writes,
    one folder per spec, ``meanwhile`` runs once while the child is alive, and ``when_built``
    sees every file built. A child that fails is not trusted (the specs are built again here,
    then ``when_built`` runs); a bad spec raises its one-line ``SpecError`` before anything
    else runs."""
    import json
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nclass_name: Bad\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-c", BUILD_ALL, str(SPEC_DIR), str(bad)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["same"] and out["folders"] == 2 and out["when_built"], out
    assert out["calls"] == [1], out  # called once, with the building child running
    assert out["fallback_same"] and out["calls_after_fallback"] == 2, out
    assert "bad.yaml" in out["error"] and "missing required key" in out["error"], out
    assert out["calls_after_error"] == 2, out  # refused before TensorFlow would load
