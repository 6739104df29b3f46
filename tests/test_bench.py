"""Benchmark harness, targets, device bundle, paper tables and report."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from liteconv.cli import cli
from liteconv.compat import keras
from liteconv.config import load_config
from liteconv.errors import LiteconvError
from liteconv.export.bench import benchmark, check_bundle
from liteconv.export.bundle import make_bundle
from liteconv.export.compare import compare_layers, layer_model
from liteconv.export.convert import to_tflite
from liteconv.export.exporter import export_run
from liteconv.export.report import pareto_front, report_rows, write_compare, write_report
from liteconv.keras_layers import model_cost
from liteconv.machine import machine_info
from liteconv.pipeline.train import train
from liteconv.targets import load_target

RNG = np.random.default_rng(0)


def _small_model():
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    model = _small_model()
    data = RNG.uniform(size=(16, 12, 12, 3)).astype("float32")
    files = {
        "fp32": to_tflite(model),
        "int8": to_tflite(model, mode="int8", representative_data=data, io_type="int8"),
        "uint8": to_tflite(model, mode="int8", representative_data=data, io_type="uint8"),
    }
    a, b = keras.Input((6,), name="a"), keras.Input((3, 2), name="b")
    merged = keras.layers.Concatenate()([a, keras.layers.Flatten()(b)])
    two = keras.Model([a, b], [keras.layers.Dense(2)(merged), keras.layers.Dense(3)(merged)])
    files["multi"] = to_tflite(two)
    paths = {}
    for name, blob in files.items():
        paths[name] = folder / f"{name}.tflite"
        paths[name].write_bytes(blob)
    return paths


def test_bench_measures_every_dtype_and_multi_io_interleaved(models):
    records = benchmark(list(models.values()), threads=[1, 2], runs=20, warmup=2)
    assert [(r["model"], r["threads"]) for r in records] == [
        (name, t) for name in models for t in (1, 2)
    ]
    for r in records:
        assert r["runs"] == 20 and r["p50_ms"] > 0
        assert r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert r["throughput_per_s"] == pytest.approx(1000 / r["mean_ms"], rel=0.01)
        assert r["size_bytes"] == Path(r["file"]).stat().st_size
        assert r["load_ms"] > 0 and r["first_inference_ms"] > 0 and r["cv"] >= 0


def test_bench_uses_sidecar_macs_for_gmacs(models, tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(models["fp32"].read_bytes())
    path.with_suffix(".json").write_text(json.dumps({"macs": 1_000_000, "mode": "fp32"}))
    (rec,) = benchmark([path], runs=5, warmup=1)
    assert rec["mode"] == "fp32"
    assert rec["gmacs_per_s"] == pytest.approx(1e6 / (rec["p50_ms"] / 1000) / 1e9, rel=0.01)


def test_bench_imports_no_tensorflow():
    code = ("import sys, liteconv.export.bench, liteconv.export.runtime, liteconv.targets;"
            "sys.exit('tensorflow' in sys.modules)")  # fmt: skip
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"", "0 bytes, too short"),
        (b"hello world, not a model", "not a TFLite model"),
        ("truncated", "cannot load it"),
    ],
)
def test_bad_model_files_are_one_line_errors(models, tmp_path, content, message):
    path = tmp_path / "bad.tflite"
    if content == "truncated":
        blob = models["fp32"].read_bytes()
        path.write_bytes(blob[: len(blob) // 2])
    elif content is not None:
        path.write_bytes(content)
    result = CliRunner().invoke(cli, ["bench", str(path), "--runs", "2"])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    # The device script, in its own process: exit 2 with one line, never a crash.
    proc = subprocess.run(
        [sys.executable, "-m", "liteconv.export.bench", str(path), "--runs", "2"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_cli_bench_with_target_writes_json(models, tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        cli, ["bench", str(models["fp32"]), str(models["int8"]), "--target",
              "single-core-embedded", "--runs", "5", "--json", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["target"]["name"] == "single-core-embedded"
    # single-core-embedded measures XNNPACK on and off, one thread.
    assert {(r["model"], r["xnnpack"]) for r in doc["records"]} == {
        (m, x) for m in ("fp32", "int8") for x in (True, False)
    }
    assert doc["machine"]["cores_usable"] >= 1


def test_targets_load_and_bad_target_is_explained(tmp_path):
    assert load_target("raspberry-pi-4")["threads"] == [1, 2, 4]
    with pytest.raises(LiteconvError, match="unknown target; known: android-big-cores"):
        load_target("toaster")
    bad = tmp_path / "t.yaml"
    bad.write_text("threads: [0]\n")
    with pytest.raises(LiteconvError, match="threads: expected positive"):
        load_target(str(bad))
    bad.write_text("treads: [1]\n")
    with pytest.raises(LiteconvError, match="unknown key 'treads'"):
        load_target(str(bad))


def test_compare_rows_carry_the_mac_ratios():
    n, c, k = 8, 8, 3
    rows = compare_layers(sizes=[n], channels=[c], threads=[1], runs=3, warmup=1,
                          echo=lambda *_: None)  # fmt: skip
    std = n * n * k * k * c * c
    expected = {
        "standard": std,
        "flattened_1": n * n * (c * c + 2 * k * c),
        "flattened_2": 2 * n * n * (c * c + 2 * k * c),
        "separable": n * n * (k * k * c + c * c),
    }
    for row in rows:
        assert row["macs"] == expected[row["variant"]]
        assert row["theoretical_speedup"] == pytest.approx(std / expected[row["variant"]], rel=1e-3)
        assert row["measured_speedup"] > 0
    assert model_cost(layer_model("flattened_2", n, c)).total_macs == expected["flattened_2"]


def test_write_compare_and_report_files(tmp_path):
    rows = [
        {"scope": "layer", "size": s, "channels": 8, "kernel": 3, "variant": v, "dtype": "fp32",
         "threads": 1, "macs": m, "params": 10, "p50_ms": p, "cv": 0.1,
         "theoretical_speedup": t, "param_reduction": 1.0, "measured_speedup": t / 2,
         "realised_share": 0.5}
        for s in (8, 16) for v, m, p, t in (("standard", 100, 2.0, 1.0), ("separable", 20, 1.0, 5.0))
    ]  # fmt: skip
    written = write_compare(rows, tmp_path / "cmp", machine=machine_info())
    names = sorted(p.name for p in written)
    assert names == ["cmp.csv", "cmp.json", "cmp.md", "cmp_latency.png", "cmp_speedup.png"]
    assert (tmp_path / "cmp_latency.png").read_bytes()[:4] == b"\x89PNG"


def test_pareto_front():
    # (latency, accuracy): the 2nd is slower and worse than the 1st; the others trade off.
    points = [(1.0, 0.90), (2.0, 0.85), (0.5, 0.80), (3.0, 0.95)]
    assert pareto_front(points) == [0, 2, 3]


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    cfg = load_config("configs/experiments/digits_quick.yaml",
                      {"train.epochs": 2, "train.verbose": 0})  # fmt: skip
    run_dir = train(cfg, out=out, echo=lambda *_: None).path
    export_run(run_dir, modes=["fp32", "int8"], echo=lambda *_: None)
    return run_dir


def test_report_merges_host_and_device_results(exported_run, tmp_path):
    device = {"where": "raspberrypi", "records": [
        {"model": "digits_quick/fp32", "threads": 1, "p50_ms": 0.5},
        {"model": "digits_quick/int8", "threads": 1, "p50_ms": 0.2},
    ]}  # fmt: skip
    rows = report_rows([exported_run], bench_docs=[device], runs=5)
    assert {r["name"] for r in rows} == {"fp32", "int8"}
    assert {r["p50_ms@raspberrypi"] for r in rows} == {0.5, 0.2}
    assert all(r["accuracy"] > 0.8 and r["p50_ms"] > 0 for r in rows)
    written = write_report(rows, tmp_path / "report")
    assert "p50 ms raspberrypi" in (tmp_path / "report.md").read_text()
    assert written[-1].read_bytes()[:4] == b"\x89PNG"


def test_bundle_contents_and_check_on_host(exported_run, tmp_path):
    path = make_bundle(exported_run, out=tmp_path, target="raspberry-pi-4", samples=8)
    with tarfile.open(path) as tar:
        names = {Path(n).relative_to(Path(n).parts[0]).as_posix() for n in tar.getnames()}
        tar.extractall(tmp_path / "x", filter="data")
    assert {"bench.py", "runtime.py", "tables.py", "machine.py", "requirements.txt",
            "README.md", "target.json", "labels.txt", "reference.npz",
            "models/fp32.tflite", "models/fp32.json", "models/int8.tflite"} <= names  # fmt: skip
    folder = next((tmp_path / "x").iterdir())
    results = check_bundle(folder)
    assert [r["passed"] for r in results] == [True, True]
    readme = (folder / "README.md").read_text()
    assert "benchmark_model --graph=/data/local/tmp/int8.tflite" in readme
    # A changed reference must fail the check (the check can fail).
    ref = dict(np.load(folder / "reference.npz"))
    ref["outputs__fp32"] = ref["outputs__fp32"][:, ::-1]
    np.savez(folder / "reference.npz", **ref)
    assert not all(r["passed"] for r in check_bundle(folder))


def test_bundle_of_unexported_run_is_an_error(tmp_path):
    result = CliRunner().invoke(cli, ["bundle", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "no such run folder" in result.output


@pytest.mark.large
def test_bundle_runs_in_a_clean_venv_without_tensorflow(exported_run, tmp_path):
    path = make_bundle(exported_run, out=tmp_path, samples=8)
    with tarfile.open(path) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    folder = next((tmp_path / "x").iterdir())
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "-r", str(folder / "requirements.txt")],
                   check=True, timeout=600)  # fmt: skip
    probe = subprocess.run([str(py), "-c", "import tensorflow"], capture_output=True)
    assert probe.returncode != 0  # no TensorFlow there
    check = subprocess.run([str(py), "bench.py", "--check"], cwd=folder, capture_output=True,
                           text=True, timeout=300)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count("PASS") == 2
    run = subprocess.run([str(py), "bench.py", "--runs", "5", "--threads", "1",
                          "--json", "out.json"], cwd=folder, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    doc = json.loads((folder / "out.json").read_text())
    assert {r["model"] for r in doc["records"]} == {"digits_quick/fp32", "digits_quick/int8"}


@pytest.mark.large
def test_bundle_passes_its_check_on_emulated_arm64(exported_run, tmp_path):
    from liteconv.export.arm64 import NOT_REPRESENTATIVE, run_bundle_arm64

    bundle = make_bundle(exported_run, out=tmp_path, samples=8)
    # The cached user space is reused between runs; CI builds it fresh (about a minute).
    doc = run_bundle_arm64(bundle, cache=".cache/arm64", runs=3, echo=lambda *_: None)
    assert doc["where"] == "qemu-aarch64" and doc["note"] == NOT_REPRESENTATIVE
    assert doc["machine"]["arch"] == "aarch64"
    assert [line.split()[0] for line in doc["check"]] == ["PASS", "PASS"]
    assert {r["model"] for r in doc["records"]} == {"digits_quick/fp32", "digits_quick/int8"}
    assert Path(str(bundle).removesuffix(".tar.gz") + "-arm64-emulated.json").is_file()


def test_bench_arm64_errors_are_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["bench-arm64", str(tmp_path / "none.tar.gz")])
    assert result.exit_code == 2 and "no such bundle" in result.output


def test_compare_and_report_cli(exported_run, tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        cli, ["compare", "--sizes", "8", "--channels", "8", "--threads", "1", "--runs", "2",
              "--no-models", "--out", str(tmp_path / "layers")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "layers_speedup.png").is_file()
    rows = json.loads((tmp_path / "layers.json").read_text())["rows"]
    assert {r["variant"] for r in rows} == {"standard", "flattened_1", "flattened_2", "separable"}
    result = runner.invoke(
        cli, ["report", str(exported_run), "--runs", "3", "--out", str(tmp_path / "report")]
    )
    assert result.exit_code == 0, result.output
    assert "| digits_quick" in result.output and (tmp_path / "report.png").is_file()
    result = runner.invoke(cli, ["report", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "no such run folder" in result.output
