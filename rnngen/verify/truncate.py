"""The ``truncate`` check of ``rnngen verify``: ``backward(truncate=k)`` of the NumPy layer.

Truncated BPTT over the last ``k`` processed steps is compared with autodiff of the independent
equation interpreter in which the gradient is stopped (``tf.stop_gradient``) at processed step
``T - k``: on the states and the carried output entering that step and on every earlier output.
Both must agree with the ``autodiff`` tolerances (float64), for several ``k``, with masks,
``go_backwards``, dropout and regularizers; an off-by-one in where the loop stops fails here.
"""

from __future__ import annotations

from dataclasses import replace

from ..spec import CellSpec
from .compare import Compared, compare, tol_text
from .configs import Config, all_features, declared_dropout
from .data import make_data
from .layers import run_numpy_layer
from .refs import run_equations
from .results import CheckResult, run_matrix

#: processed steps kept by truncation (T = 6 in every configuration): quick / full
STEPS = {True: (2, 5), False: (1, 2, 3, 5, 6)}


def truncate_configurations(cs: CellSpec, quick: bool = False) -> list[tuple[Config, int]]:
    """(configuration, k) pairs; the configurations are ``T = 6``."""
    base = tuple(cs.defaults().items())
    cfgs = [Config(base, initial_state=True), all_features(base, regularizers=True)]
    if not quick:
        cfgs += [
            Config(base, return_sequences=False, initial_state=True),
            Config(base, mask=True, zero_output_for_mask=True, initial_state=True),
            Config(base, stateful=True, mask=True),
        ]
    cfgs = declared_dropout(cs, cfgs)
    steps = STEPS[bool(quick)]
    if quick:  # one k per configuration
        return [(cfg, steps[i % len(steps)]) for i, cfg in enumerate(cfgs)]
    return [(cfg, k) for cfg in cfgs for k in steps]


def truncate_check(module, cs: CellSpec, cfg: Config, k: int, seed: int) -> Compared:
    data = make_data(module, cs, cfg, seed)
    ours = run_numpy_layer(module, cs, cfg, data, "float64", truncate=k)
    ref = run_equations(cs, cfg, data, truncate=k)
    return compare(ours, ref, "float64", cfg.T)


def numpy_rows(cs: CellSpec, module, quick, seed, prog, defaults) -> list[CheckResult]:
    """One ``truncate`` row; a failing configuration is named with its ``truncate=k``."""
    pairs = {}
    for cfg, k in truncate_configurations(cs, quick):
        pairs[replace(cfg, options=(*cfg.options, ("truncate", k)))] = (cfg, k)

    def fn(shown):
        cfg, k = pairs[shown]
        return truncate_check(module, cs, cfg, k, seed)

    tol = tol_text("float64")
    return [run_matrix(cs.name, "truncate", "numpy", list(pairs), fn, tol, prog, defaults)]
