"""Android phones over ``adb``: push the models, run LiteRT's ``benchmark_model``, parse it.

A phone has no Python, so the phone side is TensorFlow Lite's own C++ benchmark binary
(``benchmark_model``, built for ``android_aarch64``; the README says where to get it and
where to put it). Its output is parsed into the same records as ``liteconv.device``'s
harness, so ``RUN_DIR/device/*.json`` and the run's report take them unchanged.
There is no ``--check`` on a phone: ``benchmark_model`` feeds random inputs.

NOT RUN ON HARDWARE HERE: no phone exists in this project's machines; the parser is tested
on output written in the tool's documented format.

Example:
    >>> phone = ADB("R58M123ABC")
    >>> run_on_phone(phone, "runs/fashion_mnist_flattened/20261124-004802")
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from liteconv.device.errors import LiteconvError
from liteconv.pipeline import run as runlib

BINARY = "/data/local/tmp/benchmark_model"
REMOTE = "/data/local/tmp/liteconv"
_STAT = re.compile(r"count=(\d+)(.*)")
_TIMINGS = re.compile(r"Inference timings in us: (.*)")
_KV = re.compile(r"([A-Za-z][A-Za-z ()]*?): ([-0-9.e+]+)")


def parse_address(text: str) -> str | None:
    """``adb://SERIAL`` → the serial (``adb://`` alone: the only connected device → None)."""
    if not text.startswith("adb://"):
        raise LiteconvError(f"{text!r}: expected adb://SERIAL")
    serial = text.removeprefix("adb://").strip("/")
    if serial and not re.fullmatch(r"[A-Za-z0-9._:-]+", serial):
        raise LiteconvError(f"{text!r}: not a device serial (see 'adb devices')")
    return serial or None


def _numbers(text: str) -> dict[str, float]:
    out = {}
    for key, value in re.findall(r"(\w+)=([-0-9.e+]+)", text):
        try:
            out[key] = float(value)
        except ValueError:
            continue
    return out


def parse_benchmark_output(text: str) -> dict:
    """The figures of one ``benchmark_model`` run (times in ms), from its log lines.

    Reads the last ``count=...`` statistics line (the timed runs; the first one is the
    warm-up), ``Inference timings in us: ...``, the memory footprint line and the
    delegate line (``... completely executed by the delegate`` / ``partially executed ...
    w/ N delegate kernels``). Android log prefixes (``I tflite  : ``) are ignored. The
    tool prints no median in older versions: ``p50_ms`` is its median when printed,
    else its mean (``p50_is_mean``).

    Raises:
        LiteconvError: no statistics line (the run failed); the last line of the output.
    """
    stats, timings, delegate, memory = None, {}, None, None
    for raw in text.splitlines():
        line = raw.strip()
        match = _STAT.search(line)
        if match:
            stats = {"count": int(match.group(1)), **_numbers(match.group(2))}
            continue
        match = _TIMINGS.search(line)
        if match:
            timings = {k.strip(): float(v) for k, v in _KV.findall(match.group(1))}
            continue
        if "executed by the delegate" in line:
            kernels = re.search(r"w/ (\d+) delegate kernels", line)
            delegate = ("complete" if "completely" in line
                        else f"partial ({kernels.group(1) if kernels else '?'} kernels)")  # fmt: skip
        elif "footprint" in line and "overall=" in line:
            memory = _numbers(line).get("overall")
    if not stats or stats["count"] < 1:
        tail = (text.strip().splitlines() or ["no output"])[-1].strip()
        raise LiteconvError(f"benchmark_model printed no timing statistics ({tail[-200:]})")
    us = 1000.0
    mean = stats.get("avg", stats.get("curr", 0.0)) / us
    median = stats.get("median")
    return {
        "runs": stats["count"],
        "mean_ms": round(mean, 6),
        "std_ms": round(stats.get("std", 0.0) / us, 6),
        "p50_ms": round(median / us if median is not None else mean, 6),
        "p50_is_mean": median is None,
        "min_ms": round(stats.get("min", mean * us) / us, 6),
        "max_ms": round(stats.get("max", mean * us) / us, 6),
        "load_ms": round(timings["Init"] / us, 3) if "Init" in timings else None,
        "first_inference_ms": round(timings["First inference"] / us, 3)
        if "First inference" in timings
        else None,
        "memory_overall_mb": memory,
        "delegation": delegate or "none",
    }


