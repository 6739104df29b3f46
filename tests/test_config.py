"""Config loading: base files, overrides, and one-line errors for bad input (exit 2)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from conftest import EXPERIMENTS
from liteconv.cli import cli
from liteconv.config import ConfigError, load_config


def test_experiment_inherits_base_and_applies_overrides():
    cfg = load_config(
        f"{EXPERIMENTS}/digits_quick.yaml", {"train.epochs": 1, "model.kwargs.width": 0.25}
    )
    assert cfg.experiment == "digits_quick"
    assert cfg.data.name == "digits"
    assert cfg.train.epochs == 1
    assert cfg.train.optimizer == "adam"  # from base.yaml
    assert cfg.model.kwargs == {"width": 0.25}
    assert cfg.export.modes == ["fp32", "qat_int8"]


@pytest.mark.parametrize("name", ["baseline", "flattened", "separable"])
def test_fashion_experiments_share_one_schedule(name):
    cfg = load_config(f"{EXPERIMENTS}/fashion_mnist_{name}.yaml")
    ref = load_config(f"{EXPERIMENTS}/fashion_mnist_baseline.yaml")
    assert cfg.model.name == f"{name}_cnn"
    assert cfg.train == ref.train and cfg.data == ref.data


BAD = [
    # (yaml text or None, overrides, expected fragment)
    (
        "trian: {epochs: 1}\n",
        {},
        "unknown key 'trian'; allowed in the top level: experiment, model",
    ),
    ("train: {epochz: 1}\n", {}, "unknown key 'train.epochz'; allowed in train: epochs"),
    ("train: {epochs: ten}\n", {}, "train.epochs: expected an integer, got 'ten'"),
    ("train: {epochs: 0}\n", {}, "train.epochs: 0 is out of range; allowed: [1, inf]"),
    ("train: {batch_size: true}\n", {}, "train.batch_size: expected an integer, got True"),
    ("train: {optimizer: adamx}\n", {}, "train.optimizer: expected one of 'adam', 'adamw'"),
    ("data: {validation_split: 1.5}\n", {}, "data.validation_split: 1.5 is out of range"),
    ("data: {image_size: [32]}\n", {}, "data.image_size: expected [height, width]"),
    ("data: {name: image_folder}\n", {}, "data.path: image_folder needs"),
    (
        "model: {name: resnet50}\n",
        {},
        "model.name: unknown model 'resnet50'; allowed: baseline_cnn",
    ),
    ("model: {name: mobilenet_v1, kwargs: {width: 2}}\n", {}, "unknown key 'model.kwargs.width'"),
    ("train: [1, 2]\n", {}, "train: expected a mapping, got [1, 2]"),
    ("- 1\n- 2\n", {}, "expected a mapping of sections, found list"),
    ("train: {epochs: 1\n", {}, "line 2"),
    (
        "train: {augmentation: {flip: maybe}}\n",
        {},
        "train.augmentation.flip: expected true or false",
    ),
    ("", {"train.lr": 0.1}, "unknown key 'train.lr'"),
    ("", {"train.epochs": -3}, "train.epochs: -3 is out of range"),
    ("export: {modes: [fp64]}\n", {}, "export.modes[0]: expected one of 'fp32'"),
    ("base: missing.yaml\n", {}, "missing.yaml: config file not found"),
]


@pytest.mark.parametrize(("text", "overrides", "fragment"), BAD)
def test_bad_config_is_one_line_error_naming_file_and_key(tmp_path, text, overrides, fragment):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message
    assert str(tmp_path) in message  # names the file


@pytest.mark.parametrize(("text", "overrides", "fragment"), BAD[:8])
def test_cli_reports_config_errors_exit_2_without_traceback(tmp_path, text, overrides, fragment):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    args = ["config", "-c", str(path)]
    for key, value in overrides.items():
        args += ["--set", f"{key}={value}"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert fragment in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_cli_missing_config_file_and_bad_set():
    runner = CliRunner()
    result = runner.invoke(cli, ["train", "-c", str(EXPERIMENTS / "nope.yaml")])
    assert result.exit_code == 2 and "config file not found" in result.output
    result = runner.invoke(cli, ["config", "-c", f"{EXPERIMENTS}/digits_quick.yaml", "--set", "x"])
    assert result.exit_code == 2 and "expected KEY=VALUE" in result.output


def test_cli_config_prints_resolved_yaml():
    result = CliRunner().invoke(
        cli, ["config", "-c", f"{EXPERIMENTS}/digits_quick.yaml", "--set", "train.epochs=7"]
    )
    assert result.exit_code == 0, result.output
    assert "epochs: 7" in result.output and "name: digits" in result.output


def test_every_shipped_experiment_config_loads():
    from pathlib import Path

    paths = sorted(Path(EXPERIMENTS).glob("*.yaml"))
    assert len(paths) >= 6
    for path in paths:
        cfg = load_config(path)  # checks model name and kwargs against the registry too
        assert cfg.experiment == path.stem
