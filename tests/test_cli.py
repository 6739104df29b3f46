"""The command line as a newcomer meets it: sectioned help, every option explained, defaults
that write into the run (never the repository), the README's commands all real."""

from __future__ import annotations

import re
import shutil
import subprocess

import click
import pytest
from click.testing import CliRunner

from conftest import REPO, copy_run
from liteconv.cli import cli
from liteconv.cli.common import one_line


def _commands(group: click.Group, path=()):
    for name, cmd in group.commands.items():
        if cmd.hidden:
            continue
        yield (*path, name), cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*path, name))


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_help_has_sections_and_every_whole_one_liner():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    text = _flat(result.output)
    for heading in ("The job", "Models and configs", "The board", "Studies"):
        assert heading in text, heading
    for name, cmd in cli.commands.items():
        if cmd.hidden:
            assert f" {name} " not in text, f"hidden {name} listed"
            continue
        line = one_line(cmd)
        assert line.endswith((".", ")")) and _flat(line) in text, (name, line)
    # the old study names (0.x aliases) are gone
    assert not {"compare", "bench-train", "bench-flatten", "bench-profile"} & set(cli.commands)
    study = CliRunner().invoke(cli, ["study", "--help"])
    assert all(name in study.output for name in ("layers", "train", "flatten", "profile"))


def test_every_option_has_a_help_text():
    missing = [
        f"{' '.join(path)} {param.opts[0]}"
        for path, cmd in _commands(cli)
        for param in cmd.params
        if isinstance(param, click.Option) and not param.help
    ]
    assert not missing, missing


def test_runtime_names_have_one_spelling_and_accept_the_pip_name():
    from liteconv.cli.common import runtime_choice

    choice = runtime_choice(["litert", "tflite_runtime"])
    assert choice.convert("tflite-runtime", None, None) == "tflite_runtime"
    with pytest.raises(click.BadParameter):
        choice.convert("tflite", None, None)


