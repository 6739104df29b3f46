"""Describe the machine a measurement was taken on (no TensorFlow import)."""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def vector_isa() -> list[str]:
    """The CPU's SIMD extensions that decide TensorFlow's and XNNPACK's kernels (x86:
    avx2, avx512f, avx512_vnni, …; ARM: asimd, asimddp, sve, …); empty where unknown."""
    try:
        with open("/proc/cpuinfo") as fh:
            text = fh.read()
    except OSError:
        return []
    line = next((ln for ln in text.splitlines() if ln.startswith(("flags", "Features"))), "")
    words = set(line.partition(":")[2].split())
    keep = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "fma",
            "asimd", "asimddp", "sve", "sve2", "i8mm", "bf16")  # fmt: skip
    return [w for w in keep if w in words]


def machine_info() -> dict:
    """CPU, cores usable by this process, architecture, OS and Python."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        usable = os.cpu_count()
    return {
        "cpu": cpu_model(),
        "arch": platform.machine(),
        "isa": vector_isa(),
        "cores_usable": usable,
        "cores_total": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
    }
