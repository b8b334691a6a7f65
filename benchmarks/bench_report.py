"""The benchmark's report: ratios per thread regime, the side-by-side summary and the tables."""

from __future__ import annotations

import shutil

#: the forward+BPTT ratios shown side by side for every thread regime:
#: (column title, ratio key)
HEADLINE = (
    ("np/floor", "numpy_over_floor_fwdbwd"),
    ("np/keras", "numpy_over_keras_fwdbwd"),
    ("tffused/tffloor", "tf-fused_over_tf-floor_fwdbwd"),
    ("tffused/keras", "tf-fused_over_keras_fwdbwd"),
    ("keras/tffloor", "keras_over_tf-floor_fwdbwd"),
    ("tfloop/keras", "tf-loop_over_keras_fwdbwd"),
    ("tffloor/floor", "tf-floor_over_floor_fwdbwd"),
    ("xla: fused/keras", "tf-fused-xla_over_keras-xla_fwdbwd"),
    ("tchfused/torch", "torch-fused_over_torch_fwdbwd"),
    ("tchloop/torch", "torch-autograd_over_torch_fwdbwd"),
    ("jxfused/jxscan", "jax-fused_over_jax-scan_fwdbwd"),
    ("jxfused/keras", "jax-fused_over_keras_fwdbwd"),
)
ORDER = [
    "numpy",
    "floor",
    "keras",
    "tf-loop",
    "tf-fused",
    "keras-xla",
    "tf-fused-xla",
    "tf-floor",
    "torch",
    "torch-fused",
    "torch-autograd",
    "jax-fused",
    "jax-scan",
]


def _ratio(a, b):
    return a / b if a and b else None


def compute_ratios(results):
    """One row per (threads, shape, cell).

    Same-process ratios (medians of per-repetition ratios): numpy/floor, tf-*/keras,
    tf-*/tf-floor, keras/tf-floor, torch-*/torch and jax-fused/jax-scan. Across processes (ratios
    of medians): numpy/keras, numpy/torch, tf-floor/floor and jax-*/keras. Memory:
    jax-fused/jax-scan of XLA's forward+BPTT bytes.
    """
    by = {}
    for r in results:
        by.setdefault((r.get("threads"), r["shape"], r["cell"]), {})[r["impl"]] = r
    ratios = []
    for (threads, shape, cell), impls in by.items():
        gen = impls.get("numpy", {})
        row = {"threads": threads, "shape": shape, "cell": cell}
        for phase in ("fwd", "fwdbwd"):
            for other in ("keras", "torch"):
                row[f"numpy_over_{other}_{phase}"] = _ratio(
                    gen.get(f"{phase}_median_s"), impls.get(other, {}).get(f"{phase}_median_s")
                )
            row[f"numpy_over_floor_{phase}"] = gen.get(f"ratio_vs_floor_{phase}_per_rep")
            for impl in ("tf-loop", "tf-fused"):
                row[f"{impl}_over_keras_{phase}"] = impls.get(impl, {}).get(
                    f"ratio_vs_keras_{phase}_per_rep"
                )
            for impl in ("keras", "tf-loop", "tf-fused", "keras-xla", "tf-fused-xla"):
                row[f"{impl}_over_tf-floor_{phase}"] = impls.get(impl, {}).get(
                    f"ratio_vs_tf_floor_{phase}_per_rep"
                )
            # XLA (--xla): the fused op against Keras, both compiled; and what XLA does to Keras
            row[f"tf-fused-xla_over_keras-xla_{phase}"] = impls.get("tf-fused-xla", {}).get(
                f"ratio_vs_keras_xla_{phase}_per_rep"
            )
            row[f"keras-xla_over_keras_{phase}"] = impls.get("keras-xla", {}).get(
                f"ratio_vs_keras_{phase}_per_rep"
            )
            for impl in ("torch-fused", "torch-autograd"):  # same process as torch.nn
                row[f"{impl}_over_torch_{phase}"] = impls.get(impl, {}).get(
                    f"ratio_vs_torch_{phase}_per_rep"
                )
            row[f"jax-fused_over_jax-scan_{phase}"] = impls.get("jax-fused", {}).get(
                f"ratio_vs_jax_scan_{phase}_per_rep"
            )
            for impl in ("jax-fused", "jax-scan"):  # across processes
                row[f"{impl}_over_keras_{phase}"] = _ratio(
                    impls.get(impl, {}).get(f"{phase}_median_s"),
                    impls.get("keras", {}).get(f"{phase}_median_s"),
                )
            row[f"tf-floor_over_floor_{phase}"] = _ratio(
                impls.get("tf-floor", {}).get(f"{phase}_median_s"),
                impls.get("floor", {}).get(f"{phase}_median_s"),
            )
        row["numpy_peak_over_target"] = gen.get("peak_over_target")
        fused, scan = impls.get("jax-fused", {}), impls.get("jax-scan", {})
        row["jax-fused_peak_over_jax-scan"] = _ratio(
            *(
                r.get("peak_bytes") if isinstance(r.get("peak_bytes"), int) else None
                for r in (fused, scan)
            )
        )
        ratios.append(row)
    return ratios


