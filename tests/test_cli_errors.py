"""A bug in rnngen is not a spec error: one line naming the stage and spec, a request to
report it, exit status 3, no traceback (``--debug`` shows it), and nothing written."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from rnngen import cli, codegen, spec

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "spec" / "simple_rnn.yaml"


def _boom(*args, **kwargs):
    raise KeyError("planted")


def _build(tmp_path, *extra):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli.main, [*extra, "build", str(SPEC), "--out", str(out)])
    return result, out


def test_render_bug_is_one_line_exit_3_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(codegen, "render", _boom)
    result, out = _build(tmp_path)
    assert result.exit_code == cli.EXIT_INTERNAL == 3
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("internal error while generating code from ")
    assert "simple_rnn.yaml: KeyError: 'planted'" in lines[0]
    assert lines[1] == cli.REPORT
    assert len(lines) == 2 and "Traceback" not in result.output
    assert not out.exists()


def test_parse_bug_names_the_parsing_stage(tmp_path, monkeypatch):
    monkeypatch.setattr(spec, "parse", _boom)
    result, _ = _build(tmp_path)
    assert result.exit_code == 3
    assert result.output.startswith("internal error while parsing ")
    assert "simple_rnn.yaml" in result.output.splitlines()[0]


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setattr(codegen, "render", _boom)
    result, _ = _build(tmp_path, "--debug")
    assert result.exit_code == 3
    assert "Traceback" in result.output and "_boom" in result.output


def test_spec_errors_still_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(SPEC.read_text().replace("activation(", "tanhh("))
    result = CliRunner().invoke(cli.main, ["build", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "unknown function 'tanhh'" in result.output and "internal error" not in result.output


def test_unexpected_error_in_any_command_is_internal(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("planted\nsecond line")

    monkeypatch.setattr(cli, "resolve_specs", broken)
    result = CliRunner().invoke(cli.main, ["build", "--check"])
    assert result.exit_code == 3
    first = result.output.splitlines()[0]
    assert first == "internal error while building: RuntimeError: planted\\nsecond line"
