"""Shared test helpers: the generated layers by Keras class name, and the tolerance checks.

The tolerances are the verifier's (:mod:`rnngen.verify.compare`) and so is the table of shipped
cells (:data:`rnngen.verify.configs.SHIPPED`), so ``rnngen verify`` and the tests hold the
generated code to one standard; ``test_numpy_gradcheck`` asserts the tolerances are still the
core issue's values and the table still names the shipped specs.
"""

from __future__ import annotations

import functools
import importlib

import numpy as np

from rnngen import codegen, spec
from rnngen.verify.compare import FD_TOL, FWD_TOL, GRAD_TOL
from rnngen.verify.configs import SHIPPED

#: Tolerances of the core issue (asserted, not printed).
FORWARD_ATOL_F32 = FWD_TOL["float32"]  # 1e-5 absolute
GRAD_RTOL_F32 = GRAD_TOL["float32"]  # 1e-4 relative to the largest entry
FD_RTOL_F64 = FD_TOL  # 1e-6

#: Keras class name -> the stem of its generated modules (``generated/<stem>_numpy.py``).
MODULES = SHIPPED


@functools.cache
def cell_spec(name: str):
    """The shipped spec ``spec/<name>.yaml`` (``name``: a Keras class name or a module stem)."""
    return spec.load(codegen.spec_dir() / f"{MODULES.get(name, name)}.yaml")


def generated_module(kind: str, backend: str = "numpy"):
    """``generated.<stem>_<backend>`` for the Keras class name ``kind``."""
    return importlib.import_module(f"generated.{MODULES[kind]}_{backend}")


def numpy_layer_class(kind: str):
    return getattr(generated_module(kind, "numpy"), kind)


def tf_layer_class(kind: str):
    return getattr(generated_module(kind, "tf"), kind)


def assert_close_abs(actual, expected, atol, what=""):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    err = float(np.max(np.abs(actual - expected))) if actual.size else 0.0
    assert err <= atol, f"{what}: max abs error {err:.3g} > {atol:g}"


def assert_close_rel(actual, expected, rtol, what=""):
    """Error relative to the largest entry of ``expected``."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if not actual.size:
        return
    scale = max(float(np.max(np.abs(expected))), 1e-12)
    err = float(np.max(np.abs(actual - expected))) / scale
    assert err <= rtol, f"{what}: max error {err:.3g} relative to the largest entry > {rtol:g}"


#: float64 autodiff tolerance of the derivation tests: forward errors are <= 1e-10 and
#: gradient errors <= 1e-8 (relative to the largest entry); ``max_rel`` is the worse of the two
AUTODIFF_RTOL_F64 = 1e-8


def assert_autodiff_passes(path) -> dict:
    """NumPy float64, TF loop and TF fused all match the verifier's equation interpreter under
    autodiff, on the quick configuration matrix. Returns the rows by (backend, check)."""
    import pytest

    pytest.importorskip("tensorflow")
    from rnngen import verify

    results = verify.verify_spec(
        path, backends=("numpy", "tf"), quick=True, seed=0, checks=("autodiff",)
    )
    rows = {(r.backend, r.check): r for r in results}
    assert {("numpy", "autodiff"), ("tf", "autodiff/loop"), ("tf", "autodiff/fused")} <= set(rows)
    bad = {k: (r.status, r.note, r.failure) for k, r in rows.items() if r.status != "pass"}
    assert not bad, bad
    for key, r in rows.items():
        assert r.configs > 0, key
        assert r.max_rel <= AUTODIFF_RTOL_F64, (key, r.max_rel)
    return rows
