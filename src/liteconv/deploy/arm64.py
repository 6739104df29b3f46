"""Run a device bundle on emulated 64-bit ARM Linux (``make bench-arm64``).

On the cached aarch64 user space of ``emulate.userspace`` (Debian's arm64 packages and
the aarch64 wheels, run by ``qemu-aarch64 -L ROOT``), it runs the bundle's
``bench.py --check`` (ARM outputs vs the x86 reference outputs) and a short
benchmark. Timings under emulation say nothing about real hardware.

Example:
    >>> result = run_bundle_arm64("dist/fashion_mnist_flattened-...-raspberry-pi-4.tar.gz")
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from liteconv.deploy.bundle import unpack
from liteconv.device import caches
from liteconv.device.errors import LiteconvError
from liteconv.device.files import atomic_write_json, read_json
from liteconv.emulate.userspace import python_wrapper

NOT_REPRESENTATIVE = "qemu-aarch64 emulation: timings are NOT representative of real hardware"


def _emulated(python: list[str], args: list[str], folder: Path, env: dict, what: str):
    """Run the bundle's bench.py under qemu; a one-line error when it fails."""
    proc = subprocess.run([*python, "bench.py", *args], cwd=folder, capture_output=True,
                          text=True, env=env, timeout=1800)  # fmt: skip
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or
                ["no output"])[-1]  # fmt: skip
        raise LiteconvError(
            f"bench.py {what} failed on emulated aarch64 (exit {proc.returncode}): {tail[-200:]}"
        )
    return proc


def run_bundle_arm64(
    bundle: str | Path, *, cache: str | Path = str(caches.ARM64), runs: int = 20, echo=print
) -> dict:
    """Unpack ``bundle``, run ``bench.py --check`` and a short benchmark on emulated aarch64."""
    bundle = Path(bundle)
    if not bundle.is_file():
        raise LiteconvError(f"{bundle}: no such bundle; make one with 'liteconv bundle RUN_DIR'")
    python = [str(python_wrapper(cache))]
    env = dict(os.environ)
    probe = subprocess.run([*python, "-c", "import platform; print(platform.machine())"],
                           capture_output=True, text=True, env=env)  # fmt: skip
    if probe.stdout.strip() != "aarch64":
        raise LiteconvError(f"the emulated Python did not start ({probe.stderr.strip()[-200:]})")
    with tempfile.TemporaryDirectory() as tmp:
        folder = unpack(bundle, tmp)
        echo(f"emulated aarch64 Python ready ({python[0]}); checking {bundle.name}")
        check = _emulated(python, ["--check"], folder, env, "--check")
        echo(check.stdout.strip())
        results = folder / "arm64.json"
        bench = _emulated(python, ["--runs", str(runs), "--warmup", "2", "--threads", "1",
                                   "--json", str(results)], folder, env, "benchmark")  # fmt: skip
        echo(bench.stdout.strip())
        echo(f"NOTE: {NOT_REPRESENTATIVE}")
        document = read_json(results, "benchmark JSON")
    document["where"] = "qemu-aarch64"
    document["note"] = NOT_REPRESENTATIVE
    document["check"] = check.stdout.strip().splitlines()
    out = bundle.with_name(bundle.name.removesuffix(".tar.gz") + "-arm64-emulated.json")
    atomic_write_json(out, document)
    echo(f"wrote {out}")
    return document