def test_report_of_one_run_writes_into_the_run_not_the_repository(
    exported_run, tmp_path, monkeypatch
):
    run = copy_run(exported_run, tmp_path / "runs")
    work = tmp_path / "cwd"
    (work / "docs" / "results").mkdir(parents=True)
    monkeypatch.chdir(work)  # as if inside a checkout: docs/results/ is right here
    result = CliRunner().invoke(cli, ["report", str(run), "--runs", "2"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in run.glob("report.*")} == {"report.json", "report.md", "report.png"}
    assert not any((work / "docs" / "results").iterdir())


def test_make_demo_args_reach_the_config_only():
    """`make demo ARGS=--set ...` once died at export ('No such option --set'): the demo is
    one command now, and ARGS are config overrides there as for `make train`."""
    if not shutil.which("make"):
        pytest.fail("make is needed for the Makefile checks")
    out = subprocess.run(["make", "-n", "-C", str(REPO), "demo", "ARGS=--set train.epochs=1"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    demo = [ln for ln in out.splitlines() if " demo " in ln]
    assert len(demo) == 1 and demo[0].rstrip().endswith("--set train.epochs=1"), out
    assert "fashion_mnist_demo.yaml" in demo[0]
    assert not [ln for ln in out.splitlines() if " export " in ln and "--set" in ln]


@pytest.mark.large
def test_demo_runs_the_whole_job_with_a_progress_line_per_stage(tmp_path):
    result = CliRunner().invoke(cli, [
        "demo", "-c", str(REPO / "configs/experiments/digits_quick.yaml"), "--set",
        "train.epochs=1", "--set", "train.verbose=0", "--out", str(tmp_path / "runs"),
        "--dist", str(tmp_path / "dist"),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    stages = ("train", "export + verify", "benchmark (this host)",
              "estimate (the board, emulated)", "bundle")  # fmt: skip
    for i, stage in enumerate(stages, start=1):
        assert f"== [{i}/5] {stage} done in" in result.output
    assert "verified qat_int8.tflite" in result.output
    # the Pi 4 estimate of both exported models beside this host's measured p50
    table = result.output.split("== [4/5]")[1]
    assert "raspberry-pi-4 ms (4 threads, estimated)" in table
    assert "this host p50 ms (1 thread, measured)" in table
    for model in ("fp32", "qat_int8"):
        (row,) = [ln for ln in table.splitlines() if ln.startswith(f"{model} ")]
        cells = row.split()
        assert float(cells[1]) > 0 and float(cells[-1]) > 0 and float(cells[-2]) > 0, row
    assert "estimated, not measured: cortex-a72" in table
    (bundle,) = (tmp_path / "dist").glob("*.tar.gz")
    from liteconv.deploy.bundle import bundle_files

    assert "What to expect on this board (estimated" in bundle_files(bundle)["README.md"].decode()
    lines = result.output.strip().splitlines()
    assert "make reproduce" in lines[-1]
    assert any(ln.startswith("estimate:  raspberry-pi-4 latency above, estimated") for ln in lines)


def test_demo_without_the_emulation_tools_still_finishes_and_says_how(monkeypatch, tmp_path):
    """No qemu (no root, no apt): the estimate stage is one line, the demo goes on."""
    from liteconv.cli import demo as demo_module
    from liteconv.device.errors import LiteconvError
    from liteconv.emulate import estimate

    def no_tools(*_a, **_k):
        raise LiteconvError("qemu-aarch64 (Debian's qemu-user) not found: run 'sudo apt-get "
                            "install qemu-user'")  # fmt: skip

    monkeypatch.setattr(estimate, "estimate_models", no_tools)
    host = tmp_path / "bench.json"
    host.write_text('{"records": []}')
    lines = []
    assert (
        demo_module.board_estimates(["m.tflite"], "raspberry-pi-4", host, echo=lines.append) is None
    )
    assert len(lines) == 1 and lines[0].startswith("board estimate skipped (qemu-aarch64")
    assert "make emulation-tools" in lines[0] and "--emulate raspberry-pi-4" in lines[0]


def test_bench_arm64_without_root_says_so_before_any_download(tmp_path, monkeypatch):
    import os

    from liteconv.emulate import userspace

    monkeypatch.setattr(os, "geteuid", lambda: 1000)

    def no_download(*_a, **_k):
        raise AssertionError("downloaded before telling the user to be root")

    monkeypatch.setattr(userspace.subprocess, "run", no_download)
    result = CliRunner().invoke(cli, ["bench-arm64", "x.tar.gz", "--cache", str(tmp_path)])
    assert result.exit_code == 2
    assert "run this first time as root" in result.output
    assert len(result.output.strip().splitlines()) == 1


def _make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([a-zA-Z0-9_-]+):", text, flags=re.M))


DOC_PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_readme_commands_all_exist():
    """Every `liteconv X [Y]` and `make T` the README and the docs pages show is a real
    command / target."""
    text = "\n".join(page.read_text() for page in DOC_PAGES)
    fenced = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
    inline = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    readme = "\n".join(fenced + inline)  # commands are in code, not in prose
    targets = _make_targets()
    made = set(re.findall(r"(?<![\w/-])make ([a-z][a-z0-9-]+)", readme))
    assert made and made <= targets, sorted(made - targets)
    called = re.findall(r"(?<![\w/.-])liteconv ([a-z][a-z0-9-]*)(?: ([a-z][a-z0-9-]*))?", readme)
    assert called
    for name, sub in called:
        assert name in cli.commands, f"README names 'liteconv {name}'"
        cmd = cli.commands[name]
        assert not cmd.hidden, f"README uses the old name 'liteconv {name}'"
        if isinstance(cmd, click.Group) and sub and not sub.startswith("-"):
            assert sub in cmd.commands, f"README names 'liteconv {name} {sub}'"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_of_the_readme_and_docs_pages_resolves():
    """A relative link names a file (or folder) that exists, and its #anchor a heading of
    that page: the README is a front door to docs/, and moving a section must not leave a
    dead link behind."""
    pages = [*DOC_PAGES, *sorted((REPO / "docs" / "results").glob("*.md"))]
    checked = 0
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            assert file.exists(), f"{page.relative_to(REPO)}: dead link {target}"
            if anchor and file.suffix == ".md":
                heads = re.findall(r"^#{1,6} (.*)$", file.read_text(), flags=re.M)
                assert anchor in {_anchor(h) for h in heads}, (
                    f"{page.relative_to(REPO)}: {target}: no such heading"
                )
            checked += 1
    assert checked > 10