def summarize(ratios, threads_list):
    """``{shape: {cell: {ratio key: {threads: value}}}}`` for the headline forward+BPTT ratios
    and the memory ratio: both thread regimes of one run side by side."""
    out = {}
    for row in ratios:
        cell = out.setdefault(row["shape"], {}).setdefault(row["cell"], {})
        for key in [k for _, k in HEADLINE] + [
            "numpy_peak_over_target",
            "jax-fused_peak_over_jax-scan",
        ]:
            per_regime = cell.setdefault(key, {str(t): None for t in threads_list})
            per_regime[str(row["threads"])] = row.get(key)
    return out


def _fmt_ms(s):
    return "-" if s is None else f"{1e3 * s:.2f}"


def _fmt_mb(b):
    if isinstance(b, str) or b is None:
        return b or "-"
    return f"{b / 2**20:.1f}" if b >= 2**20 else f"{b / 2**20:.3f}"


def _fmt_x(r):
    return "-" if r is None else f"{r:.2f}"


def _timing_table(report, shape, threads, cells, dims):
    from rich.table import Table

    B, T, D, U = dims
    table = Table(
        title=f"shape {shape}, threads {threads}: batch {B} x time {T} x features {D} x units {U}"
        f" (float32, median of {report['meta']['reps']} reps)"
    )
    for col in (
        "cell",
        "impl",
        "status",
        "fwd ms",
        "fwd+BPTT ms",
        "peak MB",
        "target MB",
        "out err",
        "grad rel err",
        "cores",
    ):
        table.add_column(
            col, justify="left" if col in ("cell", "impl", "status") else "right", no_wrap=True
        )
    rows = [r for r in report["results"] if r["shape"] == shape and r.get("threads") == threads]
    rows.sort(
        key=lambda r: (
            cells.index(r["cell"]) if r["cell"] in cells else 99,
            ORDER.index(r["impl"]) if r["impl"] in ORDER else 99,
        )
    )
    for r in rows:
        status = r.get("status", "?")
        style = (
            "red"
            if status.startswith("MISMATCH")
            else ("dim" if status.startswith("skipped") else None)
        )
        err = r.get("max_abs_err_output")
        gerr = r.get("max_rel_err_grads")
        table.add_row(
            r["cell"],
            r["impl"],
            status[:60],
            _fmt_ms(r.get("fwd_median_s")),
            _fmt_ms(r.get("fwdbwd_median_s")),
            _fmt_mb(r.get("peak_bytes")),
            _fmt_mb(r.get("memory_target_bytes")),
            "-" if err is None else f"{err:.1e}",
            "-" if gerr is None else f"{gerr:.1e}",
            "-" if r.get("fwdbwd_cores_used") is None else f"{r['fwdbwd_cores_used']:.2f}",
            style=style,
        )
    return table


def print_tables(report):
    from rich.console import Console
    from rich.table import Table

    meta = report["meta"]
    threads_list = meta["threads"]
    console = Console(width=max(shutil.get_terminal_size((160, 24)).columns, 160))
    for shape in meta["shapes"]:
        for threads in threads_list:
            console.print(
                _timing_table(report, shape, threads, meta["cells"], meta["shape_dims"][shape])
            )
    regimes = " | ".join(str(t) for t in threads_list)
    rt = Table(
        title=f"forward+BPTT ratios, threads {regimes} side by side (one run). Same process, "
        "median of per-rep ratios: np/floor, tf*/keras, */tffloor; across processes, ratio of "
        "medians: np/keras, tffloor/floor"
    )
    rt.add_column("shape", no_wrap=True)
    rt.add_column("cell", no_wrap=True)
    for title, _ in HEADLINE:
        rt.add_column(title, justify="right", no_wrap=True)
    rt.add_column("np peak/target", justify="right", no_wrap=True)
    rt.add_column("jx mem fused/scan", justify="right", no_wrap=True)
    summary = report["summary"]
    for shape in meta["shapes"]:
        for cell in meta["cells"]:
            values = summary.get(shape, {}).get(cell)
            if values is None:
                continue
            cols = [
                " | ".join(_fmt_x(values[key].get(str(t))) for t in threads_list)
                for _, key in HEADLINE
            ]
            peak = values["numpy_peak_over_target"].get(str(threads_list[0]))
            jmem = values["jax-fused_peak_over_jax-scan"].get(str(threads_list[0]))
            rt.add_row(shape, cell, *cols, _fmt_x(peak), _fmt_x(jmem))
    console.print(rt)
    b = report.get("build")
    if b:
        if b.get("error"):
            console.print(f"[red]rnngen build failed:[/red] {b['error']}")
        else:
            runs = ", ".join(f"{t:.2f}" for t in b["runs_s"])
            console.print(
                f"rnngen build (cold, all shipped specs): median {b['median_s']:.2f} s "
                f"(runs: {runs} s)"
            )
    machine = meta.get("machine", {})
    console.print(
        f"machine: {machine.get('cpu_model')}, {machine.get('cpu_count')} CPUs; "
        f"load average before/after: {machine.get('loadavg_start')} / "
        f"{machine.get('loadavg_end')}"
    )
    for threads, info in (meta.get("blas") or {}).items():
        for pool in info or []:
            console.print(
                f"threads {threads}: {pool.get('internal_api')} {pool.get('version')} "
                f"kernel {pool.get('architecture')}, {pool.get('num_threads')} threads"
            )
    if meta.get("contention"):
        console.print(
            "[yellow]contention (single-threaded runs that got < 0.9 of a core):[/yellow] "
            + "; ".join(meta["contention"])
        )
    for err in report.get("errors", []):
        console.print(f"[red]{err}[/red]")
