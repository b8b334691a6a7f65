"""Write the analysis: PNG figures, a self-contained HTML report (figures embedded) and a
JSON file holding every number plotted."""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
from pathlib import Path

import numpy as np

from . import figures
from .run import summary_rows
from .tasks import SYMBOLS

PARTS = {
    "overview.png": (
        "Overview",
        "Left: root-mean-square singular value of the Jacobian product ∂h_T/∂s_t at "
        "initialisation, for each cell's Keras default configuration. Right (with --train): "
        "the task's score at the end of training against the length (values below −0.1, "
        "worse than predicting the mean, are drawn at −0.1).",
    ),
    "gradient_flow.png": (
        "1. Gradient flow at initialisation",
        "Top: the gradient of a squared-error loss on a random readout of the last output, "
        "with respect to the states s_t entering each step, relative to its value at the "
        "last step. Bottom: ‖∂h_T/∂s_t‖_F/√U, from vector-Jacobian products of the generated "
        "backward pass (exact when U ≤ 64, Gaussian probes otherwise). States: h, and c for "
        "LSTM. Each line changes one thing from the default (orthogonal recurrent kernel, "
        "tanh, gain 1). The factor in brackets is exp(slope) of a least-squares line through "
        "log(median): below 1 the gradient vanishes, above 1 it explodes.",
    ),
    "spectra.png": (
        "2. What the eigenvalues say",
        "Top: eigenvalues of each gate's block of the recurrent kernel (default initialiser, "
        "seed 0) and the unit circle. Bottom: for each configuration, the largest spectral "
        "radius and singular value over the gates (median over seeds) next to the measured "
        "per-step factor of ‖∂h_T/∂s_t‖. The activation's and gates' derivatives (≤ 1) make "
        "the measured factor smaller than the spectral radius.",
    ),
    "truncation_clipping.png": (
        "4. Truncation and clipping",
        "Left: relative error of the weight gradients of backward(truncate=k) against full "
        "BPTT, for the last-output loss. Middle and right: plain SGD on the adding problem "
        "from the cell's most explosive initialisation among a few candidates (gain 1.5 or 2, "
        "tanh or relu; the measured factor is in the table below), without clipping (dashed) "
        "and with clip_norm (solid), for the cells where that factor exceeds 1. A line that "
        "stops has diverged (overflow).",
    ),
    "training.png": (
        "3. Memory over training",
        "Adam (lr 0.01, global-norm clipping at 1) on fresh batches, test loss on a fixed test "
        "batch every 100 steps; the dotted line is the best input-blind loss. Training stops "
        "once solved. Adding problem: solved when the test MSE is below 0.01; the right panel "
        "shows 1 − MSE / (1/6), the fraction of the target's variance explained (below −0.1 "
        "drawn at −0.1); accuracy in the table is the fraction of sums within 0.04. Copy task "
        f"({SYMBOLS} symbols): the right panel is the recall accuracy, solved at 95 %.",
    ),
}
ORDER = (
    "overview.png",
    "gradient_flow.png",
    "spectra.png",
    "training.png",
    "truncation_clipping.png",
)


