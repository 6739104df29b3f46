"""Instructions per invoke of ``.tflite`` models on an emulated ARM core.

The models run in the arm64 user space of ``bench-arm64`` (Debian's Python 3.11, numpy and
ai-edge-litert 2.0.2's aarch64 wheel: 2.3.0's crashes under qemu 7.2) under the dynamic
``qemu-aarch64 -cpu CORE`` with the counting plugin; XNNPACK reads the emulated CPU's
features (dot-product int8 kernels on cortex-a76, not on cortex-a72) and, from the
``/proc/cpuinfo`` the guest is shown (``midr``), which core it runs on, and picks the kernels
it picks on that board. All models of one call share one emulated process.

Example:
    >>> counts = count_models(["fp32.tflite"], qemu_cpu="cortex-a72", cache=Path(".cache"))
    >>> counts[0]["instructions_per_invoke"]
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from liteconv.device.errors import LiteconvError
from liteconv.emulate import userspace
from liteconv.emulate.tools import build_plugin, qemu_user

GUEST = Path(__file__).with_name("guest.py")


MEMORY_FIELDS = ("loads", "stores", "l1_misses", "l2_misses", "l2_writebacks", "l2_rereads")


def parse_plugin_output(text: str) -> tuple[dict[int, dict], int | None]:
    """``({region: {"instructions": N, "blocks": [(vaddr, n_insns, runs, bytes)]}}, total)``
    from the plugin's output file; with the cache model a region also has ``memory``
    (``MEMORY_FIELDS``: accesses, L1D misses, last-level misses, dirty write-backs and the
    misses on lines the same invoke had already read from memory)."""
    regions: dict[int, dict] = {}
    total, current = None, None
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "region":
            current = {"instructions": int(parts[2]), "blocks": []}
            regions[int(parts[1])] = current
        elif parts[0] == "mem" and current is not None:
            current["memory"] = dict(zip(MEMORY_FIELDS, map(int, parts[1:])))
        elif parts[0] == "tb" and current is not None:
            code = bytes.fromhex(parts[4]) if len(parts) > 4 else b""
            current["blocks"].append((int(parts[1], 16), int(parts[2]), int(parts[3]), code))
        elif parts[0] == "total":
            total = int(parts[1])
    return regions, total


def plugin_args(caches: dict | None) -> str:
    """The plugin's cache-model arguments for ``caches`` (``{"l1d": (KB, WAYS[, POLICY]),
    "l2": (KB, WAYS[, POLICY])}``, POLICY ``lru`` or ``random``; None: instructions only)."""
    if not caches:
        return ""
    return "".join(
        f",{level}=" + ":".join(map(str, spec)) for level, spec in sorted(caches.items())
    )


def run_counted(argv: list[str], *, qemu_cpu: str, cache: Path, env: dict | None = None,
                caches: dict | None = None, timeout: float = 3600,
                arch: str = "aarch64") -> tuple[dict[int, dict], int | None]:  # fmt: skip
    """Run an ``arch`` program (``argv[0]``, with ``-L root`` for a dynamic one) under the
    counting plugin (and its cache model when ``caches`` is given, see ``plugin_args``);
    returns ``parse_plugin_output`` of what it counted."""
    qemu = qemu_user(arch=arch)
    plugin = build_plugin(cache)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "counts.txt"
        cmd = [qemu, "-cpu", qemu_cpu, "-plugin", f"{plugin},out={out}{plugin_args(caches)}", *argv]
        if shutil.which("setarch"):  # no address randomisation: allocator paths repeat
            cmd = ["setarch", platform.machine(), "-R", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        if proc.returncode != 0:
            tail = ((proc.stderr or proc.stdout).strip().splitlines() or ["no output"])[-1]
            raise LiteconvError(f"emulated run on {qemu_cpu} failed (exit {proc.returncode}): "
                                f"{tail[-300:]}")  # fmt: skip
        return parse_plugin_output(out.read_text() if out.is_file() else "")


# The guest's whole environment: none of the host shell's variables, whose sizes would move
# the guest's stack (and so which cache sets its locals fall in) from one shell to another.
GUEST_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
             "PYTHONHASHSEED": "0"}  # fmt: skip


def _links(folder: str, stem: str, targets: list) -> list[str]:
    """Links ``folder/<stem><i><suffix>`` to ``targets``: paths of one length wherever the
    cache or the models lie, so the guest's strings, and its heap, are the same size."""
    links = []
    for i, target in enumerate(targets):
        link = Path(folder) / f"{stem}{i}{Path(target).suffix}"
        link.symlink_to(target)
        links.append(str(link))
    return links


