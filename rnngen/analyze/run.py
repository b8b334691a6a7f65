"""Run every part of the analysis and collect the numbers (no plotting, no printing)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import gradients, spectra, training
from .blas import single_threaded
from .cells import DEFAULT, VARIANTS, Cell, Variant, load_cells
from .tasks import LENGTHS

#: candidate exploding configurations for the clipping experiment; the one whose measured
#: Jacobian growth factor is largest is used
EXPLODING = (
    Variant(gain=1.5),
    Variant(gain=2.0),
    Variant(activation="relu", gain=1.5),
    Variant(activation="relu", gain=2.0),
)


@dataclass
class Settings:
    units: int = 32
    steps: int = 100
    seeds: int = 5
    batch: int = 8
    input_dim: int = 8
    train: str | None = None
    lengths: tuple[int, ...] = LENGTHS
    train_steps: int = 3000
    train_units: int = 32
    train_batch: int = 32
    clip_steps: int = 60
    variants: tuple[Variant, ...] = field(default=VARIANTS)

    def work(self, n_cells: int) -> int:
        """Progress units: one per (cell, variant) in part 1, one per cell in parts 2 and 4,
        one per evaluation in part 3."""
        total = n_cells * (len(self.variants) + 2)
        if self.train:
            evals = sum(max(1, self.train_steps // self.eval_every) for _ in self.lengths)
            total += n_cells * evals
        return total

    @property
    def eval_every(self) -> int:
        return max(1, min(100, self.train_steps // 10))


def analyze(paths: list[Path], settings: Settings, *, tick=None) -> dict:
    """All parts for the specs at ``paths``; a :class:`~rnngen.errors.SpecError` for bad ones."""
    s = settings
    size = dict(units=s.units, steps=s.steps, input_dim=s.input_dim, batch=s.batch)
    started = time.perf_counter()
    results: dict = {"settings": _settings_dict(s), "cells": {}}
    with contextlib.ExitStack() as stack:
        stack.enter_context(single_threaded())
        cells = load_cells(paths, stack)
        results["order"] = [c.name for c in cells]
        for cell in cells:
            flow = gradients.gradient_flow(cell, s.variants, seeds=s.seeds, tick=tick, **size)
            table = spectra.spectra_table(
                cell, flow, units=s.units, input_dim=s.input_dim, seeds=s.seeds
            )
            eig = spectra.cell_spectra(cell, DEFAULT, units=s.units, input_dim=s.input_dim, seeds=1)
            _tick(tick)
            trunc = gradients.truncation_error(cell, seeds=s.seeds, **size)
            clip = _clipping(cell, s)
            _tick(tick)
            results["cells"][cell.name] = {
                "class_name": cell.class_name,
                "spec": str(cell.path),
                "flow": flow,
                "spectra": table,
                "eigenvalues": eig,
                "truncation": trunc,
                "clipping": clip,
            }
        if s.train:
            trained = training.memory_over_training(
                cells,
                s.train,
                s.lengths,
                tick=tick,
                units=s.train_units,
                steps=s.train_steps,
                batch=s.train_batch,
                eval_every=s.eval_every,
            )
            for cell in cells:
                results["cells"][cell.name]["training"] = trained[cell.name]
    results["seconds"] = time.perf_counter() - started
    return results


def _clipping(cell: Cell, s: Settings) -> dict:
    size = dict(units=s.units, steps=s.steps, input_dim=s.input_dim, batch=s.batch)
    best, best_rate = None, -1.0
    for variant in EXPLODING:
        if not cell.applicable(variant):
            continue
        curve = [gradients.jacobian_curve(cell, variant, seed=0, **size)]
        rate = gradients.summarize(curve)["rate"]
        if rate == rate and rate > best_rate:  # not NaN
            best, best_rate = variant, rate
    if best is None:
        return {}
    if not best_rate > 1.0:
        return {
            "variant": best.label,
            "measured_rate": best_rate,
            "note": "no candidate configuration explodes (largest measured factor per "
            f"step {best_rate:.3f}); clipping experiment skipped",
        }
    demo = training.clipping_demo(
        cell, best, units=s.units, length=min(s.steps, 50), steps=s.clip_steps
    )
    demo["measured_rate"] = best_rate
    return demo


def _tick(tick):
    if tick:
        tick()


def _settings_dict(s: Settings) -> dict:
    return {
        "units": s.units,
        "steps": s.steps,
        "seeds": s.seeds,
        "batch": s.batch,
        "input_dim": s.input_dim,
        "train": s.train,
        "lengths": list(s.lengths),
        "train_steps": s.train_steps,
        "train_units": s.train_units,
        "train_batch": s.train_batch,
        "eval_every": s.eval_every,
        "variants": [v.label for v in s.variants],
    }


def summary_rows(results: dict) -> list[dict]:
    """One row per cell: the numbers the terminal table and the report headline show."""
    rows = []
    for name in results["order"]:
        c = results["cells"][name]
        base = c["flow"].get(DEFAULT.label)
        radius = None
        if c["spectra"]:
            gates = c["spectra"][0]["gates"]
            radius = max((g["spectral_radius"] for g in gates.values()), default=None)
        trunc = c["truncation"]
        k_1pct = next(
            (k for k, e in zip(trunc["k"], trunc["median"], strict=True) if e < 0.01), None
        )
        row = {
            "cell": name,
            "rate_loss": base["loss"]["rate"] if base else None,
            "rate_jacobian": base["jacobian"]["rate"] if base else None,
            "spectral_radius": radius,
            "truncate_1pct": k_1pct,
        }
        if "training" in c:
            row["longest_solved"] = training.longest_solved(c["training"])
            row["task"] = results["settings"]["train"]
        rows.append(row)
    return rows
