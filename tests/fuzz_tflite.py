"""Seeded mutants of a ``.tflite`` model for the reliability tests (and docs/results).

Byte-level: truncations, byte flips, zeroed regions. Structural (through TensorFlow's
flatbuffer object API, so the file stays valid for the verifier): optional operator
inputs dropped (the bias of convolutions and fully connected layers), quantization
parameters broken (zero, negative, NaN or huge scales, out-of-range zero points).
"""

from __future__ import annotations

import math

import numpy as np

OPTIONAL_BIAS_OPS = {3: "CONV_2D", 4: "DEPTHWISE_CONV_2D", 9: "FULLY_CONNECTED"}


def byte_mutants(blob: bytes, count: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """``count`` byte-level mutants: a third truncations, a third flips, a third zeroed."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        data = bytearray(blob)
        kind = ("truncate", "flip", "zero")[i % 3]
        if kind == "truncate":
            data = data[: int(rng.integers(0, len(data)))]
        elif kind == "flip":
            for pos in rng.integers(0, len(data), size=int(rng.integers(1, 9))):
                data[pos] ^= int(rng.integers(1, 256))
        else:
            start = int(rng.integers(0, len(data)))
            end = min(len(data), start + int(rng.integers(4, 256)))
            data[start:end] = bytes(end - start)
        out.append((f"{kind}-{i}", bytes(data)))
    return out


def structural_mutants(blob: bytes, count: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """Valid flatbuffers that break the model: optional inputs dropped, quantization broken."""
    from tensorflow.lite.tools import flatbuffer_utils as fu

    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        model = fu.read_model_from_bytearray(bytearray(blob))
        graph = model.subgraphs[0]
        kind = ("drop_bias", "scale", "zero_point", "drop_input")[i % 4]
        if kind == "drop_bias":
            ops = [op for op in graph.operators
                   if max(model.operatorCodes[op.opcodeIndex].builtinCode,
                          model.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode)
                   in OPTIONAL_BIAS_OPS and len(op.inputs) > 2]  # fmt: skip
            if not ops:
                continue
            op = ops[int(rng.integers(0, len(ops)))]
            op.inputs = op.inputs[:2] if rng.random() < 0.5 else np.array([*op.inputs[:2], -1])
        elif kind == "drop_input":
            op = graph.operators[int(rng.integers(0, len(graph.operators)))]
            if len(op.inputs):
                op.inputs = op.inputs[: int(rng.integers(0, len(op.inputs)))]
        else:
            quantized = [t for t in graph.tensors if t.quantization is not None
                         and t.quantization.scale is not None and len(t.quantization.scale)]  # fmt: skip
            if not quantized:
                continue
            q = quantized[int(rng.integers(0, len(quantized)))].quantization
            if kind == "scale":
                bad = (0.0, -1.0, math.nan, 1e38)[int(rng.integers(0, 4))]
                q.scale = np.full_like(q.scale, bad)
            else:
                bad = (1000, -1000, 2**31 - 1)[int(rng.integers(0, 3))]
                q.zeroPoint = np.full_like(q.zeroPoint, bad)
        out.append((f"{kind}-{i}", bytes(fu.convert_object_to_bytearray(model))))
    return out


def classify(command: list[str], mutants: list[tuple[str, bytes]], folder, env=None) -> dict:
    """Run ``command + [file]`` in a subprocess per mutant; count exits 0, clean one-line
    errors (exit 2), tracebacks and signal deaths."""
    import subprocess
    from pathlib import Path

    counts = {"tried": 0, "ran": 0, "clean error": 0, "traceback": 0, "signal death": 0,
              "contained crash": 0, "crash named an operator": 0}  # fmt: skip
    for label, blob in mutants:
        path = Path(folder) / f"{label}.tflite"
        path.write_bytes(blob)
        proc = subprocess.run([*command, str(path)], capture_output=True, text=True, env=env,
                              timeout=300)  # fmt: skip
        counts["tried"] += 1
        if proc.returncode < 0:
            counts["signal death"] += 1
        elif "Traceback" in proc.stderr + proc.stdout:
            counts["traceback"] += 1
        elif proc.returncode == 0:
            counts["ran"] += 1
        else:
            counts["clean error"] += 1
            if "the LiteRT runtime crashed" in proc.stderr + proc.stdout:
                counts["contained crash"] += 1
                counts["crash named an operator"] += " operator " in proc.stderr + proc.stdout
        path.unlink()
    return counts


if __name__ == "__main__":  # python tests/fuzz_tflite.py MODEL.tflite OUT.json [PYTHONPATH]
    import json
    import os
    import sys
    import tempfile
    from pathlib import Path

    blob = Path(sys.argv[1]).read_bytes()
    mutants = byte_mutants(blob, 60, seed=4) + structural_mutants(blob, 40, seed=4)
    env = {**os.environ, **({"PYTHONPATH": sys.argv[3]} if len(sys.argv) > 3 else {})}
    command = [sys.executable, "-c", "from liteconv.cli import main; main()", "bench",
               "--runs", "1", "--warmup", "0"]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        result = classify(command, mutants, tmp, env)
    Path(sys.argv[2]).write_text(json.dumps(result, indent=2))
    print(result)
