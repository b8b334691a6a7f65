"""`rnngen build`: deterministic, checkable, atomic, and its output stands alone."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from rnngen import cli, codegen

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["simple_rnn", "gru", "lstm"]


def run(*args, cwd=ROOT, env=None):
    return subprocess.run(
        [sys.executable, "-m", "rnngen", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


def test_check_passes_on_committed_generated():
    proc = run("build", "--check")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_rebuild_is_byte_identical(tmp_path):
    """Deleting generated/ and rebuilding gives the same bytes (twice, in fresh processes)."""
    for out in (tmp_path / "a", tmp_path / "b"):
        proc = run("build", "--out", str(out))
        assert proc.returncode == 0, proc.stderr
    a, b = tmp_path / "a", tmp_path / "b"
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    assert {f"{n}_numpy.py" for n in SHIPPED} <= set(names)
    match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert not mismatch and not errors
    _, mismatch, errors = filecmp.cmpfiles(a, ROOT / "generated", names, shallow=False)
    assert not mismatch and not errors, mismatch


@pytest.mark.slow
def test_check_reports_stale_files_and_writes_nothing(tmp_path):
    out = tmp_path / "gen"
    shutil.copytree(ROOT / "generated", out)
    stale = out / "gru_numpy.py"
    stale.write_text(stale.read_text() + "\n# edited by hand\n")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = run("build", "--check", "--out", str(out))
    assert proc.returncode == 1
    assert "gru_numpy.py" in proc.stderr and "simple_rnn_numpy.py" not in proc.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_failed_build_leaves_output_untouched(tmp_path, monkeypatch):
    """An error part-way through rendering (or writing) leaves the previous files intact."""
    out = tmp_path / "gen"
    assert run("build", "simple_rnn", "--out", str(out)).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    calls = {"n": 0}
    real = codegen.format_python

    def explode(text, name):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # as if Ctrl-C arrived during rendering
        return real(text, name)

    monkeypatch.setattr(codegen, "format_python", explode)
    result = CliRunner().invoke(cli.main, ["build", "simple_rnn", "gru", "--out", str(out)])
    assert result.exit_code != 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    def fail_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(codegen, "format_python", real)
    files = {"a.py": "x = 1\n", "b.py": "def (:\n"}  # the second does not parse
    with pytest.raises(SyntaxError):
        codegen.write_atomically(files, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in out.iterdir() if p.name.startswith(".rnngen-")]


def test_numpy_module_needs_neither_tensorflow_nor_rnngen(tmp_path):
    """The NumPy module imports and runs where TensorFlow and rnngen cannot be imported."""
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('tensorflow', 'keras', 'rnngen', 'sympy', 'jinja2'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    code = (
        "import numpy as np, sys\n"
        "import generated.simple_rnn_numpy as m\n"
        "y = m.SimpleRNN(4)(np.ones((2, 3, 5), np.float32))\n"
        "assert y.shape == (2, 4)\n"
        "assert not any(k.split('.')[0] in ('tensorflow', 'rnngen') for k in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{blocker}{os.pathsep}{ROOT}"}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_generated_code_is_ruff_clean():
    proc = subprocess.run(
        [codegen.ruff_binary(), "check", "--no-cache", str(ROOT / "generated")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout


def test_headers_name_their_spec():
    for name in SHIPPED:
        head = (ROOT / "generated" / f"{name}_numpy.py").read_text().splitlines()[:4]
        assert any(f"spec/{name}.yaml" in line for line in head)
        assert any("Generated by rnngen" in line for line in head)


def test_python_dash_m_and_unknown_spec():
    proc = run("build", "no_such_cell")
    assert proc.returncode == 2
    assert "unknown spec" in proc.stderr and "Traceback" not in proc.stderr


IMPORT_LAYERS = (
    "import generated, generated.simple_rnn_numpy as m; "
    "import numpy as np; "
    "print(generated.__file__); "
    "print(m.SimpleRNN(3)(np.ones((2, 4, 5), 'float32')).shape)"
)


@pytest.mark.slow
def test_non_editable_install_builds_and_imports_layers_anywhere(tmp_path):
    """`pip install .` into a new, bare venv (no system packages, no `wheel` pre-installed):
    `rnngen build` works from package data alone, byte-identical to generated/, and the
    shipped layers import from any folder."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    proc = subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PATH")}
    env["PATH"] = f"{venv / 'bin'}:/usr/bin:/bin"  # no other ruff, no other python
    proc = subprocess.run(
        [str(py), "-m", "rnngen", "build"], cwd=work, capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in (work / "generated").iterdir())
    _, mismatch, errors = filecmp.cmpfiles(
        work / "generated", ROOT / "generated", names, shallow=False
    )
    assert not mismatch and not errors, mismatch
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run(
        [str(py), "-c", IMPORT_LAYERS], cwd=elsewhere, capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    where, shape = proc.stdout.splitlines()[:2]
    assert where.startswith(str(venv)), where  # the installed package, not the checkout
    assert shape == "(2, 3)"


def test_shipped_layers_import_from_any_folder(tmp_path):
    """After the README's (editable) install, `import generated.<name>_numpy` works anywhere."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_LAYERS],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1] == "(2, 3)"


@pytest.mark.slow
def test_build_ignores_other_formatters_on_path(tmp_path):
    """Output is byte-identical whatever else is installed: a different `ruff` first on PATH
    (here one that would mangle every file) changes nothing."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ruff").write_text("#!/bin/sh\necho '# not what rnngen writes'\n")
    (fake / "ruff").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ.get('PATH', '')}"}
    proc = run("build", "--out", str(tmp_path / "out"), env=env)
    assert proc.returncode == 0, proc.stderr
    for name in ("simple_rnn_numpy.py", "gru_tf.py"):
        assert (tmp_path / "out" / name).read_bytes() == (ROOT / "generated" / name).read_bytes()


@pytest.mark.slow
def test_code_generated_from_user_specs_is_ruff_clean(tmp_path):
    """Specs the project does not ship (gates, elementwise weights, config-dict defaults)."""
    specs = sorted(str(p) for p in (ROOT / "tests" / "specs").glob("*.yaml"))
    proc = run("build", *specs, "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(
        [
            codegen.ruff_binary(),
            "check",
            "--no-cache",
            "--isolated",
            "--line-length",
            "100",
            "--select",
            "E,F,W,I,B,UP",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout


def test_a_generated_module_that_does_not_parse_is_named():
    """A template bug gives one clear error naming the module and Python's reason."""
    with pytest.raises(RuntimeError, match=r"generated broken_numpy\.py does not parse"):
        codegen.format_python("def (:\n", "broken_numpy.py")
