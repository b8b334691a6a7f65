"""``rnngen verify`` on a list of specs: builds every spec, starts the hygiene imports, checks
each spec (:func:`rnngen.verify.driver.verify_spec`), prints the tables and writes the JSON."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from .compare import TOLERANCE_RULE
from .driver import verify_spec
from .hygiene import prestart_hygiene, reap
from .modules import build_all
from .refs import preload_tf
from .report import render
from .results import CheckResult


def run_cli(
    paths,
    backends=("numpy",),
    quick: bool = False,
    seed: int = 0,
    json_path: Path | None = None,
    full_jacobian: bool = False,
) -> bool:
    """Verify every spec, print rich tables, optionally write JSON; True iff all checks pass."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console()
    console.width = max(console.width, 120)
    results: list[CheckResult] = []
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        # every spec is built first (what `rnngen build` writes now, never generated/), in a
        # child process while this one imports TensorFlow; the hygiene imports of every module
        # start as soon as it is built, overlapping the import and all other checks
        def start_hygiene(folders: dict) -> dict:
            started = prestart_hygiene(folders, backends)
            stack.callback(reap, started)
            return started

        uses_tf = any(b in ("numpy", "tf") for b in backends)  # Keras and autodiff references
        built, started = build_all(
            paths, stack, meanwhile=preload_tf if uses_tf else None, when_built=start_hygiene
        )
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as prog:
            for path in paths:
                results += verify_spec(
                    path,
                    backends=tuple(backends),
                    quick=quick,
                    seed=seed,
                    full_jacobian=full_jacobian,
                    progress=prog,
                    hygiene_procs=started,
                    built_dir=built[path],
                )
    render(results, console)
    ok = all(r.passed for r in results)
    elapsed = time.perf_counter() - t0
    console.print(
        ("[green]all checks pass[/]" if ok else "[bold red]verification failed[/]")
        + f" ({elapsed:.1f}s, seed {seed}{', quick' if quick else ''})"
    )
    if json_path is not None:
        payload = {
            "ok": ok,
            "seed": seed,
            "quick": quick,
            "seconds": round(elapsed, 2),
            "tolerance_rule": TOLERANCE_RULE,
            "results": [r.as_dict() for r in results],
        }
        Path(json_path).write_text(
            json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8"
        )
    return ok
