"""Cross-check the harness against ``litert-benchmark``, the tool in the ai-edge-litert wheel.

Example:
    >>> litert_benchmark("fp32.tflite", threads=1, runs=100)  # median ms
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from liteconv.device.errors import LiteconvError


def litert_benchmark(
    model: str | Path, *, threads: int, runs: int = 100, warmup: int = 10
) -> float:
    """Median latency (ms) that ``litert-benchmark`` measures for ``model`` on the CPU."""
    exe = shutil.which("litert-benchmark") or str(Path(sys.executable).parent / "litert-benchmark")
    if not Path(exe).exists():
        raise LiteconvError(
            "litert-benchmark not found; it ships with 'pip install ai-edge-litert'"
        )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        proc = subprocess.run(
            [exe, f"--model={model}", f"--num_threads={threads}", f"--num_runs={runs}",
             f"--warmup_runs={warmup}", f"--result_json={out}"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise LiteconvError(f"litert-benchmark failed on {model}: {tail[0]}")
        return float(json.loads(out.read_text())["latency"]["median_ms"])
