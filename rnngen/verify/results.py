"""One row of the ``rnngen verify`` report: :class:`CheckResult`, and :func:`run_matrix`,
which runs a check over its configurations into one row."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from .compare import Compared

#: every check, in report order (see :mod:`rnngen.verify`)
CHECKS = ("keras", "autodiff", "finite_diff", "truncate", "dropout", "init", "hygiene")


@dataclass
class CheckResult:
    spec: str
    backend: str
    check: str
    status: str  # "pass" | "fail" | "n/a" | "error"
    configs: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0
    tol: str = ""
    seconds: float = 0.0
    note: str = ""
    remark: str = ""  # informational, e.g. a Keras bug that was worked around
    failure: dict | None = None  # smallest failing configuration and its worst entry

    @property
    def passed(self) -> bool:
        return self.status in ("pass", "n/a")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class ProgressTask:
    def __init__(self, progress, task):
        self.progress, self.task = progress, task

    def advance(self, n=1):
        if self.progress is not None:
            self.progress.advance(self.task, n)


def run_matrix(
    name, check, backend, configs, fn, dtype_for_tol, progress, defaults, label=None
) -> CheckResult:
    """Run ``fn(cfg) -> Compared`` over ``configs`` into one row; ``label(cfg)`` names the
    smallest failing configuration (default ``cfg.label(defaults)``)."""
    t0 = time.perf_counter()
    res = CheckResult(spec=name, backend=backend, check=check, status="pass", configs=0)
    failures = []
    skipped = 0
    for cfg in configs:
        try:
            with np.errstate(all="ignore"):
                c = fn(cfg)
        except Exception as err:  # noqa: BLE001 - reported as a failing row
            c = Compared(
                ok=False,
                max_abs=float("inf"),
                max_rel=float("inf"),
                worst={
                    "tensor": "exception",
                    "index": None,
                    "analytic": f"{type(err).__name__}: {err}"[:300],
                    "reference": None,
                    "rel": float("inf"),
                    "tol": None,
                },
            )
        if c.skipped:
            skipped += 1
            progress.advance()
            continue
        res.configs += 1
        res.max_abs = max(res.max_abs, c.max_abs)
        res.max_rel = max(res.max_rel, c.max_rel)
        if not c.ok:
            failures.append((cfg, c))
        progress.advance()
    res.tol = dtype_for_tol
    if failures:
        cfg, c = min(failures, key=lambda fc: fc[0].size(defaults))
        res.status = "fail"
        res.failure = {
            "config": label(cfg) if label else cfg.label(defaults),
            "failing_configs": len(failures),
            **c.worst,
        }
        res.note = f"{len(failures)}/{res.configs} configurations fail"
    if skipped:
        res.remark = (res.remark + "; " if res.remark else "") + (
            f"{skipped} configuration(s) skipped: the reference overflowed (inf/nan)"
        )
        if res.configs == 0:  # nothing was compared: not a pass
            res.status = "fail"
            res.note = "every configuration overflowed in the reference"
    res.seconds = round(time.perf_counter() - t0, 2)
    return res
