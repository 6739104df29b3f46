"""``liteconv summary`` / ``liteconv models`` through click's CliRunner."""

from __future__ import annotations

from click.testing import CliRunner

from liteconv.cli import cli


def test_summary_prints_table_and_totals():
    result = CliRunner().invoke(
        cli,
        ["summary", "mobilenet_v1", "--input-shape", "224,224,3", "--num-classes", "1000"],
    )
    assert result.exit_code == 0, result.output
    assert "4,253,864 parameters, 568,740,352 MACs" in result.output
    assert "conv_dw_13_pw" in result.output


def test_summary_set_overrides_model_arguments():
    result = CliRunner().invoke(
        cli,
        [
            "summary",
            "flattened_cnn",
            "--input-shape",
            "28,28,1",
            "--set",
            "model.kwargs.lvh_stages=1",
            "--markdown",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "| block2_s1_lateral" in result.output
    assert "block2_s2_lateral" not in result.output


def test_summary_errors_are_one_line_exit_2():
    runner = CliRunner()
    for args, text in [
        (["summary", "nope"], "available models: baseline_cnn"),
        (["summary", "mobilenet_v1", "--set", "model.kwargs.beta=2"], "unknown argument"),
        (["summary", "mobilenet_v1", "--set", "alpha=2"], "--set model.kwargs.alpha=2"),
        (["summary", "baseline_cnn", "--input-shape", "a,b"], "--input-shape"),
        (["summary", "baseline_cnn", "--set", "width"], "expected KEY=VALUE"),
    ]:
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        assert text in result.output
        assert "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1


def test_models_lists_registry_with_arguments():
    result = CliRunner().invoke(cli, ["models"])
    assert result.exit_code == 0
    assert "flattened_cnn(width=1.0" in result.output
    assert "mobilenet_v1(alpha=1.0" in result.output


def test_architecture_doc_names_every_module():
    from conftest import REPO

    doc = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    src = REPO / "src" / "liteconv"
    missing = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src)
        folder = f"{rel.parent.as_posix()}/" if rel.parent.as_posix() != "." else ""
        if path.name not in doc or (folder and folder not in doc):
            missing.append(str(rel))
    assert not missing, f"docs/ARCHITECTURE.md does not name {missing}"