class ADB:
    """One Android device through the ``adb`` command."""

    def __init__(self, serial: str | None = None, adb: str = "adb") -> None:
        exe = shutil.which(adb)
        if exe is None:
            raise LiteconvError(
                "adb not found: install Android's platform tools ('sudo apt-get install adb' "
                "or developer.android.com/tools/releases/platform-tools)"
            )
        self.serial = serial
        self._args = [exe, *(["-s", serial] if serial else [])]

    @property
    def label(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.serial or "android")

    def _run(self, args: list[str], what: str, timeout: float = 600) -> str:
        try:
            proc = subprocess.run([*self._args, *args], capture_output=True, text=True,
                                  timeout=timeout)  # fmt: skip
        except subprocess.TimeoutExpired:
            raise LiteconvError(f"adb: {what} did not finish in {timeout:.0f} s") from None
        out = proc.stdout + proc.stderr
        if proc.returncode != 0:
            last = (out.strip().splitlines() or ["no output"])[-1].strip()
            if "unauthorized" in out:
                raise LiteconvError("adb: the phone has not authorized this computer: "
                                    "accept the USB debugging prompt on it")  # fmt: skip
            if "not found" in out or "no devices" in out or "offline" in out:
                raise LiteconvError(f"adb: no device {self.serial or ''} ({last}); connect it, "
                                    "enable USB debugging, check 'adb devices'")  # fmt: skip
            raise LiteconvError(f"adb: {what} failed ({last})")
        return proc.stdout

    def shell(self, command: str, what: str = "a command", timeout: float = 600) -> str:
        return self._run(["shell", command], what, timeout)

    def push(self, local: Path, remote: str) -> None:
        self._run(["push", str(local), remote], f"pushing {Path(local).name}")


def phone_info(phone: ADB) -> dict:
    """Model, ABI, Android version, cores and CPU of the phone (installs nothing)."""
    script = ("echo model=$(getprop ro.product.model); echo abi=$(getprop ro.product.cpu.abi); "
              "echo android=$(getprop ro.build.version.release); echo cores=$(nproc); "
              "echo soc=$(getprop ro.soc.model); "
              f"echo benchmark_model=$(ls {BINARY} 2>/dev/null || echo missing)")  # fmt: skip
    info = {"address": f"adb://{phone.serial or ''}"}
    for line in phone.shell(script, "reading the phone's description").splitlines():
        key, sep, value = line.strip().partition("=")
        if sep:
            info[key] = value.strip() or None
    return info


def run_on_phone(
    phone: ADB,
    run_dir: str | Path,
    *,
    threads: list[int] | None = None,
    runs: int = 100,
    warmup: int = 10,
    binary: str = BINARY,
    echo=print,
) -> dict:
    """Benchmark every exported model of ``run_dir`` on the phone with ``benchmark_model``
    (XNNPACK on); results into ``RUN_DIR/device/<serial>-<time>.json`` and the report."""
    from liteconv.deploy.remote import save_device_document
    from liteconv.device.harness import sidecar_for
    from liteconv.pipeline.run import Run

    run = Run.open(run_dir)
    models = sorted(run.file(runlib.EXPORT).glob("*.tflite"))
    if not models:
        raise LiteconvError(f"{run.path}: no export/*.tflite; run 'liteconv export' first")
    abi = phone.shell("getprop ro.product.cpu.abi", "reading the phone's ABI").strip()
    name = phone.shell("getprop ro.product.model", "reading the phone's model").strip()
    present = phone.shell(f"ls {shlex.quote(binary)} 2>/dev/null || echo missing").strip()
    if present.endswith("missing"):
        raise LiteconvError(
            f"adb: no {binary} on the phone: download TFLite's benchmark_model for "
            f"{abi or 'android_aarch64'} (see docs/benchmarking.md, 'Android'), then 'adb push benchmark_model "
            f"{binary} && adb shell chmod +x {binary}'"
        )
    echo(f"phone: {name or '?'} ({abi or '?'}); pushing {len(models)} model(s)")
    phone.shell(f"mkdir -p {REMOTE}")
    for path in models:
        run.verify_artifact(f"{runlib.EXPORT}/{path.name}")
        phone.push(path, f"{REMOTE}/{path.name}")
    records = []
    experiment = run.manifest().get("experiment", run.path.parent.name)
    for path in models:
        side = sidecar_for(path)
        for t in threads or [1]:
            began = time.perf_counter()
            out = phone.shell(
                f"{shlex.quote(binary)} --graph={REMOTE}/{path.name} --num_threads={t} "
                f"--num_runs={runs} --warmup_runs={warmup} --use_xnnpack=true 2>&1",
                f"benchmark_model on {path.name}",
            )
            figures = parse_benchmark_output(out)
            echo(f"{path.stem} threads={t}: p50 {figures['p50_ms']:.4f} ms "
                 f"({time.perf_counter() - began:.1f} s)")  # fmt: skip
            records.append({"model": f"{experiment}/{path.stem}", "file": path.name,
                            "mode": side.get("mode"), "threads": t,
                            "runtime": "benchmark_model", "xnnpack": True,
                            "size_bytes": path.stat().st_size, **figures})  # fmt: skip
    phone.shell(f"rm -rf {REMOTE}", "removing the models")
    document = {"where": phone.label, "machine": {"device": name, "abi": abi},
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "records": records}  # fmt: skip
    return save_device_document(run, document, phone.label, echo=echo)
