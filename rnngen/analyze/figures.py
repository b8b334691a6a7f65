"""The report's figures, drawn with matplotlib's Agg backend into PNG bytes."""

from __future__ import annotations

import io

import numpy as np

from .cells import DEFAULT
from .tasks import Task

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig, dpi=100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def _finite(a):
    a = np.asarray(a, dtype=np.float64)
    return np.where(np.isfinite(a) & (a > 0), a, np.nan)


def _band(ax, y, low, high, color, label):
    d = np.arange(len(y))
    ax.plot(d, _finite(y), color=color, label=label, lw=1.5)
    ax.fill_between(d, _finite(low), _finite(high), color=color, alpha=0.18, lw=0)


def _runs(results: dict, name: str) -> dict:
    """A cell's training runs keyed by int length (JSON round trips make the keys strings)."""
    return {int(T): r for T, r in results["cells"][name].get("training", {}).items()}


def overview(results: dict) -> bytes:
    """‖∂h_T/∂h_t‖ at init for every cell's default configuration and, after training, the
    accuracy against the length (the README figure)."""
    plt = _plt()
    trained = [n for n in results["order"] if _runs(results, n)]
    fig, axes = plt.subplots(
        1, 2 if trained else 1, figsize=(11 if trained else 6, 3.6), squeeze=False
    )
    ax = axes[0][0]
    for i, name in enumerate(results["order"]):
        flow = results["cells"][name]["flow"].get(DEFAULT.label)
        if not flow:
            continue
        j = flow["jacobian"]
        color = COLORS[i % len(COLORS)]
        _band(ax, j["median"], j["low"], j["high"], color, f"{name}: ×{j['rate']:.3f} per step")
    ax.set_yscale("log")
    ax.set_xlabel("steps back in time (T − t)")
    ax.set_ylabel("‖∂h_T/∂s_t‖_F / √U")
    ax.set_title("Gradient flow at initialisation")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    if trained:
        _score_panel(axes[0][1], results, trained)
        axes[0][1].set_title(f"After training on the {results['settings']['train']} task")
    fig.tight_layout()
    return _png(fig)


def gradient_flow(results: dict) -> bytes:
    """Rows: the loss gradient and the Jacobian norm; columns: cells; a line per variant."""
    plt = _plt()
    names = results["order"]
    fig, axes = plt.subplots(2, len(names), figsize=(4.2 * len(names), 6.4), squeeze=False)
    for col, name in enumerate(names):
        for i, (label, r) in enumerate(results["cells"][name]["flow"].items()):
            color = COLORS[i % len(COLORS)]
            for row, key in enumerate(("loss", "jacobian")):
                s = r[key]
                _band(
                    axes[row][col],
                    s["median"],
                    s["low"],
                    s["high"],
                    color,
                    f"{label} (×{s['rate']:.3f})",
                )
        axes[0][col].set_title(name)
        axes[0][col].set_ylabel("‖∂L/∂s_t‖ / ‖∂L/∂h_T‖")
        axes[1][col].set_ylabel("‖∂h_T/∂s_t‖_F / √U")
        for row in range(2):
            ax = axes[row][col]
            ax.set_yscale("log")
            ax.set_xlabel("steps back in time (T − t)")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=6.5)
    fig.suptitle(
        "Gradient flow at initialisation: median and min-max band over seeds; "
        "fitted factor per step in brackets",
        fontsize=10,
    )
    fig.tight_layout()
    return _png(fig)


def spectra(results: dict) -> bytes:
    """Top: eigenvalues of each recurrent gate block (seed 0) with the unit circle. Bottom: per
    variant, the largest spectral radius over gates against the measured growth factor."""
    plt = _plt()
    names = results["order"]
    fig, axes = plt.subplots(2, len(names), figsize=(4.2 * len(names), 7.6), squeeze=False)
    t = np.linspace(0, 2 * np.pi, 200)
    for col, name in enumerate(names):
        c = results["cells"][name]
        ax = axes[0][col]
        ax.plot(np.cos(t), np.sin(t), color="grey", lw=0.8)
        for i, (gate, s) in enumerate(c["eigenvalues"].items()):
            eig = np.asarray(s["eigenvalues"])
            if eig.ndim == 2:  # from results.json: [re, im] pairs
                eig = eig[:, 0] + 1j * eig[:, 1]
            ax.scatter(
                eig.real,
                eig.imag,
                s=9,
                color=COLORS[i % len(COLORS)],
                label=f"{gate} ρ={s['spectral_radius']:.2f}",
            )
        ax.set_aspect("equal")
        ax.set_title(f"{name}: eigenvalues of the recurrent kernel")
        ax.legend(fontsize=6.5, loc="lower left")
        ax.grid(alpha=0.3)
        ax = axes[1][col]
        rows = c["spectra"]
        x = np.arange(len(rows))
        radius = [max(g["spectral_radius"] for g in r["gates"].values()) for r in rows]
        sv = [max(g["max_singular_value"] for g in r["gates"].values()) for r in rows]
        measured = [r["measured_rate_jacobian"] for r in rows]
        ax.bar(x - 0.27, radius, 0.27, label="spectral radius (max over gates)")
        ax.bar(x, sv, 0.27, label="largest singular value")
        ax.bar(x + 0.27, measured, 0.27, label="measured factor per step")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xticks(x, [r["variant"] for r in rows], rotation=30, ha="right", fontsize=7)
        ax.legend(fontsize=6.5)
    fig.tight_layout()
    return _png(fig)


