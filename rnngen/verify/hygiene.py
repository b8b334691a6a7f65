"""The ``hygiene`` check of ``rnngen verify``: each generated module imports in a fresh interpreter.

A NumPy module must import neither TensorFlow, Keras nor rnngen, so each gets an interpreter of
its own. The TF modules of one run share a single fresh interpreter (each imported in turn and
reported on its own), so TensorFlow is imported once instead of once per module; a module's
names are its own, so importing another one first cannot make a broken module import.
These subprocesses run concurrently with every other check.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .results import CheckResult

_HYGIENE = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("m", sys.argv[1])
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
bad = sorted(k for k in sys.modules if k.split(".")[0] in ("tensorflow", "rnngen", "keras"))
print("LOADED:" + ",".join(bad))
"""

_HYGIENE_MANY = """
import importlib.util, sys
for i, path in enumerate(sys.argv[1:]):
    try:
        spec = importlib.util.spec_from_file_location(f"m{i}", path)
        m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
        print("OK:" + path, flush=True)
    except BaseException as err:  # reported per module
        why = f"{type(err).__name__}: {err}".replace(chr(10), " ")
        print("FAILED:" + path + chr(0) + why, flush=True)
"""

TIMEOUT = 120


def _popen(args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tempfile.gettempdir(),
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


def start_hygiene(path: Path) -> subprocess.Popen:
    """Import ``path`` in a fresh interpreter (runs concurrently with the other checks)."""
    return _popen([_HYGIENE, str(path)])


class SharedImport:
    """One fresh interpreter importing several modules in turn (see the module doc)."""

    def __init__(self, paths):
        self.paths = [str(p) for p in paths]
        self.proc = _popen([_HYGIENE_MANY, *self.paths])
        self._results: dict | None = None

    def result(self, path) -> tuple[bool, str]:
        if self._results is None:
            try:
                stdout, stderr = self.proc.communicate(timeout=TIMEOUT)
                fallback = "import failed: " + (stderr.strip().splitlines() or ["?"])[-1]
            except subprocess.TimeoutExpired:
                self.reap()
                stdout, fallback = "", "import timed out"
            self._results = {p: (False, fallback) for p in self.paths}
            for line in stdout.splitlines():
                if line.startswith("OK:"):
                    self._results[line[3:]] = (True, "")
                elif line.startswith("FAILED:"):
                    where, _, why = line[7:].partition(chr(0))
                    self._results[where] = (False, "import failed: " + why)
        return self._results.get(str(path), (False, "module was not imported"))

    def reap(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        if self._results is None:
            self.proc.communicate()
            self._results = {p: (False, "import stopped") for p in self.paths}


class Member:
    """One module of a :class:`SharedImport` (what ``hygiene_procs`` holds for it)."""

    def __init__(self, shared: SharedImport, path):
        self.shared, self.path = shared, str(path)


def finish_hygiene(proc, forbid: bool) -> tuple[bool, str]:
    if isinstance(proc, Member):
        return proc.shared.result(proc.path)
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return False, "import timed out"
    if proc.returncode != 0:
        return False, "import failed: " + (stderr.strip().splitlines() or ["?"])[-1]
    line = [ln for ln in stdout.splitlines() if ln.startswith("LOADED:")]
    loaded = [m for m in line[-1][7:].split(",") if m] if line else []
    if forbid and loaded:
        tops = sorted({m.split(".")[0] for m in loaded})
        return False, f"imports {', '.join(tops)}"
    return True, ""


def prestart_hygiene(built: dict, backends=("numpy", "tf")) -> dict:
    """Start the hygiene imports of every built module at once: one interpreter per NumPy
    module, one shared by all TF modules.

    ``built``: ``{spec path: folder it was built into}``. Returns ``{resolved module path:
    Popen or Member}`` for :func:`rnngen.verify.verify_spec`'s ``hygiene_procs``.
    """
    out: dict = {}
    tf_modules = []
    for folder in built.values():
        for backend in backends:
            for module in sorted(Path(folder).glob(f"*_{backend}.py")):
                if backend == "numpy":
                    out.setdefault(module.resolve(), start_hygiene(module))
                elif backend == "tf":
                    tf_modules.append(module.resolve())
    if tf_modules:
        shared = SharedImport(tf_modules)
        for module in tf_modules:
            out[module] = Member(shared, module)
    return out


def reap(procs: dict) -> None:
    """Stop hygiene subprocesses that were started but never collected (an error elsewhere)."""
    for proc in procs.values():
        if isinstance(proc, Member):
            proc.shared.reap()
            continue
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def hygiene_row(cs, backend, proc, forbid, t0) -> CheckResult:
    """The ``hygiene`` row of one module: waits for its import (started at ``t0``)."""
    ok, why = finish_hygiene(proc, forbid=forbid)
    return CheckResult(
        cs.name,
        backend,
        "hygiene",
        "pass" if ok else "fail",
        configs=1,
        tol="imports NumPy only" if forbid else "imports",
        note=why,
        seconds=round(time.perf_counter() - t0, 2),
        failure=None if ok else {"config": "fresh interpreter", "tensor": why},
    )
