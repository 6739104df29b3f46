"""The emulation's tools: dynamic qemu-aarch64, LLVM's llvm-mc/llvm-mca, the plugin.

Debian's ``qemu-user`` (not ``qemu-user-static``: a static qemu cannot load plugins),
``llvm-16`` / ``llvm-19`` and the system ``gcc``; each is found on PATH (or the LLVM
version's own folder), installed with apt-get when this process is root and apt exists,
else a one-line error naming the package. Which LLVM a target's cycles come from is the
target's ``llvm`` (its scheduling models differ: LLVM 16 schedules a Cortex-A76 as an A72,
LLVM 19 has the A76's server twin, ``neoverse-n1``, and a ``cortex-a55``).

Example:
    >>> plugin = build_plugin(Path(".cache/emulate"))
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from liteconv.device.errors import LiteconvError
from liteconv.device.files import atomic_write_bytes

PLUGIN_SOURCE = Path(__file__).with_name("count.c")
LLVM_VERSIONS = (16, 19)
DEFAULT_LLVM = 16


def _llvm_dir(version: int) -> str:
    return f"/usr/lib/llvm-{version}/bin"


LLVM_DIRS = {v: (_llvm_dir(v),) for v in LLVM_VERSIONS}


def _apt(package: str, why: str) -> None:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise LiteconvError(
            f"{why}: missing; install it with 'sudo apt-get install {package}' (Debian/Ubuntu)"
        )
    for cmd in (["apt-get", "install", "-y", "-qq", package],
                ["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))  # fmt: skip
        if proc.returncode == 0 and cmd[1] == "install":
            return
    raise LiteconvError(f"{why}: 'apt-get install {package}' failed; install it by hand")


def qemu_user(install: bool = True, arch: str = "aarch64") -> str:
    """Path of the dynamically linked ``qemu-aarch64`` (``qemu-arm`` for an ``armv7l``
    guest): Debian's qemu-user, which loads TCG plugins."""
    name = "qemu-arm" if arch == "armv7l" else "qemu-aarch64"
    for path in (shutil.which(name), f"/usr/bin/{name}"):
        if path and Path(path).is_file():
            return path
    if install:
        _apt("qemu-user", f"{name} (Debian's qemu-user, which loads TCG plugins)")
        return qemu_user(install=False, arch=arch)
    raise LiteconvError(
        f"{name} (Debian's qemu-user, which loads TCG plugins; qemu-user-static cannot) "
        "not found: run 'sudo apt-get install qemu-user'"
    )


def llvm_tool(name: str, version: int = DEFAULT_LLVM, install: bool = True) -> str:
    """Path of LLVM ``version``'s ``name`` (``llvm-mca`` or ``llvm-mc``): its scheduling
    models. ``version`` is one of ``LLVM_VERSIONS`` (a target's ``llvm``)."""
    if version not in LLVM_VERSIONS:
        raise LiteconvError(f"llvm: {version} is not a supported LLVM version; expected one of "
                            f"{', '.join(map(str, LLVM_VERSIONS))}")  # fmt: skip
    for folder in LLVM_DIRS.get(version, ()):
        if (Path(folder) / name).is_file():
            return str(Path(folder) / name)
    found = shutil.which(f"{name}-{version}")
    if found:
        return found
    if install:
        _apt(f"llvm-{version}", f"{name} of LLVM {version} (the cycle model)")
        return llvm_tool(name, version, install=False)
    raise LiteconvError(
        f"{name} of LLVM {version} not found: run 'sudo apt-get install llvm-{version}'"
    )


@functools.lru_cache(maxsize=4)
def llvm_mca_version(version: int = DEFAULT_LLVM) -> str:
    """``llvm-mca --version``'s version line: part of the emulation cache key, since the
    cycles stored there come from this tool's scheduling models."""
    proc = subprocess.run([llvm_tool("llvm-mca", version), "--version"], capture_output=True,
                          text=True, check=False)  # fmt: skip
    lines = [x.strip() for x in proc.stdout.splitlines() if "version" in x.lower()]
    return lines[0] if lines else proc.stdout.strip()[:80]


def build_plugin(cache: Path) -> Path:
    """The counting plugin, built once per source version into ``cache`` (gcc)."""
    source = PLUGIN_SOURCE.read_bytes()
    out = Path(cache) / f"count-{hashlib.sha256(source).hexdigest()[:12]}.so"
    if out.is_file():
        return out
    cc = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if cc is None:
        raise LiteconvError("no C compiler for the counting plugin: run 'sudo apt-get install gcc'")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.build")
    proc = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(tmp), str(PLUGIN_SOURCE)],
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise LiteconvError(f"building the counting plugin failed ({last})")
    atomic_write_bytes(out, tmp.read_bytes())
    tmp.unlink()
    return out
