"""A latency *range* on a microcontroller, from MACs, calibrated on MLPerf Tiny's board.

No Cortex-M cycle model and no TFLM / CMSIS-NN source are reachable here, so liteconv does
not estimate one number. What it can say honestly: on the one board MLPerf Tiny v0.5
publishes both software stacks for (ST NUCLEO-L4R5ZI, Cortex-M4F at 120 MHz), its four
int8 models ran at 3.74 to 9.62 cycles per multiply-accumulate — TFLM's reference kernels
at the slow end, microTVM with CMSIS-NN at the fast end, the model mix in between. A
model's range is its MACs times those two figures at the board's clock. Shown only for
cores of that class (Cortex-M4/M4F, and the Cortex-M33, which has the same DSP extension);
other cores (Cortex-M7's dual issue, Cortex-M55's Helium, Xtensa) get none.

The calibration is in-sample (all eight published figures; no other MCU figures are kept
here to hold out), its spread is the point: a user's stack lands somewhere in it.

Example:
    >>> latency_range_ms(7_489_664, load_board("nucleo-l4r5zi"))   # MLPerf Tiny's VWW model
    (233.4, 600.5)
"""

from __future__ import annotations

SOURCE = ("MLPerf Tiny v0.5 (mlcommons/tiny_results_v0.5), ST NUCLEO-L4R5ZI (Cortex-M4F, "
          "120 MHz), closed division: TFLM reference kernels and microTVM + CMSIS-NN")  # fmt: skip
CALIBRATION_MHZ = 120.0

# The four reference models: multiply-accumulates per invoke (int8 graphs as MLPerf Tiny
# defines them; counted on their architectures, tests/test_mcu.py) and the published ms on
# that board with TFLM's reference kernels and with microTVM + CMSIS-NN.
MLPERF_TINY = {
    "visual wake words (MobileNet v1 0.25, 96x96x3)": (7_489_664, 600.5, 301.2),
    "image classification (ResNet-8, CIFAR-10)": (12_501_632, 704.3, 389.6),
    "keyword spotting (DS-CNN, 49x10)": (2_656_768, 181.9, 99.8),
    "anomaly detection (FC autoencoder, 640)": (264_192, 10.05, 8.61),
}
CALIBRATED_CORES = ("cortex-m4", "cortex-m4f", "cortex-m33")


def cycles_per_mac() -> tuple[float, float]:
    """``(fastest, slowest)`` cycles per MAC over the eight published figures."""
    per = [ms * 1e-3 * CALIBRATION_MHZ * 1e6 / macs
           for macs, *published in MLPERF_TINY.values() for ms in published]  # fmt: skip
    return min(per), max(per)


def latency_range_ms(macs: int, board) -> tuple[float, float] | None:
    """``(low, high)`` ms for ``macs`` on ``board``'s clock, or None where its core is not
    of the calibrated class (or the model has no counted MACs)."""
    if not macs or board.core.lower() not in CALIBRATED_CORES:
        return None
    fast, slow = cycles_per_mac()
    scale = macs / (board.clock_mhz * 1e3)
    return round(fast * scale, 1), round(slow * scale, 1)
