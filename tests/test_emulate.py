"""Emulating a target core: the counting plugin against programs whose count is known, the
cycle model against llvm-mca, and whole models under qemu's Cortex-A72 and A76."""

from __future__ import annotations

import os
import shutil
import struct

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import REPO
from liteconv.cli import cli
from liteconv.device.errors import LiteconvError
from liteconv.emulate import counts, cycles, tools

ARM64_CACHE = REPO / ".cache" / "arm64"


def _movz(rd: int, imm: int) -> int:
    return 0xD2800000 | (imm << 5) | rd


def _movn(rd: int, imm: int) -> int:
    return 0x92800000 | (imm << 5) | rd


SVC = 0xD4000001
MARK = [_movn(0, 7420)]  # x0 = -7421, the plugin's marker descriptor


def loop_program(n: int) -> bytes:
    """A static aarch64 ELF: mark start, count x1 = n down (3 instructions a turn), mark
    stop, exit. The region holds 1 + 3n + 4 instructions; the whole run 3n + 12."""
    code = [*MARK, _movz(2, 16), _movz(8, 64), SVC,  # write(-7421, _, 16): region 0 starts
            _movz(1, n),
            0x91000463,  # add x3, x3, #1
            0xF1000421,  # subs x1, x1, #1
            0x54000000 | (((-2) & 0x7FFFF) << 5) | 1,  # b.ne back to the add
            *MARK, _movz(2, 1), _movz(8, 64), SVC,  # write(-7421, _, 1): region ends
            _movz(8, 93), _movz(0, 0), SVC]  # exit(0)  # fmt: skip
    body = b"".join(struct.pack("<I", c) for c in code)
    base, header = 0x400000, 64 + 56
    size = header + len(body)
    elf = (
        b"\x7fELF"
        + bytes([2, 1, 1, 0])
        + bytes(8)
        + struct.pack("<HHIQQQIHHHHHH", 2, 183, 1, base + header, 64, 0, 0, 64, 56, 1, 64, 0, 0)
    )
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)  # R+X, one LOAD
    return elf + phdr + body  # fmt: skip


def _need_tools():
    if not (shutil.which("qemu-aarch64") or os.path.isfile("/usr/bin/qemu-aarch64")):
        pytest.fail("qemu-aarch64 missing: 'make test' installs Debian's qemu-user")


@pytest.mark.parametrize("n", [1, 1000, 54321])
def test_plugin_counts_exactly_the_instructions_of_a_known_loop(tmp_path, n):
    _need_tools()
    program = tmp_path / "loop"
    program.write_bytes(loop_program(n))
    program.chmod(0o755)
    regions, total = counts.run_counted([str(program)], qemu_cpu="cortex-a72", cache=tmp_path)
    assert regions[0]["instructions"] == 1 + 3 * n + 4
    assert total == 3 * n + 12
    # blocks: the loop's entry (with its first turn) once, the loop body n - 1 times, the
    # stop marker's once
    assert sum(runs for _, _, runs, _ in regions[0]["blocks"]) == n + 1


def test_plugin_output_parses_and_the_plugin_is_built_once(tmp_path):
    text = "region 0 9\ntb 400088 4 1 017d80d263040091210400f1c1ffff54\nregion 1 3\ntotal 20\n"
    regions, total = counts.parse_plugin_output(text)
    assert total == 20 and regions[1] == {"instructions": 3, "blocks": []}
    assert regions[0]["blocks"][0][:3] == (0x400088, 4, 1) and len(regions[0]["blocks"][0][3]) == 16
    first = tools.build_plugin(tmp_path)
    stamp = first.stat().st_mtime_ns
    assert tools.build_plugin(tmp_path) == first and first.stat().st_mtime_ns == stamp


def test_cycles_of_a_block_come_from_llvm_mca_and_the_cold_rest_at_the_hot_cpi():
    loop = bytes.fromhex("63040091210400f1c1ffff54")  # add; subs; b.ne: 1 cycle a turn on A72
    cold = bytes.fromhex("63040091")
    blocks = [(0x1000, 3, 1000, loop), (0x2000, 1, 1, cold)]
    cyc, detail = cycles.estimate_cycles(blocks, "cortex-a72")
    per_turn = cycles._mca({0: cycles.disassemble(loop)}, "cortex-a72")[0]  # noqa: SLF001
    assert 0.9 <= per_turn <= 1.5  # a dependent add/subs chain: about a cycle a turn
    assert detail["hot_blocks"] == 1 and detail["instructions"] == 3001
    assert cyc == pytest.approx(1000 * per_turn + 1 * per_turn / 3, rel=1e-9)
    # an in-order core is not faster on the same block
    assert cycles.estimate_cycles(blocks, "cortex-a53")[0] >= cyc * 0.99


