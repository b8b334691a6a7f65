"""The modules ``rnngen verify`` checks: built from a spec into a temporary folder (what
``rnngen build`` writes now, never ``generated/``), imported under unique names."""

from __future__ import annotations

import importlib.util
import itertools
import sys
import tempfile
from pathlib import Path

from .. import codegen
from ..build import build_files
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
