"""``liteconv study mcu``: standard / flattened / separable CNNs on each microcontroller.

The three CNNs of the README (28×28×1, ten classes, random weights: size and arena do not
depend on the weights) and the baseline decomposed by ``liteconv flatten`` (LVH, one
stage), full-integer int8 with int8 I/O, once with per-channel and once with per-tensor
weight quantization (per-channel metadata weighs on the flattened model's
many small layers), each through ``mcu.fit`` on every shipped board: model bytes, TFLM's
smallest arena (x86-64: an upper bound of a 32-bit MCU's), the flash estimate, fits, and
TFLM's outputs against LiteRT's.

Example:
    >>> mcu_study("docs/results/mcu")
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from liteconv.compat import keras
from liteconv.device.files import atomic_write_json, atomic_write_text
from liteconv.device.tables import format_table
from liteconv.export.convert import to_tflite
from liteconv.keras_layers import create_model
from liteconv.mcu.boards import shipped_boards
from liteconv.mcu.fit import fit_model
from liteconv.mcu.latency import SOURCE, cycles_per_mac

MODELS = ("baseline_cnn", "flattened_cnn", "separable_cnn")
DECOMPOSED = "baseline_cnn → flatten LVH-1"  # what `liteconv flatten` makes of the baseline
RANGE_BOARD = "nucleo-l4r5zi"  # the board the latency range is calibrated on


def _models(shape):
    """``(name, file stem, Keras model)`` of the three CNNs (random weights, seed 0) and the
    baseline decomposed as ``liteconv flatten`` does (every eligible convolution, one LVH
    stage)."""
    from liteconv.keras_layers.decompose import flatten_model

    for name in MODELS:
        keras.utils.set_random_seed(0)
        model = create_model(name, input_shape=shape, num_classes=10)
        yield name, name, model
        if name == "baseline_cnn":
            yield DECOMPOSED, f"{name}-lvh1", flatten_model(model, method="lvh", stages=1)[0]


def mcu_study(out: str | Path, *, shape=(28, 28, 1), echo=print) -> list[Path]:
    """Write ``OUT.json`` (every record) and ``OUT.md`` (one row per model and scheme)."""
    boards = shipped_boards()
    data = np.random.default_rng(0).uniform(0, 1, size=(32, *shape)).astype("float32")
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, stem, model in _models(shape):
            for per_channel in (True, False):
                scheme = "per-channel" if per_channel else "per-tensor"
                path = Path(tmp) / f"{stem}-{scheme}.tflite"
                echo(f"{name} int8 ({scheme}): converting, then TFLM")
                path.write_bytes(to_tflite(model, mode="int8", representative_data=data,
                                           num_calibration=32, io_type="int8",
                                           per_channel=per_channel))  # fmt: skip
                record = fit_model(path, boards)
                record.update(model=name, scheme=scheme, file=path.name)
                records.append(record)
    headers = ["model", "weights", "model KB", "arena KB (x86-64)", "arena KB (32-bit, ≥)",
               *[f"{b.name} ({b.flash_kb // 1024 if b.flash_kb >= 1024 else b.flash_kb}"
                 f"{' MB' if b.flash_kb >= 1024 else ' KB'} / {b.ram_kb} KB)" for b in boards],
               "TFLM vs LiteRT", f"latency ms on {RANGE_BOARD} (range)"]  # fmt: skip
    rows = [[r["model"], r["scheme"], round(r["model_bytes"] / 1024, 1),
             round(r["arena_bytes"] / 1024, 1),
             round(r["arena_bytes_32bit_lower_bound"] / 1024, 1)
             if r["arena_bytes_32bit_lower_bound"] else "",
             *["fits" if b["fits"] else "NO" for b in r["boards"]],
             f"ok (max {r['parity']['max_abs_diff']:.4f})" if r["parity"]["passed"]
             else "DIFFERS",
             "{:g}–{:g}".format(*next(b["latency_ms_range"] for b in r["boards"]
                                      if b["board"] == RANGE_BOARD))] for r in records]  # fmt: skip
    table = format_table(headers, rows, markdown=True)
    out = Path(out)
    json_path = atomic_write_json(out.with_suffix(".json"), {
        "shape": list(shape), "boards": [vars(b) for b in boards], "records": records})  # fmt: skip
    fast, slow = cycles_per_mac()
    md = (f"# The three CNNs on microcontrollers (TFLM, `liteconv study mcu`)\n\n{shape[0]}×"
          f"{shape[1]}×{shape[2]} inputs, ten classes, random weights, with the baseline as "
          "`liteconv flatten` decomposes it (every eligible convolution, one LVH stage); int8 "
          "with int8 I/O; arena: the "
          "smallest TFLM allocates (x86-64 build, 64-bit pointers: an upper bound of a 32-bit "
          "MCU's; the lower bound is head + tail / 2); fits: model + a stated runtime "
          "allowance within flash, the arena within RAM less a reserve (`mcu/boards.py`); "
          f"latency: a range, not a measurement — MACs × {fast:.2f}–{slow:.2f} cycles per MAC "
          f"at the board's clock, calibrated on {SOURCE} (`mcu/latency.py`).\n\n"
          f"{table}\n")  # fmt: skip
    md_path = atomic_write_text(out.with_suffix(".md"), md)
    return [json_path, md_path]