def test_emulate_without_the_tools_is_a_one_line_error(tmp_path, monkeypatch, exported_run):
    monkeypatch.setattr(tools, "LLVM_DIRS", ())
    monkeypatch.setattr(tools.shutil, "which", lambda *_a, **_k: None)
    monkeypatch.setattr(tools.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(tools.Path, "is_file", lambda self: False)
    with pytest.raises(LiteconvError, match="sudo apt-get install qemu-user"):
        tools.qemu_user()
    with pytest.raises(LiteconvError, match="sudo apt-get install llvm-16"):
        tools.llvm_tool("llvm-mca")
    monkeypatch.undo()
    monkeypatch.setattr(tools, "qemu_user", lambda install=True: (_ for _ in ()).throw(
        LiteconvError("qemu-aarch64 (Debian's qemu-user) not found: run 'sudo apt-get install qemu-user'")))  # fmt: skip
    model = exported_run / "export" / "fp32.tflite"
    result = CliRunner().invoke(cli, ["bench", str(model), "--runs", "2", "--threads", "1",
                                      "--emulate", "raspberry-pi-4", "--emulate-cache",
                                      str(tmp_path / "cache")])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1].startswith("Error: qemu-aarch64")


def _conv_stack(tmp_path):
    """Four stacked 3×3 convolutions, C = 32 at 14×14, as fp32 and int8 TFLite."""
    from liteconv.compat import keras
    from liteconv.export.convert import to_tflite

    keras.utils.set_random_seed(0)
    inputs = keras.Input((14, 14, 32))
    x = inputs
    for i in range(4):
        x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name=f"c{i}")(x)
    model = keras.Model(inputs, x)
    data = np.random.default_rng(0).uniform(size=(8, 14, 14, 32)).astype("float32")
    paths = {}
    for mode in ("fp32", "int8"):
        paths[mode] = tmp_path / f"stack-{mode}.tflite"
        paths[mode].write_bytes(to_tflite(model, mode=mode, representative_data=data,
                                          num_calibration=8))  # fmt: skip
    return paths


@pytest.mark.large
def test_cores_differ_in_int8_kernels_not_in_fp32_and_counts_repeat(tmp_path):
    """XNNPACK picks the emulated core's kernels: Cortex-A76 has dot-product int8 kernels,
    Cortex-A72 not; fp32 runs the same NEON kernels on both. Counting twice gives the same."""
    from liteconv.device.targets import load_target
    from liteconv.emulate.estimate import estimate_models

    _need_tools()
    paths = _conv_stack(tmp_path)
    models = [str(paths["fp32"]), str(paths["int8"])]
    pi4 = estimate_models(models, load_target("raspberry-pi-4"), cache=tmp_path / "a",
                          arm64_cache=ARM64_CACHE)  # fmt: skip
    again = estimate_models(models, load_target("raspberry-pi-4"), cache=tmp_path / "b",
                            arm64_cache=ARM64_CACHE)  # fmt: skip
    pi5 = estimate_models(models, load_target("raspberry-pi-5"), cache=tmp_path / "c",
                          arm64_cache=ARM64_CACHE)  # fmt: skip
    assert all(r["check"]["passed"] for r in pi4 + pi5)
    assert [r["instructions_per_invoke"] for r in pi4] == [
        r["instructions_per_invoke"] for r in again
    ]
    assert [r["estimated_cycles"] for r in pi4] == [r["estimated_cycles"] for r in again]
    fp32_a72, int8_a72 = (r["instructions_per_invoke"] for r in pi4)
    fp32_a76, int8_a76 = (r["instructions_per_invoke"] for r in pi5)
    assert abs(fp32_a72 - fp32_a76) <= 1e-3 * fp32_a72  # the same kernels
    assert int8_a76 < 0.7 * int8_a72  # SDOT does 4 multiply-adds per lane
    assert fp32_a72 > 4 * 14 * 14 * 9 * 32 * 32 / 4  # at least a 4-lane FMA per 4 MACs

    # a cached estimate runs nothing
    def no_emulation(*_a, **_k):
        raise AssertionError("emulated again although cached")

    from liteconv.emulate import estimate as est

    original = est.counts.count_models
    est.counts.count_models = no_emulation
    try:
        cached = estimate_models(models, load_target("raspberry-pi-4"), cache=tmp_path / "a",
                                 arm64_cache=ARM64_CACHE)  # fmt: skip
    finally:
        est.counts.count_models = original
    assert [r["estimated_ms"] for r in cached] == [r["estimated_ms"] for r in pi4]


def _small_cnn():
    from liteconv.compat import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", name="c1")(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn1")(x))
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="out")(x))
    return model


@pytest.mark.large
def test_profile_emulate_estimates_every_block_and_the_sum_predicts_the_whole(tmp_path):
    """profile --emulate: every block converted alone and estimated on the Pi 4's core; the
    sum of the blocks (less the per-invoke cost) against the whole model's own estimate."""
    import json

    _need_tools()
    path = tmp_path / "cnn.keras"
    _small_cnn().save(path)
    result = CliRunner().invoke(cli, ["profile", str(path), "--mode", "int8", "--emulate",
                                      "raspberry-pi-4", "--emulate-cache", str(tmp_path / "c"),
                                      "--out", str(tmp_path / "prof")])  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "prof.json").read_text())
    res = doc["modes"]["int8"]
    assert res["emulated"]["core"] == "cortex-a72" and res["emulated"]["target"] == "raspberry-pi-4"
    assert [b["block"] for b in res["blocks"]][:2] == ["c1", "pool"]
    assert all(b["p50_ms"] > 0 for b in res["blocks"])
    by_name = {b["block"]: b for b in res["blocks"]}
    assert by_name["c2"]["p50_ms"] > by_name["gap"]["p50_ms"]  # 147k MACs against a mean
    assert abs(res["error_pct"]) < 25, res  # blocks alone add up to the whole model
    text = (tmp_path / "prof.md").read_text()
    assert "**Estimated** for raspberry-pi-4" in text and "estimated ms" in text


