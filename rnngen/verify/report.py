"""The tables ``rnngen verify`` prints: one per spec, then the smallest failing configuration
and worst entry of every failing row."""

from __future__ import annotations

import numpy as np

from .results import CheckResult

# -- reporting ----------------------------------------------------------------------------------


def _fmt(v: float) -> str:
    if v is None:
        return "-"
    if v == 0:
        return "0"
    if not np.isfinite(v):
        return "inf"
    return f"{v:.2e}"


def render(results: list[CheckResult], console) -> None:
    from rich.table import Table

    by_spec: dict[str, list[CheckResult]] = {}
    for r in results:
        by_spec.setdefault(r.spec, []).append(r)
    for name, rows in by_spec.items():
        table = Table(title=f"rnngen verify: {name}", title_justify="left")
        for col in (
            "backend",
            "check",
            "configs",
            "max abs err",
            "max rel err",
            "tolerance",
            "time",
            "result",
        ):
            table.add_column(col, justify="right" if col in ("configs", "time") else "left")
        for r in rows:
            style = {"pass": "green", "fail": "bold red", "n/a": "yellow", "error": "bold red"}[
                r.status
            ]
            table.add_row(
                r.backend,
                r.check,
                str(r.configs),
                _fmt(r.max_abs),
                _fmt(r.max_rel),
                r.tol,
                f"{r.seconds:.1f}s",
                f"[{style}]{r.status.upper() if r.status != 'n/a' else 'n/a'}[/]"
                + (f" {r.note}" if r.note else ""),
            )
        console.print(table)
        for remark in dict.fromkeys(r.remark for r in rows if r.remark):
            console.print(f"  note: {remark}")
        for r in rows:
            if r.failure:
                f = r.failure
                console.print(
                    f"[bold red]{name} / {r.backend} / {r.check}[/] smallest failing "
                    f"configuration: {f.get('config')}"
                )
                if "analytic" in f:
                    idx = f.get("index")
                    where = f"{f.get('tensor')}" + (f"[{', '.join(map(str, idx))}]" if idx else "")
                    console.print(
                        f"    worst entry {where}: analytic/generated = "
                        f"{f.get('analytic')!r}   reference = {f.get('reference')!r}"
                        f"   (rel err {_fmt(f.get('rel'))}, tol {f.get('tol')})"
                    )
                else:
                    console.print(f"    {f.get('tensor')}")
