"""Runs inside the emulated ARM Python (numpy + ai-edge-litert, or tflite-runtime on 32-bit
ARM, only): each model's
timed invokes between the counting plugin's markers, outputs saved for the check.

Usage (by ``counts.py``): ``python guest.py SPEC.json``; SPEC holds ``models`` (paths),
``inputs`` (per model, one ``.npy`` path per model input, already in its dtype), ``warmup``, ``invokes``,
``xnnpack`` (false: TFLite's builtin kernels, no default delegate), ``output_tensors``
(per model, the tensor to save for the check; default: its first output),
``outputs`` (an ``.npz`` path), ``errors`` (a ``.json`` path: per model index, why the
runtime could not load or run it; the other models still run) and ``maps`` (where to copy
the guest's memory map). The markers are write(2) calls on a descriptor no process has, so they fail with EBADF and
change nothing else.
"""

import json
import os
import sys

import numpy as np

MARK_FD, MARK_STOP, MARK_WARM, MARK_INVOKE, MARK_START = -7421, 1, 2, 3, 16


def _mark(code: int) -> None:
    try:
        os.write(MARK_FD, b"m" * code)
    except OSError:
        pass


def _run(Interpreter, OpResolverType, model: str, images: list, i: int, spec: dict):
    """Warm-up and counted invokes of model ``i``; the output the spec names (default: its
    first) after the first invoke
    (as the host's reference: a model with state, an LSTM's, answers otherwise later)."""
    kwargs = {}
    if not spec.get("xnnpack", True):  # the builtin kernels, as ``bench --no-xnnpack``
        kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = Interpreter(model_path=model, num_threads=1, **kwargs)
    interp.allocate_tensors()
    for detail, image in zip(interp.get_input_details(), images):
        interp.set_tensor(detail["index"], np.load(image))
    tensors = spec.get("output_tensors") or []
    index = tensors[i] if i < len(tensors) else interp.get_output_details()[0]["index"]
    first = None
    _mark(MARK_WARM)  # the cache model runs from here: the warm-up fills the caches
    for _ in range(spec["warmup"]):
        interp.invoke()
        first = interp.get_tensor(index) if first is None else first
    _mark(MARK_START + i)
    for _ in range(spec["invokes"]):
        _mark(MARK_INVOKE)  # lines read before it are not this invoke's re-reads
        interp.invoke()
        first = interp.get_tensor(index) if first is None else first
    _mark(MARK_STOP)
    return first


def main() -> None:
    with open(sys.argv[1]) as fh:
        spec = json.load(fh)
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:  # the 32-bit ARM user space: tflite-runtime (no armv7 ai-edge-litert)
        from tflite_runtime.interpreter import Interpreter, OpResolverType

    outputs, errors = {}, {}
    for i, (model, images) in enumerate(zip(spec["models"], spec["inputs"])):
        try:
            outputs[f"m{i}"] = _run(Interpreter, OpResolverType, model, images, i, spec)
        except Exception as exc:  # this runtime cannot load or run it (an operator version
            # newer than it knows, say): the model gets no count, the others still do
            _mark(MARK_STOP)  # closes a region the failure left open (no-op otherwise)
            errors[str(i)] = " ".join(str(exc).split()) or type(exc).__name__
    np.savez(spec["outputs"], **outputs)
    if spec.get("errors"):
        with open(spec["errors"], "w") as fh:
            json.dump(errors, fh)
    if spec.get("maps"):  # where the runtime's library sits, to name the counted blocks
        with open("/proc/self/maps") as src, open(spec["maps"], "w") as dst:
            dst.write(src.read())


if __name__ == "__main__":
    main()