def to_json(value):
    """Plain JSON values: arrays as lists, complex as [re, im], NaN and infinities as null."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if dataclasses.is_dataclass(value):
        return to_json(dataclasses.asdict(value))
    if isinstance(value, complex | np.complexfloating):
        return [to_json(value.real), to_json(value.imag)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write(results: dict, out_dir: Path) -> dict[str, Path]:
    """Write the figures, ``report.html`` and ``results.json`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pngs = figures.all_figures(results)
    paths = {}
    for name, data in pngs.items():
        (out_dir / name).write_bytes(data)
        paths[name] = out_dir / name
    data = to_json(results)
    data["summary"] = to_json(summary_rows(results))
    data["figures"] = sorted(pngs)
    (out_dir / "results.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    paths["results.json"] = out_dir / "results.json"
    (out_dir / "report.html").write_text(render_html(results, pngs), encoding="utf-8")
    paths["report.html"] = out_dir / "report.html"
    return paths


def _fmt(v, spec=".3f"):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return format(v, spec) if isinstance(v, float) else str(v)


def _table(header, rows) -> str:
    head = "".join(f"<th>{html.escape(h).replace(chr(10), '<br>')}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def summary_table(results: dict) -> tuple[list[str], list[list[str]]]:
    rows = summary_rows(results)
    header = [
        "cell",
        "×/step\n∂L/∂s_t",
        "×/step\n∂h_T/∂s_t",
        "spectral\nradius",
        "k for\n<1% err",
    ]
    trained = any("longest_solved" in r for r in rows)
    if trained:
        header.append(f"{results['settings']['train']}:\nlongest T")
    out = []
    for r in rows:
        row = [
            r["cell"],
            _fmt(r["rate_loss"]),
            _fmt(r["rate_jacobian"]),
            _fmt(r["spectral_radius"]),
            _fmt(r["truncate_1pct"]),
        ]
        if trained:
            row.append(_fmt(r.get("longest_solved")) if r.get("longest_solved") else "none")
        out.append(row)
    return header, out


def _details(results: dict, name: str) -> str:
    """Per-part tables for the report body."""
    if name == "spectra.png":
        rows = []
        for cell in results["order"]:
            for r in results["cells"][cell]["spectra"]:
                gates = ", ".join(
                    f"{g}: ρ {s['spectral_radius']:.3f} σ {s['max_singular_value']:.3f}"
                    for g, s in r["gates"].items()
                )
                rows.append([cell, r["variant"], gates, _fmt(r["measured_rate_jacobian"])])
        return _table(
            [
                "cell",
                "configuration",
                "per gate (ρ spectral radius, σ largest singular value)",
                "measured factor/step",
            ],
            rows,
        )
    if name == "truncation_clipping.png":
        rows = []
        for cell in results["order"]:
            d = results["cells"][cell]["clipping"]
            if not d:
                continue
            if "clipped" not in d:
                rows.append(
                    [
                        cell,
                        d["variant"],
                        _fmt(d["measured_rate"]),
                        "–",
                        "not exploding: skipped",
                        "–",
                    ]
                )
                continue
            final = {
                k: next((v for v in reversed(d[k]["loss"]) if v == v), None)
                for k in ("unclipped", "clipped")
            }
            diverged = {k: any(v != v for v in d[k]["loss"]) for k in ("unclipped", "clipped")}
            rows.append(
                [
                    cell,
                    d["variant"],
                    _fmt(d["measured_rate"]),
                    d["clip_norm"],
                    "diverged" if diverged["unclipped"] else _fmt(final["unclipped"]),
                    "diverged" if diverged["clipped"] else _fmt(final["clipped"]),
                ]
            )
        return _table(
            [
                "cell",
                "configuration",
                "measured factor/step",
                "clip_norm",
                "final loss unclipped",
                "final loss clipped",
            ],
            rows,
        )
    if name == "training.png":
        rows = []
        for cell in results["order"]:
            for T, r in results["cells"][cell].get("training", {}).items():
                rows.append(
                    [
                        cell,
                        T,
                        _fmt(r["test_loss"], ".4f"),
                        _fmt(r["accuracy"]),
                        _fmt(r.get("score")),
                        "yes" if r["solved"] else "no",
                        _fmt(r["solved_at"]),
                        len(r["train_loss"]),
                    ]
                )
        return _table(
            ["cell", "T", "test loss", "accuracy", "score", "solved", "at step", "steps run"],
            rows,
        )
    return ""


def render_html(results: dict, pngs: dict[str, bytes]) -> str:
    s = results["settings"]
    header, rows = summary_table(results)
    parts = []
    for name in ORDER:
        if name not in pngs:
            continue
        title, caption = PARTS[name]
        img = base64.b64encode(pngs[name]).decode("ascii")
        parts.append(
            f'<section id="{name[:-4]}"><h2>{html.escape(title)}</h2>'
            f"<p>{html.escape(caption)}</p>"
            f'<img alt="{html.escape(title)}" src="data:image/png;base64,{img}">'
            f"{_details(results, name)}</section>"
        )
    settings = html.escape(
        f"units {s['units']}, steps T = {s['steps']}, seeds {s['seeds']}, batch {s['batch']}, "
        f"input_dim {s['input_dim']}, float64 inputs N(0, 1)"
        + (
            f"; training: {s['train']} at T = {s['lengths']}, up to {s['train_steps']} steps, "
            f"units {s['train_units']}, batch {s['train_batch']}, float32"
            if s["train"]
            else ""
        )
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>rnngen analyze</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1400px; margin: 2em auto; padding: 0 1em;
       color: #222; }}
img {{ max-width: 100%; border: 1px solid #ddd; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }}
th {{ background: #f4f4f4; }}
</style></head><body>
<h1>rnngen analyze: {html.escape(", ".join(results["order"]))}</h1>
<p>Why simple RNNs forget, measured through the generated NumPy layers. {settings}.
Finished in {results["seconds"]:.1f} s.</p>
{_table(header, rows)}
{"".join(parts)}
</body></html>
"""
