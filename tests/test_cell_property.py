"""Property: every random well-typed cell builds, and its generated code matches autodiff.

Cells come from ``tests/cellgen.py`` (random specs drawn from the spec grammar). Each is built
into a temporary folder; for every combination of its boolean options (with a random value for
each activation option, and at random a mask with gaps, half the time with
``zero_output_for_mask``, and ``go_backwards``) these, all in float64, are compared forward
(outputs, final states) and backward (gradients of a random projection of them with respect to
the inputs, the initial states and every weight) with ``rnngen.verify``'s independent TF
interpreter of the parsed equations, differentiated by ``tf.GradientTape``, on the same data:

* the generated NumPy layer (its ``backward``);
* the generated TF layer, ``implementation="loop"`` and ``"fused"`` (``tf.GradientTape``);
* the generated PyTorch module's functional ``forward``, ``implementation="fused"`` (derived
  BPTT) and ``"autograd"`` (``torch.autograd.grad``);
* the generated JAX module's ``apply``, ``implementation="fused"`` (``jax.custom_vjp``, derived
  BPTT) and ``"scan"`` (``jax.grad``), inside ``jax.enable_x64(True)`` (restored afterwards).

(``tests/cellbackends.py`` runs the torch and JAX modules.) A backend whose framework is not
installed is left out and the line printed says so; CI installs both. The data carry no dropout
masks (dropout is checked by ``rnngen verify``), so none are passed.

Tolerances (float64, ``s = max(1, T / 20)``, as in the README): forward ``1e-10 * s`` relative
to ``max(1, max|reference|)``; gradients ``1e-8 * s`` relative to the largest entry of the
reference tensor. Kinks (relu, abs, hard_sigmoid, relu6, the shrink functions...) are not
avoided and nothing is tolerated at them: both sides differentiate at the same point, and the
data are continuous random draws (random initial states included), so an argument lands exactly
on a kink with probability zero; the frameworks' one-sided conventions at 0 (relu'(0) = 0) are
the ones the table uses.

A crash (any exception but a SpecError), a mismatch, and a SpecError that does not name a real
problem of the cell are failures. Refusals that do (an equation nothing reads, which the
generator draws on purpose) are counted apart.

Tiers: ``test_cell_sample_matches_autodiff`` checks a fixed-seed sample of 50 cells, each with
its default options and one other combination, the JAX module on the defaults only (a JAX run
is mostly XLA compile time; ~70 s of CPU in all, ~2 minutes when the 2 cores are shared);
``test_cell_property_stress`` checks ``RNNGEN_CELLS`` cells (default 1000), every combination
of options on every backend (~2 s of CPU a cell), and runs
only when selected: ``RNNGEN_CELLS=1000 python -m pytest -m stress tests/test_cell_property.py``
(``RNNGEN_SEED`` picks another seed). Reproduce cell ``i`` of a run with
``cellgen.cell_from_seed(seed, i).yaml``.
"""

from __future__ import annotations

import os
from collections import Counter

import cellgen
import pytest
from hypothesis import HealthCheck, given, settings

FWD_TOL, GRAD_TOL = 1e-10, 1e-8  # float64, times s = max(1, T / 20)
CI_SEED, CI_CELLS = 9, 50
CI_COMBOS = 2  # option combinations per cell in CI (defaults + one); the stress tier checks all
#: option combinations per cell on which CI runs the torch and JAX modules (None: all CI_COMBOS);
#: a JAX run compiles two XLA scans (~0.5-2 s a configuration), so CI runs it on the defaults
CI_MODULE_COMBOS = {"torch": None, "jax": 1}


def test_verifier_applies_the_readme_tolerances():
    """compare() (reused here) must judge with exactly the tolerances this file states."""
    api = cellgen._api()
    assert api["FWD_TOL"]["float64"] == FWD_TOL
    assert api["GRAD_TOL"]["float64"] == GRAD_TOL


REQUIRED = [
    *(f"states:{n}" for n in (1, 2, 3)),
    *(
        f"lhs:{k}"
        for k in (
            "x",
            "prev",
            "new_state",
            "intermediate",
            "weight_only",
            "nested",
            "sum",
            "func",
            "power",
            "mul",
            "scaled",
        )
    ),
    "new_state_lhs_direct",
    "pow_lhs_unparenthesized",
    "pow:int",
    "pow:negative",
    "pow:fractional",
    "div",
    "dead",
    "alternatives",
    "when_and_or",
    "output:not_state",
    "activation_option",
    "fn:activation_option",
    "weight_when",
    "shared_weight",
    "fused:matrix",
    "fused:vector",
    "stacked:vector",
    "intermediate:input_dim",
    "product:to_input_dim",
    *(f"layout:{k}" for k in ("reorder", "stack", "rows", "extra_block")),
]


