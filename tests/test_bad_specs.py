"""Malformed specs: every one fails with exit status 2, a ``file:line`` message, no traceback,
and nothing written.

Each ``tests/bad_specs/NN_description.yaml`` starts with two header comments::

    # expect: <substring of one reported problem>
    # line: <the line that problem names>

The huge, deeply nested and alias-bomb specs are generated into ``tmp_path`` here.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from rnngen.build import _display
from rnngen.cli import main

BAD = Path(__file__).parent / "bad_specs"
CASES = sorted(BAD.glob("*.yaml"))
HEADER = re.compile(rb"# expect: (?P<expect>[^\n]*)\n# line: (?P<line>\d+)\n")

VALID = (Path(__file__).parent.parent / "spec" / "simple_rnn.yaml").read_text(encoding="utf-8")


def build(spec: Path, out: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["build", str(spec), "--out", str(out)])
    unexpected = result.exception is not None and not isinstance(result.exception, SystemExit)
    assert not unexpected, f"unexpected exception {result.exception!r}\n{result.output}"
    return result.exit_code, result.output


def assert_rejected(spec: Path, out: Path, expect: str, line: int | None) -> str:
    code, output = build(spec, out)
    assert code == 2, f"exit {code}, output:\n{output}"
    assert "Traceback" not in output, output
    assert expect in output, f"{expect!r} not in:\n{output}"
    problems = [ln for ln in output.splitlines() if expect in ln]
    shown = _display(spec)
    prefix = f"{shown}:{line}:" if line else f"{shown}:"
    assert any(p.startswith(prefix) for p in problems), f"no problem at {prefix!r}:\n{output}"
    assert not out.exists() or not any(out.iterdir()), f"files written to {out}"
    return output


def test_corpus_is_large_enough():
    assert len(CASES) >= 40


@pytest.mark.parametrize("spec", CASES, ids=[p.stem for p in CASES])
def test_bad_spec(spec: Path, tmp_path: Path):
    match = HEADER.match(spec.read_bytes())
    assert match, f"{spec.name} lacks the '# expect:' / '# line:' header"
    expect = match["expect"].decode()
    line = int(match["line"])
    assert_rejected(spec, tmp_path / "out", expect, line)


def test_several_errors_reported_together(tmp_path: Path):
    spec = BAD / "65_several_errors.yaml"
    output = assert_rejected(spec, tmp_path / "out", "'Cell-1' is not a valid identifier", 3)
    shown = _display(spec)
    lines = [ln for ln in output.splitlines() if ln.startswith(f"{shown}:")]
    assert len(lines) == 3, output
    assert any(ln.startswith(f"{shown}:18:") and "state 'c' is never updated" in ln for ln in lines)
    assert any(ln.startswith(f"{shown}:18:") and "unknown name 'bais'" in ln for ln in lines)


def test_truly_empty_file(tmp_path: Path):
    spec = tmp_path / "empty.yaml"
    spec.write_bytes(b"")
    assert_rejected(spec, tmp_path / "out", "empty spec", 1)


def test_binary_garbage(tmp_path: Path):
    spec = tmp_path / "garbage.yaml"
    spec.write_bytes(bytes(range(256)) * 4)
    assert_rejected(spec, tmp_path / "out", "binary data (NUL byte)", 1)


def test_nul_in_utf8_text(tmp_path: Path):
    spec = tmp_path / "nul.yaml"
    spec.write_bytes(VALID.encode().replace(b"name: simple_rnn", b"name: simple\x00rnn"))
    assert_rejected(spec, tmp_path / "out", "binary data (NUL byte)", 2)


def test_missing_file(tmp_path: Path):
    code, output = build(tmp_path / "nope.yaml", tmp_path / "out")
    assert code == 2 and "no such spec file" in output and "Traceback" not in output


def test_debug_shows_traceback(tmp_path: Path):
    result = CliRunner().invoke(
        main, ["--debug", "build", str(BAD / "25_state_never_updated.yaml"), "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "Traceback" in result.output


def _fast(spec: Path, out: Path, expect: str, line: int | None):
    start = time.perf_counter()
    assert_rejected(spec, out, expect, line)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"took {elapsed:.2f} s"


def test_ten_megabyte_spec(tmp_path: Path):
    spec = tmp_path / "huge.yaml"
    spec.write_text(VALID + "# " + "x" * 10_000_000 + "\n", encoding="utf-8")
    _fast(spec, tmp_path / "out", "the limit is", None)


def test_many_nodes(tmp_path: Path):
    spec = tmp_path / "wide.yaml"
    spec.write_text(VALID.replace("states: [h]", "states: [" + ", ".join(["h"] * 30_000) + "]"))
    _fast(spec, tmp_path / "out", "more than 20000 YAML nodes", None)


def test_deeply_nested(tmp_path: Path):
    spec = tmp_path / "deep.yaml"
    depth = 50_000
    spec.write_text("name: " + "[" * depth + "]" * depth + "\n")
    _fast(spec, tmp_path / "out", "nested more than", 1)


def test_deeply_nested_block_mappings(tmp_path: Path):
    spec = tmp_path / "deep_block.yaml"
    spec.write_text("".join(" " * i + f"k{i}:\n" for i in range(60)) + " " * 60 + "v\n")
    _fast(spec, tmp_path / "out", "nested more than", None)


def test_alias_bomb(tmp_path: Path):
    spec = tmp_path / "bomb.yaml"
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    spec.write_text("\n".join(lines) + "\n")
    _fast(spec, tmp_path / "out", "anchors and aliases", 1)


@pytest.mark.parametrize("quote", ["", '"', "'"])
def test_equation_column_points_at_the_name(tmp_path: Path, quote: str):
    spec = tmp_path / "col.yaml"
    spec.write_text(
        "name: cell\nclass_name: Cell\nweights:\n"
        "  kernel: {shape: [input_dim, units], initializer: glorot_uniform}\n"
        f"states: [h]\nstep:\n  h: {quote}tanh(x @ kernel + bais){quote}\n"
    )
    col = 24 + len(quote)  # 'bais' starts at 0-based index 23 (+1) of the unquoted line
    assert_rejected(spec, tmp_path / "out", f":7:{col}: step.h: unknown name 'bais'", 7)
