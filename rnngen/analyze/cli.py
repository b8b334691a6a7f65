"""``rnngen analyze``: see gradients vanish and explode, and memory fail, in any cell."""

from __future__ import annotations

import time
from pathlib import Path

import click

from .tasks import LENGTHS, TASKS


def _lengths(ctx, param, value):
    if value is None:
        return LENGTHS
    try:
        out = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        out = ()
    if not out or min(out) < 1:
        raise click.BadParameter(f"expected comma-separated positive integers, got {value!r}")
    return out


@click.command()
@click.argument("specs", nargs=-1)
@click.option("--units", type=click.IntRange(min=1), default=32, show_default=True)
@click.option(
    "--steps",
    type=click.IntRange(min=2),
    default=100,
    show_default=True,
    help="Sequence length T of the gradient analysis.",
)
@click.option("--seeds", type=click.IntRange(min=1), default=5, show_default=True)
@click.option(
    "--train",
    type=click.Choice(TASKS),
    default=None,
    help="Also train each cell on this memory task at several lengths.",
)
@click.option(
    "--lengths",
    default=None,
    callback=_lengths,
    help="Comma-separated training lengths [default: 10,50,100,200].",
)
@click.option(
    "--train-steps",
    type=click.IntRange(min=1),
    default=3000,
    show_default=True,
    help="Most optimiser steps per training run (stops early once solved).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("analyze-report"),
    show_default=True,
)
@click.pass_context
def analyze(ctx, specs, units, steps, seeds, train, lengths, train_steps, out_dir) -> None:
    """Plot gradient flow, spectra, truncation and memory for SPECS (default: all shipped).

    Writes OUT/report.html (figures embedded, and beside it as PNG files) and
    OUT/results.json (every number plotted), and prints a summary table. Uses the generated
    NumPy layers only.
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from ..build import parse_specs, resolve_specs
    from ..errors import SpecError, fail

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        fail(ctx, RuntimeError("rnngen analyze needs matplotlib: pip install 'rnngen[analyze]'"))
        return
    from . import report
    from .run import Settings
    from .run import analyze as run_analysis

    settings = Settings(
        units=units, steps=steps, seeds=seeds, train=train, lengths=lengths, train_steps=train_steps
    )
    console = Console(stderr=True)
    try:
        paths = resolve_specs(specs)
        parse_specs(paths)  # every spec problem, before any work
    except SpecError as err:
        fail(ctx, err)
        return
    started = time.perf_counter()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("analyzing", total=settings.work(len(paths)))
        results = run_analysis(paths, settings, tick=lambda: bar.advance(task))
    try:
        written = report.write(results, out_dir)
    except OSError as err:
        fail(ctx, err)
        return
    header, rows = report.summary_table(results)
    table = Table(
        title="rnngen analyze",
        caption="×/step: factor of the gradient norm per step back in time, at init",
    )
    for h in header:
        table.add_column(
            h,
            justify="left" if h == "cell" else "right",
            no_wrap=True,
            min_width=len(max(h.split("\n"), key=len)),
        )
    for row in rows:
        table.add_row(*row)
    out = Console()
    out.print(table)
    out.print(
        f"wrote {written['report.html']} and {written['results.json']} "
        f"({len(written) - 2} figures) in {time.perf_counter() - started:.1f} s"
    )