def count_models(models: list[str], inputs: list[list[np.ndarray]], *, qemu_cpu: str, cache: Path,
                 arm64_cache: Path, invokes: int = 2, warmup: int = 1,
                 caches: dict | None = None, arch: str = "aarch64",
                 xnnpack: bool = True, outputs: list[int] | None = None,
                 midr: str = "") -> list[dict]:  # fmt: skip
    """Per model (``inputs``: its input tensors, one per model input, in its order):
    ``{"model", "error"}`` where the emulated runtime could not load or run it (its
    exception's text), else ``instructions_per_invoke``, the executed ``blocks`` (per invoke), the
    emulated ``output`` (for the check against the host's), the guest's memory ``maps``
    (text of ``/proc/self/maps``) and arm64 ``root`` (to name blocks, ``symbols``) and,
    with ``caches``, the
    ``memory`` counts per invoke (the warm-up invokes fill the caches uncounted).
    ``arch``: ``aarch64`` (``arm64_cache``'s user space) or ``armv7l`` (a 32-bit one,
    tflite-runtime 2.14, built in ``arm64_cache``'s sibling folder ``armhf``); ``xnnpack``
    False: the runtime's builtin kernels (no default delegate), as ``bench --no-xnnpack``;
    ``outputs``: per model, the tensor index whose value ``output`` holds (default: its
    first output); ``midr``: the board's core as the guest's ``/proc/cpuinfo`` shows it
    (``userspace.board_root``: XNNPACK and ruy pick that core's kernels; aarch64 only; empty:
    the host's file, and their generic kernels)."""
    if midr and arch != "aarch64":
        raise LiteconvError(f"midr {midr}: only an aarch64 guest reads it (this one is {arch})")
    space = Path(arm64_cache).resolve()
    if arch != "aarch64":
        space = space.with_name("armhf")
    userspace.preflight(space)
    root = userspace.ensure_rootfs(space, arch=arch)
    userspace.ensure_wheels(space, arch=arch)
    with tempfile.TemporaryDirectory() as tmp:
        site = os.pathsep.join(_links(tmp, "site", userspace.site_paths(space, arch)))
        linked = _links(tmp, "model", [Path(m).resolve() for m in models])
        python, guest = _links(tmp, "program", [root / userspace.PYTHON, GUEST])
        paths = []
        for i, arrays in enumerate(inputs):
            paths.append([str(Path(tmp) / f"in{i}-{j}.npy") for j in range(len(arrays))])
            for path, array in zip(paths[-1], arrays):
                np.save(path, array)
        spec = {"models": linked, "inputs": paths,
                "warmup": warmup, "invokes": invokes, "xnnpack": xnnpack,
                "output_tensors": outputs,
                "outputs": str(Path(tmp) / "out.npz"),
                "maps": str(Path(tmp) / "maps.txt"),
                "errors": str(Path(tmp) / "errors.json")}  # fmt: skip
        (Path(tmp) / "spec.json").write_text(json.dumps(spec))
        guest_root = userspace.board_root(root, midr, Path(tmp) / "root") if midr else root
        env = dict(GUEST_ENV, PYTHONPATH=site)
        regions, _ = run_counted(
            ["-L", str(guest_root), python, guest, str(Path(tmp) / "spec.json")],
            qemu_cpu=qemu_cpu, cache=cache, env=env, caches=caches, arch=arch,
        )  # fmt: skip
        outputs = np.load(spec["outputs"])
        maps = Path(spec["maps"]).read_text() if Path(spec["maps"]).is_file() else ""
        failed = Path(spec["errors"])
        errors = json.loads(failed.read_text()) if failed.is_file() else {}
        results = []
        for i, model in enumerate(models):
            if str(i) in errors:  # the emulated runtime could not load or run it
                results.append({"model": model, "error": errors[str(i)]})
                continue
            if i not in regions:
                raise LiteconvError(f"{model}: the emulated run counted nothing for it")
            region = regions[i]
            results.append({
                "model": model,
                "instructions_per_invoke": region["instructions"] / invokes,
                "blocks": [(v, n, runs / invokes, code) for v, n, runs, code in region["blocks"]],
                "output": outputs[f"m{i}"],
                "maps": maps, "root": str(root),
            })  # fmt: skip
            if "memory" in region:
                results[-1]["memory"] = {k: v / invokes for k, v in region["memory"].items()}
        return results
