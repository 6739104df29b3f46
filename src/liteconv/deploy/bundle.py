"""Self-contained device bundle: models, sidecars, labels, the ``liteconv.device`` package.

The bundle ships ``liteconv/device/`` whole (it imports numpy and a LiteRT runtime only)
and a two-line ``bench.py`` that runs its command line, so it needs only numpy and
``ai-edge-litert`` (or ``tflite-runtime``) on the device.
``reference.npz`` holds a few real test images and the host's outputs for each model, so
``python bench.py --check`` on the device proves it computes what the host computed.

Example:
    >>> path = make_bundle("runs/fashion_mnist_flattened/20261122-220113", target="raspberry-pi-4")
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from pathlib import Path

import numpy as np

import liteconv
from liteconv import device
from liteconv.device import caches
from liteconv.device.check import run_samples
from liteconv.device.errors import LiteconvError
from liteconv.device.files import crash_inside_written, remove_stale_temporaries
from liteconv.device.harness import sidecar_for
from liteconv.device.targets import load_target
from liteconv.pipeline import run as runlib

BENCH_SHIM = """\
#!/usr/bin/env python3
\"\"\"Benchmark or --check this bundle's models: the liteconv.device command line.\"\"\"
import pathlib, sys  # noqa: E401
HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from liteconv.device.__main__ import main  # noqa: E402
sys.exit(main(bundle=HERE))
"""


def package_files() -> dict[str, bytes]:
    """``liteconv/__init__.py`` and every module of ``liteconv/device/``, by bundle path."""
    files = {"liteconv/__init__.py": Path(liteconv.__file__).read_bytes()}
    for path in sorted(Path(device.__file__).parent.glob("*.py")):
        files[f"liteconv/device/{path.name}"] = path.read_bytes()
    return files


REQUIREMENTS = """\
# What bench.py needs on the device: no TensorFlow.
numpy
ai-edge-litert
# Where ai-edge-litert has no wheel: tflite-runtime instead (it needs numpy<2):
#   pip install 'numpy<2' tflite-runtime
"""


def _expectations(target, models: list[dict], estimates: list[dict]) -> list[str]:
    """The README section on what this board should show, estimated by emulating its core."""
    from liteconv.emulate.estimate import (
        cycles_source,
        describe_accuracy,
        describe_memory,
        no_estimate,
    )

    most = max(target.threads)
    lines = [
        "## What to expect on this board (estimated, not measured)",
        "",
        f"Emulated on the host before bundling: {target.core} at {target.clock_mhz:g} MHz "
        f"(qemu -cpu {target.qemu_cpu}, {estimates[0]['runtime']}; instruction counts, "
        f"{cycles_source(target)}, {describe_memory(target)}, constant {target.cycle_scale:g}: "
        f"{target.cycle_scale_source}). `bench.py` measures what the board really does — "
        "compare the two.",
        "",
        describe_accuracy(target),
        "",
        f"| model | mode | instructions / invoke | DRAM traffic / invoke | estimated ms (1 thread) "
        f"| estimated ms ({most} threads) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for m, e in zip(models, estimates):
        many = e["estimated_ms_threads"].get(str(most))
        why = no_estimate(e)
        ms = f"{why}: no estimate | " if why else f"{e['estimated_ms']:.4f} | {many:.4f}"
        traffic = f"{e['dram_bytes'] / 1e6:.2f} MB" if e.get("memory") else "not modelled"
        count = e["instructions_per_invoke"]
        count = "" if count is None else f"{count / 1e6:.2f} M"
        lines.append(f"| {m['name']} | {m['mode']} | {count} | {traffic} | {ms} |")
    return [*lines, ""]


def _readme(name: str, target, models: list[dict], profile: bool = False,
            estimates: list[dict] | None = None) -> str:  # fmt: skip
    lines = [
        f"# {name}: liteconv device bundle",
        "",
        f"Target: {target.description or target.name} (threads {target.threads}, "
        f"cores {target.cores}).",
        "",
        "| model | mode | size | MACs | input |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for m in models:
        inp = m["inputs"][0]
        lines.append(
            f"| {m['name']} | {m['mode']} | {m['size_bytes']:,} B | {m.get('macs') or 0:,} | "
            f"{inp['dtype']} {inp['shape']} |"
        )
    lines += [
        "",
        "Inputs are images as float32 in [0, 1] (pixel / 255), NHWC, of the shape above;",
        "integer inputs are quantized with the scale and zero point in each model's JSON.",
        "",
        "## Raspberry Pi OS (64-bit)",
        "",
        "```bash",
        "sudo apt install -y python3-venv python3-numpy",
        f"tar xzf {name}.tar.gz && cd {name}",
        "python3 -m venv --system-site-packages .venv && . .venv/bin/activate",
        "pip install -r requirements.txt",
        "python bench.py --check          # same answers as the host? (exit 0 = yes)",
        "                                 # (python -m liteconv.device --check does the same)",
        "python bench.py --json results.json   # latency table; threads/cores from target.json",
        *(
            ["python bench.py --profile --json results.json   # and the time of every block"]
            if profile
            else []
        ),
        "```",
        "",
        *(_expectations(target, models, estimates) if estimates else []),
        "Bring `results.json` back and merge it with the host's: "
        "`liteconv report RUN_DIR --bench results.json`. All of this in one command from "
        "the host: `liteconv device run ssh://USER@BOARD RUN_DIR`.",
        "",
        "## What to expect per runtime",
        "",
        "- **ai-edge-litert** (LiteRT 2.x; 64-bit ARM, x86-64): XNNPACK runs fp32 and int8 "
        "graphs (all operators but an int8 softmax); `--check` matches the host exactly.",
        "- **tflite-runtime 2.14** (`pip install 'numpy<2' tflite-runtime`; the newest with "
        "32-bit armv7l wheels): on x86-64 its XNNPACK takes fp32 graphs but **none of an "
        "int8 graph**, and its 32-bit armv7l wheel has no XNNPACK at all; what XNNPACK "
        "does not take runs on the builtin kernels, several times slower (the table's "
        "XNNPACK column shows `0/N` and a warning). Its int8 outputs differ from the host's by up "
        "to tens of quantization steps on single samples (measured: 27 steps max, 0.8 "
        "mean); `--check` allows 32 steps max and 2 on average, and top-1 identical except "
        "on near ties (samples the host itself scored within that tolerance, listed as "
        "such: one step can swap them).",
        "",
        "## Android (adb)",
        "",
        "Use TensorFlow Lite's official `benchmark_model` binary for your ABI "
        "(android_aarch64, from the TFLite/LiteRT releases):",
        "",
        "```bash",
        "adb push benchmark_model /data/local/tmp/ && adb shell chmod +x /data/local/tmp/benchmark_model",
    ]
    threads = max(target.threads)
    for m in models:
        lines.append(f"adb push models/{m['file']} /data/local/tmp/")
    for m in models:
        lines.append(
            f"adb shell /data/local/tmp/benchmark_model --graph=/data/local/tmp/{m['file']} "
            f"--num_threads={threads} --num_runs=100 --warmup_runs=10 --use_xnnpack=true"
        )
    lines += ["```", ""]
    return "\n".join(lines)


def unpack(bundle: str | Path, dest: str | Path) -> Path:
    """Extract ``bundle`` (what ``make_bundle`` writes) under ``dest`` and return its one
    top-level folder (with ``bench.py``); anything else is a one-line error."""
    try:
        with tarfile.open(bundle) as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as err:
        raise LiteconvError(f"{bundle}: not a readable bundle ({err})") from None
    folders = [p for p in Path(dest).iterdir() if p.is_dir()]
    if len(folders) != 1 or not (folders[0] / "bench.py").is_file():
        raise LiteconvError(
            f"{bundle}: not a liteconv bundle (expected one top-level folder with bench.py); "
            "make one with 'liteconv bundle RUN_DIR'"
        )
    return folders[0]


def bundle_files(bundle: str | Path) -> dict[str, bytes]:
    """Every file of ``bundle`` by its path inside the bundle's folder (``README.md``,
    ``models/int8.tflite``, ...), read without extracting."""
    try:
        with tarfile.open(bundle) as tar:
            return {Path(m.name).relative_to(Path(m.name).parts[0]).as_posix():
                    tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # fmt: skip
    except (tarfile.TarError, OSError) as err:
        raise LiteconvError(f"{bundle}: not a readable bundle ({err})") from None


def newest_bundle(folder: str | Path = "dist") -> Path:
    """The newest ``*.tar.gz`` bundle in ``folder``."""
    bundles = sorted(Path(folder).glob("*.tar.gz"), key=lambda p: p.stat().st_mtime)
    if not bundles:
        raise LiteconvError(
            f"no bundle in {folder}/: make one with 'make bundle' (liteconv bundle)"
        )
    return bundles[-1]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o755 if name.endswith("bench.py") else 0o644
    tar.addfile(info, io.BytesIO(data))


def _profile_files(run, modes, samples: int, echo) -> dict[str, bytes]:
    """The run's model cut into blocks and converted (``bench.profile.block_model_files``)."""
    from liteconv.bench.profile import block_model_files
    from liteconv.pipeline.evaluate import float32_run_model, run_data

    model = float32_run_model(run)
    images, _ = run_data(run).arrays("train", limit=samples)

    def progress(_stage, mode, done, total):
        if echo and (done == total or done % 10 == 0):
            echo(f"profile {mode}: converted {done}/{total} blocks")

    return block_model_files(model, calibration=images, modes=list(modes), progress=progress)


