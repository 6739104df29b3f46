"""Host-side studies: the papers' speed tables (compare) and the accuracy/latency report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from liteconv.bench.report import pareto_front, report_rows, write_compare, write_report
from liteconv.cli import cli
from liteconv.device.machine import machine_info
from liteconv.keras_layers import model_cost
from liteconv.studies.layers import compare_layers, layer_model


def _png_is_a_real_plot(path, min_size=(200, 200)) -> None:
    """Decode the PNG (not just its header): big enough and not one flat colour."""
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.shape[0] >= min_size[0] and image.shape[1] >= min_size[1], image.shape
    assert float(np.std(image[..., :3])) > 0.01


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
        ref = next(r for r in rows if r["variant"] == "standard" and r["dtype"] == row["dtype"])
        assert row["macs"] == expected[row["variant"]]
        assert row["theoretical_speedup"] == pytest.approx(std / expected[row["variant"]], rel=1e-3)
        assert row["measured_speedup"] == pytest.approx(ref["p50_ms"] / row["p50_ms"], abs=2e-3)
        assert row["realised_share"] == pytest.approx(
            row["measured_speedup"] / row["theoretical_speedup"], abs=2e-3
        )
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
    _png_is_a_real_plot(tmp_path / "cmp_latency.png")
    assert json.loads((tmp_path / "cmp.json").read_text())["rows"] == rows


def test_pareto_front():
    # (latency, accuracy): the 2nd is slower and worse than the 1st; the others trade off.
    points = [(1.0, 0.90), (2.0, 0.85), (0.5, 0.80), (3.0, 0.95)]
    assert pareto_front(points) == [0, 2, 3]


def test_report_merges_host_and_device_results(exported_run, tmp_path):
    device = {"where": "raspberrypi", "records": [
        {"model": "digits_quick/fp32", "threads": 1, "p50_ms": 0.5},
        {"model": "digits_quick/int8", "threads": 1, "p50_ms": 0.2},
    ]}  # fmt: skip
    rows = report_rows([exported_run], bench_docs=[device], runs=5)
    assert {r["name"] for r in rows} == {"fp32", "int8"}
    assert {r["p50_ms@raspberrypi"] for r in rows} == {0.5, 0.2}
    verify = json.loads((exported_run / "export" / "verify.json").read_text())
    for r in rows:
        assert r["accuracy"] == verify[r["name"]]["accuracy"] and r["p50_ms"] > 0
    written = write_report(rows, tmp_path / "report")
    assert "p50 ms raspberrypi" in (tmp_path / "report.md").read_text()
    _png_is_a_real_plot(written[-1])


def test_compare_and_report_cli(exported_run, tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        cli, ["study", "layers", "--sizes", "8", "--channels", "8", "--threads", "1", "--runs", "2",
              "--no-models", "--out", str(tmp_path / "layers")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    _png_is_a_real_plot(tmp_path / "layers_speedup.png")
    rows = json.loads((tmp_path / "layers.json").read_text())["rows"]
    assert {r["variant"] for r in rows} == {"standard", "flattened_1", "flattened_2", "separable"}
    result = runner.invoke(
        cli, ["report", str(exported_run), "--runs", "3", "--out", str(tmp_path / "report")]
    )
    assert result.exit_code == 0, result.output
    assert "| digits_quick" in result.output and (tmp_path / "report.png").is_file()
    result = runner.invoke(cli, ["report", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "no such run folder" in result.output


def _output_shapes(blob: bytes) -> list[tuple]:
    """The shapes of every output of the model ``blob``, run once on the host runtime on the
    deterministic inputs the emulated runs get (``tensors.random_inputs``), sorted."""
    from liteconv.device.runtime import invoke, load_interpreter
    from liteconv.device.tensors import random_inputs, set_inputs

    interp = load_interpreter(model_content=blob, num_threads=1)
    set_inputs(interp, random_inputs(interp))
    invoke(interp)
    return sorted(tuple(interp.get_tensor(o["index"]).shape) for o in interp.get_output_details())


def _assert_outputs_depend_on_layers(head, score_spread: float) -> None:
    """A detector twin's head (box encodings, scores) on a 320 px image: the outputs depend
    on the network (the batch norms' statistics from a forward pass): scores spread by more
    than ``score_spread``, no two of the first anchors' boxes alike; with untrained
    statistics every score was 0.5 and every encoding 0, whatever the backbone computed."""
    image = np.random.default_rng(1).uniform(0, 1, (1, 320, 320, 3)).astype("float32")
    encodings, scores = (np.asarray(t) for t in head(image))
    assert np.ptp(scores) > score_spread and np.std(encodings) > 0.05
    assert len(np.unique(encodings[0, :100].round(4), axis=0)) == 100


def test_efficientdet_lite_twin_matches_the_published_export():
    """EfficientDet-Lite0 as the study builds it: the published log's 13 XNNPACK partitions
    are the 12 nearest-neighbour resizes XNNPACK does not take (4 per BiFPN cell) plus one;
    one TFLite_Detection_PostProcess over one anchor per box output (19206 at 320 px, as
    automl's levels 3-7 × 9 anchors give); its outputs depend on its layers; the file within
    0.5 % of the published one (13.68 MB in the benchmark log; benchmark_model divides the
    file's bytes by 1e6, tools/benchmark/benchmark_model.cc); it runs on the host runtime
    and returns 25 boxes. A custom op other than the post-processing one is refused."""
    from liteconv.device.graph import list_ops
    from liteconv.export.convert import ConversionError, to_tflite
    from liteconv.studies.efficientdet_lite import anchors, efficientdet_lite

    model = efficientdet_lite(0)
    assert (
        anchors(320).shape == (9 * (40 * 40 + 20 * 20 + 10 * 10 + 5 * 5 + 3 * 3), 4) == (19206, 4)
    )
    # the box encodings: the post-processing layer's first input, one row per anchor
    head = efficientdet_lite(0, postprocess=False)
    assert head.outputs[0].shape[1:] == (19206, 4)
    _assert_outputs_depend_on_layers(head, score_spread=0.1)
    blob = to_tflite(model, mode="fp32", postprocess_op=True)
    names = [op.name for op in list_ops(blob)]
    assert names.count("RESIZE_NEAREST_NEIGHBOR") == 12
    assert names.count("TFLite_Detection_PostProcess") == 1
    assert abs(len(blob) / 13.68e6 - 1) < 0.005, len(blob)
    assert _output_shapes(blob) == [(1,), (1, 25), (1, 25), (1, 25, 4)]
    with pytest.raises(ConversionError, match="custom ops"):
        to_tflite(model, mode="fp32")  # the post-processing op only where allowed


def test_ssd_twins_match_the_papers_detectors(tmp_path):
    """The SSD / SSDLite twins of the TF1 detection zoo: 1917 anchors at 300 px (3 per cell
    on the 19×19 map, 6 on the 10, 5, 3, 2, 1 maps) and 2034 at 320; parameters and
    multiply-adds against the papers' SSDLite rows (MobileNetV2 paper, Table 6: 4.3 M, 0.8 B;
    MobileNetV3 paper, Table 6, the detection backbones with the halved last stage: V3
    3.22 M / 0.51 B, V3-Small 1.77 M / 0.16 B), batch norms folded away as the export
    does; the full SSD's predictors are 3×3 convolutions, with no depthwise step, its
    multiply-adds the published model's (Vitis AI's model zoo: ssd_mobilenet_v2 on COCO,
    300×300, 3.75 G float ops) and its fp32 file within 1 % of the published
    ssd_mobilenet_v2_coco.tflite (67.3128 MB in the benchmark_model log of TI's processor SDK
    docs). The smallest converts with its post-processing operator and returns 10 boxes on
    the host runtime, in fp32 and in full integer (that operator left in float); its
    outputs depend on its layers."""
    from liteconv.compat import keras
    from liteconv.device.graph import list_ops
    from liteconv.device.tensors import output_step
    from liteconv.emulate.estimate import compare_detector, detection_scores, host_reference
    from liteconv.export.convert import float_ops, to_tflite
    from liteconv.studies.ssd_mobilenet import anchors, ssd_mobilenet

    assert anchors([19, 10, 5, 3, 2, 1]).shape == (19 * 19 * 3 + 6 * (100 + 25 + 9 + 4 + 1), 4)
    published = {"ssdlite_mobilenet_v2": (4.3e6, 0.8e9, 1917),
                 "ssdlite_mobilenet_v3_large": (3.22e6, 0.51e9, 2034),
                 "ssdlite_mobilenet_v3_small": (1.77e6, 0.16e9, 2034)}  # fmt: skip
    for name, (params, macs, boxes) in published.items():
        model = ssd_mobilenet(name)
        folded = model.count_params() - sum(
            layer.count_params() for layer in model.layers if "BatchNorm" in type(layer).__name__
        )
        assert abs(folded / params - 1) < 0.05, (name, folded)
        assert abs(model_cost(model).total_macs / macs - 1) < 0.07, name
        head = ssd_mobilenet(name, postprocess=False)
        assert head.outputs[0].shape[1:] == (boxes, 4)
    _assert_outputs_depend_on_layers(head, score_spread=0.3)
    full = ssd_mobilenet("ssd_mobilenet_v2")
    predictors = [layer for layer in full.layers if layer.name.startswith(("box", "class"))]
    kernels = {layer.kernel_size for layer in predictors if "Conv2D" in type(layer).__name__}
    assert kernels == {(3, 3)}
    assert not any("Depthwise" in type(layer).__name__ for layer in predictors)
    assert abs(model_cost(full).total_macs / 1.875e9 - 1) < 0.01
    full_blob = to_tflite(full, mode="fp32", postprocess_op=True)
    assert abs(len(full_blob) / 67.3128e6 - 1) < 0.01, len(full_blob)
    blob = to_tflite(model, mode="fp32", postprocess_op=True)
    assert [op.name for op in list_ops(blob)].count("TFLite_Detection_PostProcess") == 1
    assert _output_shapes(blob) == [(1,), (1, 10), (1, 10), (1, 10, 4)]
    # full integer (the published INT8 column): every computing op in int8 but the
    # post-processing one, which reads its inputs through DEQUANTIZE and returns float boxes
    images = np.random.default_rng(0).uniform(0, 1, (4, 320, 320, 3)).astype("float32")
    quantized = to_tflite(model, mode="int8", representative_data=images, postprocess_op=True)
    ops = list_ops(quantized)
    assert float_ops(quantized, ops) == ["TFLite_Detection_PostProcess"]
    assert {op.output_types for op in ops if op.name == "CONV_2D"} == {("int8",)}
    assert [op.name for op in ops].count("DEQUANTIZE") == 2  # boxes and scores
    assert _output_shapes(quantized) == [(1,), (1, 10), (1, 10), (1, 10, 4)]
    # the emulated run's check compares a detector's class scores (every anchor × class, the
    # post-processing operator's input) within their step: int8 sigmoid's fixed 1/256, none
    # in float
    path, fp32_path = tmp_path / "ssdlite_int8.tflite", tmp_path / "ssdlite_fp32.tflite"
    path.write_bytes(quantized)
    fp32_path.write_bytes(blob)
    scores_out, scores_in = detection_scores(quantized)
    assert output_step(quantized, index=scores_in) == pytest.approx(1 / 256)
    assert output_step(blob, index=detection_scores(blob)[1]) is None
    reference = host_reference(path, xnnpack=False)
    assert reference["detail"]["index"] == scores_in and reference["step"] == pytest.approx(1 / 256)
    # in float, that tensor is the Keras model's class scores for the same inputs
    fp32 = host_reference(fp32_path, xnnpack=False)
    scores = keras.Model(model.inputs, model.get_layer("scores").output)
    expected = scores.predict(fp32["inputs"][0], verbose=0).reshape(1, -1)
    assert fp32["output"].shape == expected.shape == (1, 2034 * 91)
    np.testing.assert_allclose(fp32["output"], expected, atol=1e-4)
    # the host's other kernel family passes the check, a run on other inputs does not
    for file in (fp32_path, path):
        ref = host_reference(file, xnnpack=False)
        other_kernels = host_reference(file, xnnpack=True)["output"]
        other_inputs = host_reference(file, seed=2, xnnpack=False)["output"]
        passed = compare_detector(other_kernels, ref["output"], ref["control"], ref["step"])
        failed = compare_detector(other_inputs, ref["output"], ref["control"], ref["step"])
        assert passed["passed"] and not failed["passed"], (passed, failed)
    assert detection_scores(to_tflite(head, mode="fp32")) is None  # no post-processing op