def test_generator_covers_the_grammar():
    """Across the CI sample's seed, every construct the issue lists is drawn (no TF needed)."""
    counts: Counter = Counter()
    for i in range(300):
        counts.update(set(cellgen.cell_from_seed(CI_SEED, i).features))
    missing = [f for f in REQUIRED if counts[f] == 0]
    missing += [f"fn:{n}" for n in cellgen.FUNCS if counts[f"fn:{n}"] == 0]
    assert not missing, f"never drawn in 300 cells: {missing}"
    sample: Counter = Counter()
    for i in range(CI_CELLS):
        sample.update(set(cellgen.cell_from_seed(CI_SEED, i).features))
    missing = [f for f in REQUIRED if not f.startswith("layout:") and sample[f] == 0]
    assert not missing, f"the {CI_CELLS}-cell CI sample never draws {missing}"


@settings(
    max_examples=50,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cellgen.cells())
def test_grammar_accepts_drawn_cells(cell):
    """The Hypothesis strategy: every drawn cell parses, or is refused for a real problem."""
    from rnngen.errors import SpecError
    from rnngen.spec import parse

    try:
        parse(cell.yaml, "cell.yaml")
    except SpecError as err:
        bad = [str(p) for p in err.problems if not cellgen._legit(str(p), cell.dead)]
        assert not bad, "\n".join(bad) + "\n" + cell.yaml


def _explain(summary) -> str:
    lines = [summary.report()]
    shown = set()
    for cell, res in summary.failures:
        sigs = [f.signature() for f in res.failures if f.signature() not in shown]
        if not sigs:
            continue
        shown.update(sigs)
        lines.append(f"--- cell {cell.seed}:")
        lines += [f"    {f.kind} {f.backend} [{f.config}]: {f.message}" for f in res.failures[:4]]
        lines.append(cell.yaml)
    return "\n".join(lines)


@pytest.mark.tf
def test_cell_sample_matches_autodiff(capsys):
    pytest.importorskip("tensorflow")
    x64_before = _jax_x64()
    summary = cellgen.run_sample(
        CI_SEED, CI_CELLS, max_combos=CI_COMBOS, module_combos=CI_MODULE_COMBOS
    )
    assert _jax_x64() == x64_before, "the JAX runs left jax_enable_x64 changed"
    with capsys.disabled():
        print(f"\ncell property sample: {summary.line()}\n  {summary.backends_line()}")
    assert summary.cells == CI_CELLS
    assert summary.failed == 0, _explain(summary)
    # the sample must mostly test code, not refusals and overflows
    assert summary.passed >= 0.8 * CI_CELLS, summary.report()
    _assert_every_backend_ran(summary, CI_MODULE_COMBOS)


def _jax_x64():
    if not cellgen.cellbackends.installed("jax"):
        return None
    import jax

    return bool(jax.config.jax_enable_x64)


def _assert_every_backend_ran(summary, module_combos=None):
    """Each module backend that is built and installed compared every cell the NumPy layer did,
    and every configuration too where it runs on all of them."""
    built = {b.name for b in cellgen._codegen_backends()}
    for framework, _, labels, _ in cellgen.MODULE_BACKENDS:
        if framework not in built or not cellgen.cellbackends.installed(framework):
            continue
        for backend, _ in labels:
            assert summary.cells_checked[backend] == summary.cells_checked["numpy"], (
                f"{backend} compared {summary.cells_checked[backend]} cells, NumPy "
                f"{summary.cells_checked['numpy']}\n" + summary.report()
            )
            if (module_combos or {}).get(framework) is None:
                assert summary.checked[backend] == summary.checked["numpy"], summary.report()


@pytest.mark.stress
def test_cell_property_stress(request, capsys):
    if "stress" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("run with -m stress (RNNGEN_CELLS=1000 by default)")
    pytest.importorskip("tensorflow")
    n = int(os.environ.get("RNNGEN_CELLS", "1000"))
    seed = int(os.environ.get("RNNGEN_SEED", "1"))

    def progress(i, cell, res):
        if (i + 1) % 100 == 0:
            with capsys.disabled():
                print(f"  {i + 1}/{n} cells", flush=True)

    summary = cellgen.run_sample(seed, n, progress=progress)
    with capsys.disabled():
        print(f"\ncell property stress: {summary.report()}")
        print(
            "features (cells using each): "
            + ", ".join(f"{k}={v}" for k, v in sorted(summary.features.items()))
        )
    assert summary.failed == 0, _explain(summary)
    _assert_every_backend_ran(summary)
