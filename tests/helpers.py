"""Shared test helpers: Keras references and tolerance checks."""

from __future__ import annotations

import importlib

import numpy as np

#: Tolerances of the core issue (asserted, not printed).
FORWARD_ATOL_F32 = 1e-5
GRAD_RTOL_F32 = 1e-4  # relative to the largest entry
FD_RTOL_F64 = 1e-6

MODULES = {"SimpleRNN": "simple_rnn", "GRU": "gru", "LSTM": "lstm"}


def numpy_layer_class(kind: str):
    return getattr(importlib.import_module(f"generated.{MODULES[kind]}_numpy"), kind)


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