@pytest.mark.large
def test_budget_plan_on_the_emulated_board(tmp_path):
    """flatten --budget-ms --target raspberry-pi-4 --emulate plans on estimates: the parent's
    predicted latency is its emulated profile's; a budget at the fastest reachable plan
    decomposes, one above the parent keeps every layer."""
    from liteconv.bench.budget import plan_for_budget
    from liteconv.bench.profile import emulated_profile
    from liteconv.device.targets import load_target

    _need_tools()
    model = _small_cnn()
    images = np.random.default_rng(0).uniform(size=(32, 16, 16, 1)).astype("float32")
    board = load_target("raspberry-pi-4")
    loose = plan_for_budget(model, 1e3, calibration=images, mode="int8", emulate=board,
                            echo=lambda *_: None)  # fmt: skip
    whole = emulated_profile(model, calibration=images, target=board, modes=["int8"],
                             cache=".cache/emulate")["int8"]  # fmt: skip
    assert loose.baseline_ms == pytest.approx(whole["predicted_ms"], rel=1e-6)
    assert set(loose.choices.values()) == {"keep"}
    tight = plan_for_budget(model, loose.fastest_ms * 1.0001, calibration=images, mode="int8",
                            emulate=board, echo=lambda *_: None)  # fmt: skip
    assert tight.predicted_ms <= loose.fastest_ms * 1.0001 < loose.baseline_ms
    assert any(c != "keep" for c in tight.choices.values())


def test_flatten_emulate_needs_a_budget_and_a_board(digits_run, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["flatten", str(digits_run), "--emulate", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--emulate is for --budget-ms" in result.output
    result = runner.invoke(cli, ["flatten", str(digits_run), "--budget-ms", "1", "--emulate",
                                 "--out", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 2 and "give --target T" in result.output
    assert not any(tmp_path.iterdir())


@pytest.mark.large
def test_report_puts_host_measured_board_estimated_and_board_measured_side_by_side(
    exported_run, tmp_path
):
    import json

    from liteconv.device.targets import load_target
    from liteconv.emulate.estimate import estimate_models

    _need_tools()
    board = {"where": "raspberrypi", "records": [
        {"model": "digits_quick/fp32", "threads": 1, "p50_ms": 0.5},
        {"model": "digits_quick/int8", "threads": 1, "p50_ms": 0.2},
    ]}  # fmt: skip
    bench = tmp_path / "pi.json"
    bench.write_text(json.dumps(board))
    result = CliRunner().invoke(cli, ["report", str(exported_run), "--runs", "3", "--bench",
                                      str(bench), "--emulate", "raspberry-pi-4",
                                      "--emulate-cache", str(tmp_path / "c"),
                                      "--out", str(tmp_path / "report")])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads((tmp_path / "report.json").read_text())}
    direct = estimate_models([rows["fp32"]["file"], rows["int8"]["file"]],
                             load_target("raspberry-pi-4"), cache=tmp_path / "c2")  # fmt: skip
    for name, rec in zip(("fp32", "int8"), direct):
        row = rows[name]
        assert row["p50_ms"] > 0 and row["p50_ms@raspberrypi"] in (0.5, 0.2)
        assert row["estimated_ms@raspberry-pi-4"] == rec["estimated_ms"] > 0
    text = (tmp_path / "report.md").read_text()
    assert "p50 ms (host)" in text and "p50 ms raspberrypi" in text
    assert "estimated ms raspberry-pi-4" in text and "not measured" in text


@pytest.mark.large
def test_bundle_readme_says_what_to_expect_on_the_board(exported_run, tmp_path):
    import tarfile

    from liteconv.device.targets import load_target
    from liteconv.emulate.estimate import estimate_models

    _need_tools()
    result = CliRunner().invoke(cli, ["bundle", str(exported_run), "--target", "raspberry-pi-5",
                                      "--emulate", "--emulate-cache", str(tmp_path / "c"),
                                      "-o", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 0, result.output
    (path,) = tmp_path.glob("*.tar.gz")
    with tarfile.open(path) as tar:
        readme = next(tar.extractfile(m).read().decode() for m in tar.getmembers()
                      if m.name.endswith("/README.md"))  # fmt: skip
    assert "What to expect on this board (estimated, not measured)" in readme
    assert "cortex-a76" in readme
    files = sorted((exported_run / "export").glob("*.tflite"))
    for rec in estimate_models([str(f) for f in files], load_target("raspberry-pi-5"),
                               cache=tmp_path / "c"):  # fmt: skip
        assert f"| {rec['estimated_ms']:.4f} |" in readme
