"""The modules ``rnngen verify`` checks: built from a spec into a temporary folder (what
``rnngen build`` writes now, never ``generated/``), imported under unique names."""

from __future__ import annotations

import importlib.util
import itertools
import multiprocessing
import os
import sys
import tempfile
import threading
from pathlib import Path

from .. import codegen
from ..build import build_files, parse_specs
from ..spec import CellSpec

_counter = itertools.count()


def import_path(path: Path, name: str | None = None):
    """Import a Python file under a unique module name."""
    name = name or f"_rnngen_verify_{Path(path).stem}_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def build_into(path: Path, out_dir: Path) -> Path:
    """Generate the modules of the spec at ``path`` into ``out_dir``."""
    files = build_files([Path(path)])
    codegen.write_atomically(files, Path(out_dir))
    return Path(out_dir)


def _build_child(jobs: list[tuple[Path, Path]], conn) -> None:
    """In a forked child: build every ``(spec, folder)``; report ``None`` or what failed."""
    try:
        for path, folder in jobs:
            build_into(path, folder)
        conn.send(None)
    except BaseException as err:  # noqa: BLE001 - the parent rebuilds to raise it properly
        conn.send(f"{type(err).__name__}: {err}")
    finally:
        conn.close()


def build_all(paths, stack, meanwhile=None, when_built=None) -> tuple[dict[Path, Path], object]:
    """Build every spec into a temporary folder of its own (closed with ``stack``); returns
    ``({spec path: folder}, when_built(folders))``.

    ``meanwhile()`` runs while the specs build: in a forked child when this process is still
    single-threaded and has not imported TensorFlow (so ``rnngen verify`` imports TensorFlow on
    one core while the code is generated on the other), else after building here.
    ``when_built(folders)`` runs as soon as every spec is built: then in a thread of this
    process while ``meanwhile`` still runs (``rnngen verify`` starts its hygiene imports there).
    A child that fails is not trusted: the specs are then built here, which raises the real
    error. The specs are parsed here first, so a mistake in one is reported before anything
    else runs.
    """
    parse_specs([Path(p) for p in paths])
    folders = {
        p: Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rnngen-verify-")))
        for p in paths
    }
    jobs = [(Path(p), f) for p, f in folders.items()]
    forkable = (
        hasattr(os, "fork")
        and "tensorflow" not in sys.modules
        and threading.active_count() == 1
        and len(jobs) > 0
    )
    done: dict = {}  # "value" or "error" of when_built, once the child has built everything
    if forkable:
        ctx = multiprocessing.get_context("fork")
        for stream in (sys.stdout, sys.stderr):  # nothing buffered here is written twice
            stream.flush()
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_build_child, args=(jobs, child), daemon=True)
        proc.start()
        child.close()

        def wait() -> None:
            try:
                if parent.recv() is not None:
                    return
            except EOFError:  # the child died without a word
                return
            try:
                done["value"] = when_built(folders) if when_built is not None else None
            except BaseException as err:  # noqa: BLE001 - raised again in the caller's thread
                done["error"] = err

        waiter = threading.Thread(target=wait, name="rnngen-verify-build", daemon=True)
        waiter.start()
        try:
            if meanwhile is not None:
                meanwhile()
        finally:
            waiter.join()
            parent.close()
            proc.join()
        if "error" in done:
            raise done["error"]
    elif meanwhile is not None:
        meanwhile()
    if "value" not in done:  # not forked, or the child failed: build here
        for path, folder in jobs:
            build_into(path, folder)
        done["value"] = when_built(folders) if when_built is not None else None
    return folders, done["value"]


def modules_folder(cs: CellSpec, path: Path | None, module_dir: Path | None, stack) -> Path:
    """The folder of the modules to verify: ``module_dir`` when given, else the code that
    ``rnngen build`` writes for the spec now, built into a temporary folder (never the files
    in ``generated/``, which may be stale)."""
    if module_dir is not None:
        return Path(module_dir)
    if path is None:
        raise ValueError("a CellSpec without a file needs module_dir=")
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rnngen-verify-")))
    return build_into(path, tmp)


def stale_generated(path: Path, built_dir: Path) -> list[str]:
    """For a shipped spec: the files of ``generated/`` that differ from the fresh build."""
    path = Path(path)
    if path.resolve().parent != codegen.spec_dir().resolve():
        return []
    generated = codegen.default_out_dir()
    if not generated.is_dir():
        return []
    stale = []
    for built in sorted(Path(built_dir).iterdir()):
        shipped = generated / built.name
        if not shipped.is_file() or shipped.read_bytes() != built.read_bytes():
            stale.append(built.name)
    return stale