def truncation(results: dict) -> bytes:
    """Left: truncated-BPTT error against k. Middle and right: the clipping experiment."""
    plt = _plt()
    names = results["order"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    ax = axes[0]
    for i, name in enumerate(names):
        tr = results["cells"][name]["truncation"]
        color = COLORS[i % len(COLORS)]
        k = np.asarray(tr["k"], dtype=float)
        ax.plot(k, np.maximum(_finite(tr["median"]), 1e-17), "o-", ms=3, color=color, label=name)
        ax.fill_between(
            k,
            np.maximum(_finite(tr["low"]), 1e-17),
            np.maximum(_finite(tr["high"]), 1e-17),
            color=color,
            alpha=0.18,
            lw=0,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("truncation length k")
    ax.set_ylabel("‖g_k − g‖ / ‖g‖ (weights)")
    ax.set_title("Truncated BPTT against full BPTT")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    for i, name in enumerate(names):
        demo = results["cells"][name]["clipping"]
        if "clipped" not in demo:
            continue
        color = COLORS[i % len(COLORS)]
        for key, style in (("unclipped", "--"), ("clipped", "-")):
            axes[1].plot(
                _finite(demo[key]["grad_norm"]),
                style,
                color=color,
                label=f"{name} {key} ({demo['variant']})",
            )
            axes[2].plot(_finite(demo[key]["loss"]), style, color=color, label=f"{name} {key}")
    axes[1].set_title("Gradient norm before clipping, SGD on an exploding init")
    axes[2].set_title("Training loss (adding problem); a gap = diverged")
    for ax in axes[1:]:
        ax.set_yscale("log")
        ax.set_xlabel("SGD step")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6)
    fig.tight_layout()
    return _png(fig)


def _score_panel(ax, results: dict, names) -> None:
    """The task's score (see :meth:`.tasks.Task.score`) against the length, per cell."""
    task = results["settings"]["train"]
    lengths = sorted(_runs(results, names[0]))
    for i, name in enumerate(results["order"]):
        if name not in names:
            continue
        runs = _runs(results, name)
        scores = [Task(task, T).score(runs[T]["test_loss"], runs[T]["accuracy"]) for T in lengths]
        ax.plot(
            lengths, np.clip(_nan(scores), -0.1, 1), "o-", color=COLORS[i % len(COLORS)], label=name
        )
    ax.axhline(Task(task, 1).solved_score, color="grey", lw=0.8, ls=":", label="solved")
    ax.set_xscale("log")
    ax.set_ylim(-0.12, 1.02)
    ax.set_xlabel("sequence length T")
    ax.set_ylabel(Task(task, 1).score_label)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)


def _nan(values):
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def training(results: dict) -> bytes:
    """Test loss against step for each length, and the score against the length."""
    plt = _plt()
    names = [n for n in results["order"] if _runs(results, n)]
    lengths = results["settings"]["lengths"]
    fig, axes = plt.subplots(
        1, len(lengths) + 1, figsize=(3.6 * (len(lengths) + 1), 3.6), squeeze=False
    )
    axes = axes[0]
    for i, name in enumerate(names):
        color = COLORS[i % len(COLORS)]
        runs = _runs(results, name)
        for j, T in enumerate(lengths):
            r = runs[T]
            steps = [e["step"] for e in r["evals"]]
            axes[j].plot(
                steps,
                _finite([e["loss"] for e in r["evals"]]),
                color=color,
                label=name + (" (solved)" if r["solved"] else ""),
            )
            axes[j].axhline(r["baseline"], color="grey", lw=0.8, ls=":")
    task = results["settings"]["train"]
    for j, T in enumerate(lengths):
        axes[j].set_title(f"{task}, T = {T}")
        axes[j].set_yscale("log")
        axes[j].set_xlabel("optimiser step")
        axes[j].set_ylabel("test loss")
        axes[j].grid(alpha=0.3, which="both")
        axes[j].legend(fontsize=7)
    _score_panel(axes[-1], results, names)
    axes[-1].set_title("At the end of training")
    fig.tight_layout()
    return _png(fig)


def all_figures(results: dict) -> dict[str, bytes]:
    """File name -> PNG bytes, in report order."""
    figs = {
        "overview.png": overview(results),
        "gradient_flow.png": gradient_flow(results),
        "spectra.png": spectra(results),
        "truncation_clipping.png": truncation(results),
    }
    if any("training" in c for c in results["cells"].values()):
        figs["training.png"] = training(results)
    return figs
