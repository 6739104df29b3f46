"""The bundle's self-check: does this machine compute what the host computed?

``reference.npz`` in a bundle holds a few real test images and the host's outputs for
each model; ``check_bundle`` runs them here and compares.

Example:
    $ python -m liteconv.device --check     # in an unpacked bundle
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import LiteconvError
from .harness import read_sidecar
from .runtime import invoke, load_interpreter
from .tensors import dequantize, output_step, quantize

# Float models: the same float kernels on another CPU differ only by summation order and
# FMA use, ~1e-6 on softmax outputs; 1e-4 leaves room and still catches any real bug.
FLOAT_TOLERANCE = 1e-4
# Integer graphs: correct int8 kernels round requantization differently and the
# differences compound layer by layer. Measured on the digits qat_int8 softmax (scale
# 1/256) against LiteRT 2.3 + XNNPACK: LiteRT 2.3 builtin kernels max 17 steps (mean
# 0.73), tflite-runtime 2.14 (XNNPACK takes no int8 node there) max 27 steps (mean 0.78),
# top-1 identical on all 16 samples; on the README's Fashion-MNIST qat_int8 model,
# tflite-runtime 2.14 max 2 steps (mean 0.06), LiteRT builtin kernels max 15 (mean 0.23).
# So: top-1 identical on every sample, mean |diff| within 2 steps and max |diff|
# within 32 steps. A wrong model or a broken kernel moves top-1 and the mean.
INT_MAX_STEPS = 32
INT_MEAN_STEPS = 2
# Top-1: a sample whose arg-max differs counts against this runtime only when the host's
# own margin between its class and this machine's class exceeds the tolerance above. Below
# it, outputs that stay within tolerance can swap a near tie: measured with tflite-runtime
# 2.14 on a digits qat_int8 bundle, sample 9 flipped on a 1-step (0.0039) host margin with
# max |diff| 1 step. A wrong model or broken kernel flips samples the host was sure of.


def run_samples(path: Path, images: np.ndarray, runtime: str = "auto") -> tuple[np.ndarray, float]:
    """Dequantized outputs for float ``images`` (one at a time) and the output step (0: float)."""
    interp = load_interpreter(path, runtime=runtime, num_threads=1)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    outputs = []
    for image in images:
        interp.set_tensor(inp["index"], quantize(image[None], inp))
        invoke(interp, str(path))
        outputs.append(dequantize(interp.get_tensor(out["index"]), out)[0])
    return np.stack(outputs), output_step(Path(path).read_bytes(), runtime) or 0.0


def max_tolerance(step: float) -> float:
    """The largest |diff| a correct runtime may show on an output of quantization ``step``
    (0: float): ``INT_MAX_STEPS`` steps, or ``FLOAT_TOLERANCE``."""
    return step * INT_MAX_STEPS * 1.0001 if step else FLOAT_TOLERANCE


def compare_outputs(outputs: np.ndarray, expected: np.ndarray, step: float) -> dict:
    """This machine's ``outputs`` against the host's ``expected`` (both ``(samples,
    classes)``, dequantized; ``step`` the output quantization step, 0 for float).

    Returns the check's record: ``passed``, ``top1_identical``, ``near_ties`` (samples whose
    top-1 differs on a host margin within tolerance: not counted against the runtime),
    ``top1_flips`` (those beyond it: counted), max/mean |diff| and their tolerances. The
    classes the host scored within tolerance of its top one, where there are two or more,
    count as one, by the |diff| of their sum: which of them wins is rounding, and a
    saturated softmax moves all of its mass (an int8 NASNet with random weights: 0.5 /
    0.5 on the host under XNNPACK, 0.996 / 0.004 under the builtin kernels of the same
    runtime), while mass moved in or out of them, or every class shifted, still counts.
    """
    tol = max_tolerance(step)
    mean_tol = step * INT_MEAN_STEPS * 1.0001 if step else FLOAT_TOLERANCE
    host_top, here_top = expected.argmax(1), outputs.argmax(1)
    rows = np.arange(len(expected))
    margin = expected[rows, host_top] - expected[rows, here_top]  # 0 where top-1 agrees
    differs = host_top != here_top
    near = differs & (margin <= tol)
    flips = differs & ~near
    tied = expected >= expected.max(axis=1, keepdims=True) - tol  # within tol of the top
    tied &= tied.sum(axis=1, keepdims=True) > 1
    # tied classes count as one: the difference of their sum (mass moved between them is
    # rounding; mass moved in or out, or every class shifted, is not)
    group = np.abs((outputs * tied).sum(axis=1) - (expected * tied).sum(axis=1))
    absdiff = np.where(tied, 0.0, np.abs(outputs - expected))
    has = np.flatnonzero(tied.any(axis=1))
    absdiff[has, tied[has].argmax(axis=1)] = group[has]
    diff = absdiff.max(axis=1)
    worst = int(np.flatnonzero(differs)[0]) if differs.any() else int(np.argmax(diff))
    mean = float(absdiff.mean())
    return {
        "samples": int(len(expected)), "top1_identical": bool(not differs.any()),
        "near_ties": [{"sample": int(i), "host_margin": float(margin[i])}
                      for i in np.flatnonzero(near)],
        "top1_flips": [{"sample": int(i), "host_margin": float(margin[i])}
                       for i in np.flatnonzero(flips)],
        "max_abs_diff": float(diff.max()), "mean_abs_diff": mean,
        "worst_sample": worst, "tolerance": tol, "mean_tolerance": mean_tol,
        "output_step": float(step),
        "passed": not flips.any() and float(diff.max()) <= tol and mean <= mean_tol,
    }  # fmt: skip


def check_bundle(folder: Path, runtime: str = "auto") -> list[dict]:
    """Compare this machine's outputs with the host's reference outputs in ``folder``.

    Top-1 must be identical on every reference sample the host was sure of (a near tie
    within tolerance may swap, and its tied classes count by their sum); float
    outputs within ``FLOAT_TOLERANCE``; integer outputs
    within ``INT_MAX_STEPS`` quantization steps at most and ``INT_MEAN_STEPS`` on average
    (see the measurements above). One ``compare_outputs`` record per model.
    """
    ref_path = folder / "reference.npz"
    if not ref_path.is_file():
        raise LiteconvError(f"{ref_path}: missing; rebuild the bundle with 'liteconv bundle'")
    try:
        ref = np.load(ref_path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise LiteconvError(f"{ref_path}: unreadable ({err}); rebuild the bundle") from None
    images = ref["images"]
    results = []
    for side_path in sorted((folder / "models").glob("*.json")):
        side = read_sidecar(side_path, required=("name", "file"))
        name = side["name"]
        if f"outputs__{name}" not in ref.files:
            raise LiteconvError(f"{ref_path}: no reference outputs for {name}; rebuild the bundle")
        outputs, step = run_samples(folder / "models" / side["file"], images, runtime)
        results.append({"model": name, **compare_outputs(outputs, ref[f"outputs__{name}"], step)})
    if not results:
        raise LiteconvError(f"{folder / 'models'}: no models with sidecars in the bundle")
    return results
