"""Microcontrollers: TFLM operator coverage, the exact arena, parity with LiteRT, C export."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from click.testing import CliRunner
from tflite_micro.python.tflite_micro import runtime as tflm  # the mcu extra: make test installs it

from liteconv.cli import cli
from liteconv.compat import keras, tf
from liteconv.device.errors import LiteconvError
from liteconv.export.convert import to_tflite
from liteconv.mcu import emit, fit
from liteconv.mcu.boards import list_boards, load_board, shipped_boards


def _int8(model, shape, io="int8") -> bytes:
    rng = np.random.default_rng(0)
    data = rng.uniform(-1, 1, size=(16, *shape)).astype("float32")
    return to_tflite(model, mode="int8", representative_data=data, num_calibration=16,
                     io_type=io)  # fmt: skip


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Models not designed here: MobileNet v1 α 0.25 at 96×96 (MLPerf Tiny's visual wake
    words size class) and a 1-D keyword-spotting CNN on 49×10 MFCCs; full-integer I/O."""
    folder = tmp_path_factory.mktemp("mcu")
    keras.utils.set_random_seed(0)
    vww = keras.applications.MobileNet(input_shape=(96, 96, 3), alpha=0.25, weights=None,
                                       classes=2, classifier_activation=None)  # fmt: skip
    inputs = keras.Input((49, 10))
    x = keras.layers.Conv1D(64, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.SeparableConv1D(64, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling1D(2)(x)
    x = keras.layers.Conv1D(64, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    kws = keras.Model(inputs, keras.layers.Dense(12, activation="softmax")(x))
    paths = {}
    for name, model, shape in (("vww", vww, (96, 96, 3)), ("kws", kws, (49, 10))):
        paths[name] = folder / f"{name}.tflite"
        paths[name].write_bytes(_int8(model, shape))
    return paths


@pytest.mark.parametrize("name", ["vww", "kws"])
def test_the_reported_arena_is_the_smallest_tflm_allocates(models, name):
    blob = models[name].read_bytes()
    record = fit.fit_model(models[name], [load_board("nano33-ble-sense")])
    arena = record["arena_bytes"]
    tflm.Interpreter.from_bytes(blob, arena_size=arena)  # allocates
    with pytest.raises(RuntimeError):
        tflm.Interpreter.from_bytes(blob, arena_size=arena - 1)
    assert record["io"] == {"input": "int8", "output": "int8"}
    # the 64-bit report's parts: head (activations) + tail (structs) within the arena
    assert record["arena_head_bytes"] + record["arena_tail_bytes"] <= arena
    assert record["arena_head_bytes"] < record["arena_bytes_32bit_lower_bound"] < arena
    assert record["parity"]["passed"], record["parity"]
    assert "DEPTHWISE_CONV_2D" in record["operator_kinds"]
    from liteconv.mcu import latency

    nano = load_board("nano33-ble-sense")  # Cortex-M4F at 64 MHz: a range
    assert record["boards"][0]["latency_ms_range"] == latency.latency_range_ms(record["macs"], nano)
    if name == "vww":  # MLPerf Tiny's VWW architecture: the calibration's own MAC count
        assert record["macs"] == next(iter(latency.MLPERF_TINY.values()))[0]


def test_parity_fails_when_tflm_and_litert_disagree(models, monkeypatch):
    """The parity check can fail: TFLM's outputs shifted by three output steps."""
    arena = fit.smallest_arena(models["kws"])
    real = fit.tflm_outputs

    def shifted(*args):
        out, report = real(*args)
        return np.clip(out.astype(int) + 3, -128, 127).astype(np.int8), report

    monkeypatch.setattr(fit, "tflm_outputs", shifted)
    assert not fit.parity(models["kws"], arena)[0]["passed"]


def test_parity_sets_every_input_of_a_model(tmp_path):
    """Two int8 inputs, the second one weighted: TFLM and LiteRT get the same samples on
    both, so parity passes, and TFLM's outputs follow the second input (a model run with
    it left unset would not)."""
    keras.utils.set_random_seed(0)
    a, b = keras.Input((8,)), keras.Input((6,))
    model = keras.Model([a, b], keras.layers.Dense(4)(keras.layers.Concatenate()([a, b])))
    rng = np.random.default_rng(0)

    def data():
        for _ in range(16):
            yield [rng.uniform(-1, 1, (1, 8)).astype("float32"),
                   rng.uniform(-1, 1, (1, 6)).astype("float32")]  # fmt: skip

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = data
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    path = tmp_path / "two-inputs.tflite"
    path.write_bytes(converter.convert())

    record = fit.fit_model(path, [load_board("pico-2")])
    assert record["parity"]["passed"], record["parity"]
    arena = record["arena_bytes"]
    zeros, ones = np.zeros((1, 8), np.int8), np.zeros((1, 6), np.int8)
    first, _ = fit.tflm_outputs(path, arena, [[zeros, ones]])
    ones[:] = 100
    second, _ = fit.tflm_outputs(path, arena, [[zeros, ones]])
    assert not np.array_equal(first, second)


def test_a_model_that_crashes_tflm_is_an_error_not_the_end_of_liteconv(tmp_path):
    """Random weights make MobileNet's logits ~0 on every calibration image: an int8
    SOFTMAX with an input scale of ~1e-8, which aborts TFLM's softmax preparation (LiteRT
    runs it). TFLM runs in a child process: exit 2 naming the signal."""
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNet(input_shape=(96, 96, 3), alpha=0.25, weights=None,
                                         classes=2)  # fmt: skip
    path = tmp_path / "softmax.tflite"
    path.write_bytes(_int8(model, (96, 96, 3)))
    result = CliRunner().invoke(cli, ["mcu", str(path), "--board", "pico-2"])
    assert result.exit_code == 2, result.output
    assert "TFLM crashed (SIGABRT)" in result.output.strip().splitlines()[-1]


def test_an_operator_tflm_lacks_is_named(tmp_path):
    inputs = keras.Input((8,))
    out = keras.layers.Lambda(tf.math.sign)(keras.layers.Dense(8)(inputs))
    path = tmp_path / "sign.tflite"
    path.write_bytes(to_tflite(keras.Model(inputs, out), mode="fp32"))
    with pytest.raises(LiteconvError, match="TFLM has no kernel for SIGN"):
        fit.fit_model(path, [load_board("pico-2")])
    result = CliRunner().invoke(cli, ["mcu", str(path), "--board", "pico-2"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("Error: ")
    assert "TFLM has no kernel for SIGN" in result.output


def test_a_model_tflm_cannot_run_is_named_and_the_others_still_get_their_answer(tmp_path):
    """Three models in one call: the one with SIGN (no TFLM kernel) is named and the
    command exits 2 after the table; the int8 and the int16x8 model are answered, the
    latency range (int8 kernels' cycles per MAC) only for the int8 one."""
    inputs = keras.Input((8,))
    dense = keras.Model(inputs, keras.layers.Dense(8, activation="relu")(inputs))
    sign = keras.Model(inputs, keras.layers.Lambda(tf.math.sign)(dense.output))
    data = np.random.default_rng(0).uniform(size=(8, 8)).astype("float32")
    files = {"int8": tmp_path / "int8.tflite", "sign": tmp_path / "sign.tflite",
             "int16x8": tmp_path / "int16x8.tflite"}  # fmt: skip
    files["int8"].write_bytes(to_tflite(dense, mode="int8", representative_data=data))
    files["sign"].write_bytes(to_tflite(sign, mode="fp32"))
    files["int16x8"].write_bytes(to_tflite(dense, mode="int16x8", representative_data=data))
    out = tmp_path / "mcu.json"
    result = CliRunner().invoke(cli, ["mcu", *map(str, files.values()), "--board",
                                      "nucleo-l4r5zi", "--json", str(out)])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "TFLM has no kernel for SIGN" in result.output.strip().splitlines()[-1]
    doc = json.loads(out.read_text())
    assert [f["file"] for f in doc["failed"]] == [str(files["sign"])]
    by_file = {r["file"].rsplit("/", 1)[-1].removesuffix(".tflite"): r for r in doc["records"]}
    assert sorted(by_file) == ["int16x8", "int8"]
    assert by_file["int8"]["mode"] == "int8" and by_file["int16x8"]["mode"] == "int16x8"
    assert by_file["int8"]["boards"][0]["latency_ms_range"] is not None
    assert by_file["int16x8"]["boards"][0]["latency_ms_range"] is None
    assert "int8.tflite" in result.output and "int16x8.tflite" in result.output


def test_shape_arithmetic_of_an_open_batch_gets_the_fixed_batch_hint(tmp_path):
    """LayerNormalization converted with the batch left open keeps shape arithmetic (SHAPE,
    and a REDUCE_PROD TFLM has no kernel for): the error says to fix the batch, and with
    batch_size=1 the same layers fit and match LiteRT."""
    data = np.random.default_rng(0).uniform(size=(8, 6, 8)).astype("float32")
    records = {}
    for batch in (None, 1):
        keras.utils.set_random_seed(0)
        tokens = keras.Input((6, 8), batch_size=batch)
        normed = keras.layers.LayerNormalization()(keras.layers.Dense(8)(tokens))
        model = keras.Model(tokens, keras.layers.Dense(3)(keras.layers.Flatten()(normed)))
        path = tmp_path / f"layernorm-{batch}.tflite"
        path.write_bytes(to_tflite(model, mode="int8", representative_data=data))
        try:
            records[batch] = fit.fit_model(path, [load_board("pico-2")])
        except LiteconvError as err:
            records[batch] = str(err)
    assert "TFLM has no kernel for" in records[None] and "batch_size=1" in records[None]
    assert records[1]["parity"]["passed"] and records[1]["boards"][0]["fits"], records[1]


def test_a_model_too_big_for_the_board_is_an_answer_not_an_error(tmp_path):
    """1.2 M int8 weights: more than the Nano 33's 1 MB flash, less than the Nucleo's 2 MB."""
    inputs = keras.Input((1024,))
    x = keras.layers.Dense(1200, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    path = tmp_path / "wide.tflite"
    path.write_bytes(_int8(model, (1024,)))
    out = tmp_path / "mcu.json"
    result = CliRunner().invoke(cli, ["mcu", str(path), "--board", "nano33-ble-sense,nucleo-l4r5zi",
                                      "--json", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    import json

    boards = {b["board"]: b for b in json.loads(out.read_text())["records"][0]["boards"]}
    assert not boards["nano33-ble-sense"]["fits"] and boards["nano33-ble-sense"]["flash_margin"] < 0
    assert boards["nucleo-l4r5zi"]["fits"]
    assert "| NO " in result.output and "| yes " in result.output


def test_the_emitted_c_array_is_the_model_and_the_resolver_its_operators(models, tmp_path):
    result = CliRunner().invoke(cli, ["mcu", str(models["kws"]), "--board", "pico-2",
                                      "--emit", str(tmp_path / "fw")])  # fmt: skip
    assert result.exit_code == 0, result.output
    source = (tmp_path / "fw" / "model_data.cc").read_text()
    assert emit.parse_c_array(source) == models["kws"].read_bytes()
    assert "alignas(16)" in source
    header = (tmp_path / "fw" / "model_data.h").read_text()
    assert f"g_model_len = {models['kws'].stat().st_size};" in header
    record = fit.fit_model(models["kws"], [])
    assert f"g_model_arena_size = {record['arena_bytes'] + emit.ARENA_HEADROOM};" in header
    main = (tmp_path / "fw" / "main.cc").read_text()
    for op in record["operator_kinds"]:
        assert f"resolver.{emit.resolver_method(op)}();" in main
    assert f"MicroMutableOpResolver<{len(record['operator_kinds'])}>" in main
    assert emit.resolver_method("DEPTHWISE_CONV_2D") == "AddDepthwiseConv2D"


def test_boards_ship_with_sources_and_unknown_ones_are_one_line_errors():
    assert {"nucleo-l4r5zi", "nano33-ble-sense", "esp32-s3", "pico-2"} <= set(list_boards())
    assert all(load_board(b).source and load_board(b).ram_kb > 0 for b in list_boards())
    with pytest.raises(LiteconvError, match="unknown board; known: esp32-s3"):
        load_board("arduino-uno")


def test_a_users_own_board_is_found_by_name_like_a_target(tmp_path, monkeypatch):
    """Boards are looked up where targets are (./configs/mcu, the user folder, the
    package): a user's YAML by name, a broken one a one-line error naming the file."""
    monkeypatch.setenv("LITECONV_HOME", str(tmp_path / "home"))
    (tmp_path / "home/mcu").mkdir(parents=True)
    (tmp_path / "home/mcu/my-m4.yaml").write_text(
        "description: mine\ncore: cortex-m4\nclock_mhz: 80\nflash_kb: 512\nram_kb: 128\n"
    )
    assert "my-m4" in list_boards() and "pico-2" in list_boards()
    mine = load_board("my-m4")
    assert (mine.name, mine.flash_kb, mine.ram_kb) == ("my-m4", 512, 128)
    listed = CliRunner().invoke(cli, ["targets"])
    assert listed.exit_code == 0, listed.output
    (row,) = [ln for ln in listed.output.splitlines() if ln.startswith("my-m4 ")]
    assert "cortex-m4 @ 80 MHz" in row and str(tmp_path / "home/mcu/my-m4.yaml") in row
    # study mcu's boards are the shipped ones, even where a user's board shadows one
    shipped_pico = load_board("pico-2")
    (tmp_path / "home/mcu/pico-2.yaml").write_text(
        "core: cortex-m33\nclock_mhz: 150\nflash_kb: 4096\nram_kb: 64\n"
    )
    assert load_board("pico-2").ram_kb == 64
    shipped = {b.name: b for b in shipped_boards()}
    assert "my-m4" not in shipped and shipped["pico-2"].ram_kb == shipped_pico.ram_kb != 64
    (tmp_path / "home/mcu/broken.yaml").write_text("flash_kb: [1, 2\n")
    with pytest.raises(LiteconvError, match="broken.yaml: invalid YAML"):
        load_board("broken")
    (tmp_path / "home/mcu/list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(LiteconvError, match="list.yaml: expected a mapping of board settings"):
        load_board("list")


def _mlperf_tiny_models():
    """MLPerf Tiny's four reference architectures, as its training scripts define them."""
    layers = keras.layers

    def block(x, conv):
        return layers.ReLU()(layers.BatchNormalization()(conv(x)))

    vww = keras.applications.MobileNet(input_shape=(96, 96, 3), alpha=0.25, weights=None,
                                       classes=2)  # fmt: skip
    x = inp = keras.Input((32, 32, 3))
    x = block(x, layers.Conv2D(16, 3, padding="same"))
    for filters, stride in ((16, 1), (32, 2), (64, 2)):
        y = block(x, layers.Conv2D(filters, 3, strides=stride, padding="same"))
        y = layers.BatchNormalization()(layers.Conv2D(filters, 3, padding="same")(y))
        x = layers.Conv2D(filters, 1, strides=stride)(x) if stride > 1 else x
        x = layers.ReLU()(layers.Add()([x, y]))
    resnet8 = keras.Model(inp, layers.Dense(10)(layers.GlobalAveragePooling2D()(x)))
    x = inp = keras.Input((49, 10, 1))
    x = block(x, layers.Conv2D(64, (10, 4), strides=2, padding="same"))
    for _ in range(4):
        x = block(block(x, layers.DepthwiseConv2D(3, padding="same")), layers.Conv2D(64, 1))
    dscnn = keras.Model(inp, layers.Dense(12)(layers.GlobalAveragePooling2D()(x)))
    x = inp = keras.Input((640,))
    for units in (128, 128, 128, 128, 8, 128, 128, 128, 128):
        x = block(x, layers.Dense(units))
    autoencoder = keras.Model(inp, layers.Dense(640)(x))
    return [vww, resnet8, dscnn, autoencoder]


def test_the_latency_range_is_calibrated_on_mlperf_tiny_and_only_for_its_core_class():
    """The MACs behind the calibration are MLPerf Tiny's architectures' (counted here on the
    .tflite, and by hand for ResNet-8 and the autoencoder); the range is MACs × the fastest
    and slowest published cycles per MAC at the board's clock; a core of another class
    gets none."""
    from liteconv.device.graph import model_macs
    from liteconv.mcu import latency

    data_for = lambda m: np.random.default_rng(0).uniform(  # noqa: E731
        size=(4, *m.inputs[0].shape[1:])).astype("float32")  # fmt: skip
    counted = [model_macs(to_tflite(m, mode="int8", representative_data=data_for(m),
                                    num_calibration=4)) for m in _mlperf_tiny_models()]  # fmt: skip
    assert counted == [macs for macs, *_ in latency.MLPERF_TINY.values()]
    # by hand: ResNet-8's convolutions and dense, the autoencoder's dense layers
    resnet8 = (32 * 32 * 16 * 27 + 2 * 32 * 32 * 16 * 144 + 16 * 16 * 32 * (144 + 288 + 16)
               + 8 * 8 * 64 * (288 + 576 + 32) + 64 * 10)  # fmt: skip
    assert counted[1] == resnet8
    assert counted[3] == 2 * 640 * 128 + 6 * 128 * 128 + 2 * 128 * 8
    fast, slow = latency.cycles_per_mac()
    assert 3.7 < fast < slow < 9.7
    nucleo = load_board("nucleo-l4r5zi")
    low, high = latency.latency_range_ms(counted[0], nucleo)
    assert low <= 301.2 and high == pytest.approx(600.5, abs=0.1)  # VWW: both stacks inside
    half = dataclasses.replace(nucleo, clock_mhz=60.0)
    assert latency.latency_range_ms(counted[0], half) == pytest.approx((2 * low, 2 * high),
                                                                       abs=0.2)  # fmt: skip
    assert latency.latency_range_ms(counted[0], load_board("esp32-s3")) is None  # Xtensa
    assert latency.latency_range_ms(0, nucleo) is None


def test_tflite_macs_equal_the_keras_layer_cost():
    from liteconv.device.graph import model_macs
    from liteconv.keras_layers import create_model
    from liteconv.keras_layers.cost import model_cost

    data = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype("float32")
    for name in ("flattened_cnn", "separable_cnn"):
        model = create_model(name, input_shape=(28, 28, 1), num_classes=10)
        blob = to_tflite(model, mode="int8", representative_data=data, num_calibration=4)
        assert model_macs(blob) == model_cost(model).total_macs, name
