"""Estimated latency of ``.tflite`` models on a target core, emulated; cached by model hash.

For each model: inputs drawn from a fixed seed (the same on the host), instructions per
invoke counted under ``qemu-aarch64 -cpu <target.qemu_cpu>``, cycles from llvm-mca's
``<target.core>`` model, milliseconds at ``target.clock_mhz`` times ``target.cycle_scale``.
An estimate counts only if the emulated outputs match the host's (the bundle check's
tolerances); otherwise the record says so and carries no estimate. Every figure is an
estimate: the emulated runtime is ai-edge-litert 2.0.2 (older than the host's), and the
cycle model has no cache or memory term yet.

Example:
    >>> records = estimate_models(["fp32.tflite"], load_target("raspberry-pi-4"))
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from liteconv.device.check import compare_outputs
from liteconv.device.errors import LiteconvError
from liteconv.device.files import atomic_write_json, read_json
from liteconv.device.runtime import invoke, load_interpreter
from liteconv.device.targets import Target
from liteconv.device.tensors import dequantize, output_step, random_inputs
from liteconv.emulate import counts, cycles, tools
from liteconv.emulate.tools import PLUGIN_SOURCE

EMULATED_RUNTIME = "ai-edge-litert 2.0.2 (aarch64, under qemu-user 7.2)"
CACHE_VERSION = 1


def host_reference(path: str | Path, seed: int = 0) -> dict:
    """One interpreter on the host for the model at ``path``: a deterministic input in its
    own dtype (``tensors.random_inputs``), the host's dequantized output for it, the output
    detail (to dequantize the emulated output alike) and the output quantization step."""
    interp = load_interpreter(path, num_threads=1)
    image = random_inputs(interp, seed)[0]
    interp.set_tensor(interp.get_input_details()[0]["index"], image)
    invoke(interp, str(path))
    out = interp.get_output_details()[0]
    return {"input": image, "output": dequantize(interp.get_tensor(out["index"]), out),
            "detail": out, "step": output_step(Path(path).read_bytes(), "auto") or 0.0}  # fmt: skip


def _key(path: Path, target: Target) -> str:
    digest = hashlib.sha256(path.read_bytes())
    digest.update(PLUGIN_SOURCE.read_bytes())
    digest.update(json.dumps([CACHE_VERSION, target.core, target.qemu_cpu,
                              tools.llvm_mca_version()]).encode())  # fmt: skip
    return digest.hexdigest()[:24]


def _record(target: Target, counted: dict | None, cached: dict | None) -> dict:
    base = cached or {}
    if counted is not None:
        cyc, detail = cycles.estimate_cycles(counted["blocks"], target.core)
        base = {"instructions_per_invoke": round(counted["instructions_per_invoke"]),
                "estimated_cycles": round(cyc), "cycle_model": detail}  # fmt: skip
    ms = base["estimated_cycles"] * target.cycle_scale / (target.clock_mhz * 1e3)
    return {**base, "estimated_ms": round(ms, 4)}


def estimate_models(models: list[str], target: Target, *, cache: str | Path = ".cache/emulate",
                    arm64_cache: str | Path = ".cache/arm64", echo=print) -> list[dict]:  # fmt: skip
    """One record per model: ``target``, ``core``, ``instructions_per_invoke``,
    ``estimated_cycles``, ``estimated_ms`` (1 thread), ``check`` (emulated vs host outputs);
    ``estimated_ms`` is ``None`` when the outputs do not match."""
    if not target.core or not target.qemu_cpu or not target.clock_mhz:
        raise LiteconvError(
            f"target {target.name}: no core/qemu_cpu/clock_mhz for emulation; add them to its "
            "YAML (see configs/targets/raspberry-pi-4.yaml)"
        )
    tools.qemu_user()  # the tools first: a missing one is a one-line error before any work
    tools.llvm_tool("llvm-mca")
    tools.llvm_tool("llvm-mc")
    cache = Path(cache)
    paths = [Path(m) for m in models]
    keys = [_key(p, target) for p in paths]
    cached = {}
    for key in keys:
        file = cache / f"{key}.json"
        if file.is_file():
            cached[key] = read_json(file, "emulation cache entry")
    todo = [i for i, k in enumerate(keys) if k not in cached]
    refs = [host_reference(p) for p in paths]
    counted: dict[int, dict] = {}
    if todo:
        echo(f"emulating {len(todo)} model(s) on {target.qemu_cpu} (qemu-aarch64; first time "
             "for these files: up to a few minutes)")  # fmt: skip
        results = counts.count_models([str(paths[i]) for i in todo], [refs[i]["input"] for i in todo],
                                      qemu_cpu=target.qemu_cpu, cache=cache,
                                      arm64_cache=Path(arm64_cache))  # fmt: skip
        counted = dict(zip(todo, results))
    records = []
    for i, path in enumerate(paths):
        ref = refs[i]
        if i in counted:
            emulated = dequantize(counted[i]["output"], ref["detail"])
            check = compare_outputs(emulated, ref["output"], ref["step"])
            entry = _record(target, counted[i], None)
            entry["check"] = {k: check[k] for k in ("passed", "max_abs_diff", "tolerance")}
            atomic_write_json(cache / f"{keys[i]}.json",
                              {k: v for k, v in entry.items() if k != "estimated_ms"})  # fmt: skip
        else:
            entry = _record(target, None, cached[keys[i]])
        if not entry["check"]["passed"]:
            entry["estimated_ms"] = None  # outputs differ: not a faithful run of the model
        records.append({"file": str(path), "target": target.name, "core": target.core,
                        "qemu_cpu": target.qemu_cpu, "clock_mhz": target.clock_mhz,
                        "cycle_scale": target.cycle_scale, "runtime": EMULATED_RUNTIME,
                        **entry})  # fmt: skip
    return records
