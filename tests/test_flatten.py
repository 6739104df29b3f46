"""`liteconv flatten`: a trained baseline decomposed, fine-tuned, exported and verified."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest import DIGITS, quiet
from liteconv.cli import cli
from liteconv.config import load_config
from liteconv.pipeline.train import train


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory):
    cfg = load_config(DIGITS, {"model.name": "baseline_cnn", "model.kwargs.width": 0.5,
                               "train.epochs": 4, "train.verbose": 0})  # fmt: skip
    return train(cfg, out=tmp_path_factory.mktemp("parent"), echo=quiet).path


def _new_run(output: str):
    from pathlib import Path

    return Path(output.strip().splitlines()[-1].removeprefix("run folder: "))


@pytest.mark.large
def test_flattened_by_decomposition_fine_tunes_exports_and_verifies(baseline_run, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["flatten", str(baseline_run), "--stages", "2", "--epochs", "2",
                                 "--min-macs", "20000", "--out", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 0, result.output
    child = _new_run(result.output)
    manifest = json.loads((child / "manifest.json").read_text())
    flat = manifest["flatten"]
    parent = json.loads((baseline_run / "manifest.json").read_text())
    assert manifest["parent"]["run"] == str(baseline_run) and manifest["status"] == "complete"
    assert flat["method"] == "lvh" and flat["stages"] == 2 and flat["layers"]
    assert flat["macs_before"] == parent["model"]["macs"] > flat["macs_after"]
    assert manifest["model"]["macs"] == flat["macs_after"]
    assert flat["data_aware"]["images"] > 0 and flat["bn_reestimated"] is False  # the default
    for row in flat["layers"]:
        # the kernel fit is the best rank-1 kernel; the data fit moves away from it to
        # reproduce the outputs better (held-out images)
        assert 0 <= row["kernel_fit_rel_error"] < 1 and row["rel_error"] >= 0
        assert 0 <= row["output_error"] <= row["kernel_fit_output_error"]
        assert row["macs_after"] < row["macs_before"] and row["macs_before"] >= 20000
    assert sorted(flat["test_accuracy_per_epoch"]) == ["1", "2"]
    assert flat["test_accuracy_per_epoch"]["2"] == pytest.approx(
        manifest["metrics"]["test_accuracy"], abs=1e-4
    )
    # fine-tuning keeps what the decomposition kept and ends well above chance
    final = manifest["metrics"]["test_accuracy"]
    assert final > 0.85 and final >= flat["accuracy_decomposed"] - 0.02
    result = runner.invoke(cli, ["export", str(child), "--mode", "fp32,qat_int8"])
    assert result.exit_code == 0, result.output
    verify = json.loads((child / "export" / "verify.json").read_text())
    assert verify["fp32"]["agreement"] == 1.0 and verify["qat_int8"]["agreement"] > 0.9


def test_cp_decompose_only(baseline_run, tmp_path):
    result = CliRunner().invoke(cli, ["flatten", str(baseline_run), "--method", "cp",
                                      "--rank-ratio", "0.25", "--epochs", "0",
                                      "--out", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = json.loads((_new_run(result.output) / "manifest.json").read_text())
    layers = manifest["flatten"]["layers"]
    assert all(r["method"] == "cp" for r in layers)
    assert all(r["output_error"] <= r["kernel_fit_output_error"] for r in layers)
    parent_filters = {"block2_conv": 32, "block3_conv": 64, "block4_conv": 64, "block5_conv": 128}
    for row in layers:
        if row["layer"] in parent_filters:
            assert row["rank"] == round(0.25 * parent_filters[row["layer"]])
    assert manifest["status"] == "complete" and (_new_run(result.output) / "model.keras").is_file()


def test_flatten_a_keras_file_with_a_config(baseline_run, tmp_path):
    result = CliRunner().invoke(cli, ["flatten", "--model", str(baseline_run / "model.keras"),
                                      "-c", DIGITS, "--epochs", "0", "--name", "from_file",
                                      "--out", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = json.loads((_new_run(result.output) / "manifest.json").read_text())
    assert manifest["parent"]["model_file"] == str(baseline_run / "model.keras")
    assert manifest["flatten"]["macs_after"] < manifest["flatten"]["macs_before"]


def test_no_data_aware_keeps_the_kernel_fit_and_reports_its_output_error(baseline_run, tmp_path):
    args = ["flatten", str(baseline_run), "--epochs", "0", "--out", str(tmp_path)]
    args += ["--fit-images", "300"]  # the same held-out images in both runs
    result = CliRunner().invoke(cli, [*args, "--no-data-aware", "--name", "kernel_fit"])
    assert result.exit_code == 0, result.output
    kernel = json.loads((_new_run(result.output) / "manifest.json").read_text())["flatten"]
    assert kernel["data_aware"] is None and kernel["bn_reestimated"] is True
    for row in kernel["layers"]:
        assert row["output_error"] == row["kernel_fit_output_error"] > 0
        assert "fit_sweeps" not in row
    result = CliRunner().invoke(cli, [*args, "--name", "data_fit"])
    assert result.exit_code == 0, result.output
    assert "relative output error" in result.output
    data = json.loads((_new_run(result.output) / "manifest.json").read_text())["flatten"]
    assert data["data_aware"] == {"images": 300}
    by_layer = {r["layer"]: r for r in kernel["layers"]}
    first = data["layers"][0]  # measured on the parent's own input in both runs
    assert first["kernel_fit_output_error"] == pytest.approx(
        by_layer[first["layer"]]["output_error"], rel=1e-4
    )
    assert all(r["output_error"] < r["kernel_fit_output_error"] for r in data["layers"])
    # the schedule per method: a kernel-fit LVH at a quarter of the parent's rate, a
    # data-aware LVH at a tenth, neither warmed up (digits: far below 1,000 steps)
    from liteconv.pipeline.run import Run

    parent_lr = Run(baseline_run).config().train.learning_rate
    assert kernel["learning_rate"] == pytest.approx(parent_lr / 4)
    assert data["learning_rate"] == pytest.approx(parent_lr / 10)
    assert kernel["warmup_epochs"] == data["warmup_epochs"] == 0


def test_default_schedule_is_gentle_only_for_a_close_start_with_room_to_work():
    from liteconv.bench.flatten_run import default_schedule

    assert default_schedule("cp", True, 1266) == (0.01, 1)  # Fashion-MNIST, 3 epochs
    assert default_schedule("cp", True, 102) == (0.1, 0)  # the ResNet's 3 short epochs
    assert default_schedule("lvh", True, 1266) == (0.1, 0)
    assert default_schedule("cp", False, 1266) == (0.1, 0)
    assert default_schedule("lvh", False, 1266) == (0.25, 0)


def test_flatten_errors_are_one_line_exit_2(baseline_run, digits_run, tmp_path):
    runner = CliRunner()
    out = ["--out", str(tmp_path)]
    result = runner.invoke(cli, ["flatten", str(baseline_run), "--layers", "nope", *out])
    assert result.exit_code == 2 and "no layer named 'nope'" in result.output
    result = runner.invoke(cli, ["flatten", str(baseline_run), "--min-macs", str(10**12), *out])
    assert result.exit_code == 2 and "nothing to decompose" in result.output
    result = runner.invoke(cli, ["flatten", str(baseline_run), "--rank", "4", *out])
    assert result.exit_code == 2 and "--method cp" in result.output
    result = runner.invoke(cli, ["flatten", "--model", str(baseline_run / "model.keras"), *out])
    assert result.exit_code == 2 and "needs -c CONFIG" in result.output
    assert not any(tmp_path.iterdir())  # nothing half-made


def test_a_parent_with_strided_convolutions_flattens_and_fine_tunes(tmp_path):
    """Strided Conv2Ds (as every ResNet has) decompose into steps with equal strides, so
    the child trains wherever oneDNN is off (TF_ENABLE_ONEDNN_OPTS=0 in `make test`)."""
    from liteconv.compat import keras
    from liteconv.pipeline.model_file import load_keras_model

    cfg = load_config(DIGITS, {"model.name": "baseline_cnn", "model.kwargs.width": 0.5,
                               "model.kwargs.downsample": "stride", "train.epochs": 3,
                               "train.verbose": 0})  # fmt: skip
    parent = train(cfg, out=tmp_path / "parent", echo=quiet).path
    strided = [lyr.name for lyr in load_keras_model(parent / "model.keras").layers
               if getattr(lyr, "strides", (1, 1)) == (2, 2)]  # fmt: skip
    assert strided == ["block3_conv", "block5_conv"]
    result = CliRunner().invoke(cli, ["flatten", str(parent), "--epochs", "1",
                                      "--out", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 0, result.output
    child = _new_run(result.output)
    model = load_keras_model(child / "model.keras")
    depthwise = [lyr for lyr in model.layers if isinstance(lyr, keras.layers.DepthwiseConv2D)]
    assert depthwise and all(lyr.strides[0] == lyr.strides[1] for lyr in depthwise)
    assert (2, 2) in [tuple(lyr.strides) for lyr in depthwise]
    manifest = json.loads((child / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["metrics"]["test_accuracy"] > 0.5