def make_bundle(
    run_dir: str | Path,
    *,
    out: str | Path = "dist",
    target: str = "raspberry-pi-4",
    samples: int = 16,
    profile: bool = False,
    profile_modes: list[str] = ("fp32", "int8"),
    profile_samples: int = 128,
    emulate: bool = False,
    emulate_cache: str | Path = str(caches.EMULATE),
    echo=None,
) -> Path:
    """Build ``out/<experiment>-<run>-<target>.tar.gz`` from a run's exported models.

    With ``profile``, the bundle also carries the run's model cut into blocks, each
    converted alone per mode in ``profile_modes`` (int8 calibrated with the activations of
    ``profile_samples`` training images), for ``python bench.py --profile`` on the board.
    With ``emulate``, every model is first estimated on the target's emulated core and
    the README says what to expect on the board (``liteconv.emulate``).
    """
    run = runlib.Run.open(run_dir)
    spec = load_target(target)
    tflites = sorted(run.file(runlib.EXPORT).glob("*.tflite"))
    if not tflites:
        raise LiteconvError(
            f"{run.path}: no export/*.tflite; run 'liteconv export {run.path}' first"
        )
    from liteconv.pipeline.evaluate import run_data  # TensorFlow only for the reference images

    images, labels = run_data(run).arrays("test", limit=samples)
    manifest = run.manifest()
    name = f"{manifest.get('experiment', run.path.parent.name)}-{run.path.name}-{spec.name}"
    reference = {"images": images, "labels": labels}
    sidecars = []
    for path in tflites:
        run.verify_artifact(f"{runlib.EXPORT}/{path.name}")
        side = sidecar_for(path) or {"name": path.stem, "mode": "unknown",
                                              "file": path.name}  # fmt: skip
        side = {**side, "name": path.stem, "file": path.name}
        if "inputs" not in side:
            side["inputs"] = [{"dtype": "?", "shape": []}]
            side["size_bytes"] = path.stat().st_size
        outputs, _ = run_samples(path, images)
        reference[f"outputs__{path.stem}"] = outputs
        sidecars.append((path, side))
    profile_files = _profile_files(run, profile_modes, profile_samples, echo) if profile else {}
    estimates = None
    if emulate:
        from liteconv.emulate.estimate import estimate_models

        estimates = estimate_models([str(p) for p, _ in sidecars], spec, cache=emulate_cache,
                                    echo=echo or (lambda *_: None))  # fmt: skip

    buf = io.BytesIO()
    np.savez_compressed(buf, **reference)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    final = out / f"{name}.tar.gz"
    remove_stale_temporaries(out.glob(f".{name}.tar.gz.*.tmp"))  # a killed bundle's leftover
    tmp = out / f".{name}.tar.gz.{os.getpid()}.tmp"
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for path, side in sidecars:
                _add(tar, f"{name}/models/{path.name}", path.read_bytes())
                _add(tar, f"{name}/models/{path.stem}.json", json.dumps(side, indent=2).encode())
            _add(tar, f"{name}/labels.txt", "\n".join(manifest["class_names"]).encode() + b"\n")
            for dest, data in package_files().items():
                _add(tar, f"{name}/{dest}", data)
            _add(tar, f"{name}/bench.py", BENCH_SHIM.encode())
            _add(tar, f"{name}/requirements.txt", REQUIREMENTS.encode())
            _add(tar, f"{name}/target.json", json.dumps(spec.to_dict(), indent=2).encode())
            _add(tar, f"{name}/reference.npz", buf.getvalue())
            for dest, data in profile_files.items():
                _add(tar, f"{name}/profile/{dest}", data)
            _add(
                tar,
                f"{name}/README.md",
                _readme(
                    name,
                    spec,
                    [s for _, s in sidecars],
                    profile=bool(profile_files),
                    estimates=estimates,
                ).encode(),
            )
        crash_inside_written(tmp, final)  # a testing aid; nothing unless LITECONV_CRASH_AT
        tmp.replace(final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final
