"""An aarch64 user space on this x86 machine, for emulated ARM runs (``qemu-aarch64 -L``).

Built once under a cache folder from package registries only: Debian's arm64 packages
(``debootstrap --foreign``, unpacked with ``dpkg -x``: no chroot, no binfmt needed) and the
``ai-edge-litert`` and ``numpy`` manylinux aarch64 wheels from PyPI. The emulation's
instruction counting (``emulate.counts``) and the emulated bundle run (``deploy.arm64``)
both use it; a build holds a file lock, so two processes never delete each other's tree.

Example:
    >>> python_wrapper(".cache/arm64")  # an executable running the emulated Python 3.11
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from liteconv.device import caches, targets
from liteconv.device.errors import LiteconvError

DEBIAN_SUITE = "bookworm"  # python3.11, the same minor as the aarch64 wheels below
DEBIAN_MIRROR = "http://deb.debian.org/debian"
PYTHON = "usr/bin/python3.11"
# ai-edge-litert 2.3.0's aarch64 wheel segfaults while creating an interpreter under
# Debian 12's qemu-user 7.2 (any -cpu model); 2.0.2 runs. Real boards are unaffected.
WHEELS = ("ai-edge-litert==2.0.2", "numpy==1.26.4")
# Per emulated instruction set: Debian's architecture, the packages unpacked beside Python,
# the runtime's wheels and the platform tags pip fetches them for, the module they install.
# 32-bit ARM (a Raspberry Pi OS 32-bit board): ai-edge-litert has no armv7 wheel, PyPI's
# tflite-runtime 2.14.0 has (cp311, manylinux_2_34_armv7l; it needs numpy < 2), and PyPI
# has no armv7 numpy at all: Debian's python3-numpy (1.24) is unpacked with Python.
USERSPACES = {
    "aarch64": {"debian": "arm64", "include": "python3-minimal,libpython3.11-stdlib",
                "wheels": WHEELS, "module": "ai_edge_litert",
                "platforms": ("manylinux_2_27_aarch64", "manylinux_2_17_aarch64",
                              "manylinux2014_aarch64")},
    "armv7l": {"debian": "armhf", "include": "python3-minimal,libpython3.11-stdlib,python3-numpy",
               "wheels": ("tflite-runtime==2.14.0",), "module": "tflite_runtime",
               "platforms": ("manylinux_2_34_armv7l",)},
}  # fmt: skip
# Debian's update-alternatives links, which dpkg-deb -x does not make (numpy loads BLAS).
ALTERNATIVES = {
    "armhf": ("usr/lib/arm-linux-gnueabihf", ("blas/libblas.so.3", "lapack/liblapack.so.3"))
}


# qemu-user 7.2 gives the guest the host's /proc/cpuinfo (on x86: no ARM part number), so
# the cpuinfo library, which XNNPACK and ruy ask which core they run on, finds none and they
# take their generic kernels (XNNPACK's f32 GEMM: 7x8 ld128), not the board's (4x8
# cortex_a75_prfm on a Cortex-A72, 6x8 cortex_a53_prfm on an A53). ``board_root`` shows the
# guest the board's core instead; its instruction set still comes from qemu's -cpu (hwcaps).
CPUINFO_PROCESSORS = 256  # entries past the host's processors are ignored by cpuinfo


def cpuinfo_text(midr: str) -> str:
    """``/proc/cpuinfo`` as 64-bit Linux prints it on a board whose every core is ``midr``'s."""
    f = targets.parse_midr(midr)
    count = max(CPUINFO_PROCESSORS, os.cpu_count() or 1)
    one = ("processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd cpuid\n"
           f"CPU implementer\t: 0x{f['implementer']:02x}\nCPU architecture: 8\n"
           f"CPU variant\t: 0x{f['variant']:x}\nCPU part\t: 0x{f['part']:03x}\n"
           f"CPU revision\t: {f['revision']}\n\n")  # fmt: skip
    return "".join(one.format(n=n) for n in range(count))


def board_root(root: Path, midr: str, where: Path) -> Path:
    """A folder for ``qemu-aarch64 -L`` that is ``root`` (links to its entries) but for
    ``/proc/cpuinfo``, which shows ``midr``'s core (qemu-user looks a guest's absolute path up
    under ``-L`` first, then on the host: every other ``/proc`` file stays the guest's own)."""
    root = Path(root).resolve()
    where.mkdir(parents=True)
    for entry in root.iterdir():
        if entry.name != "proc":
            (where / entry.name).symlink_to(entry)
    (where / "proc").mkdir()
    (where / "proc" / "cpuinfo").write_text(cpuinfo_text(midr))
    return where


def userspace(arch: str) -> dict:
    """The user space of ``arch`` (``aarch64`` or ``armv7l``); a one-line error otherwise."""
    if arch not in USERSPACES:
        raise LiteconvError(f"no emulated user space for arch {arch!r}: use one of "
                            f"{', '.join(USERSPACES)}")  # fmt: skip
    return USERSPACES[arch]


def site_paths(cache: Path, arch: str = "aarch64") -> list[Path]:
    """What the emulated Python's ``PYTHONPATH`` holds: the unpacked wheels, and for
    armv7l Debian's own packages (its numpy)."""
    paths = [Path(cache) / "site"]
    if arch == "armv7l":
        paths.append(Path(cache) / "root" / "usr/lib/python3/dist-packages")
    return paths


def _run(cmd: list[str], what: str, fix: str, **kwargs) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    except FileNotFoundError:
        raise LiteconvError(f"{what}: {cmd[0]} not found; {fix}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise LiteconvError(f"{what} failed ({tail[0]}); {fix}")
    return proc


def _apt_install(package: str) -> None:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise LiteconvError(
            f"{package} is missing and installing it needs root and apt: "
            f"run 'sudo apt-get install {package}'"
        )
    fix = f"run 'apt-get update && apt-get install -y {package}' by hand"
    try:
        _run(["apt-get", "install", "-y", "-qq", package], f"apt-get install {package}", fix)
    except LiteconvError:
        _run(["apt-get", "update", "-qq"], "apt-get update", fix)
        _run(["apt-get", "install", "-y", "-qq", package], f"apt-get install {package}", fix)


def preflight(cache: str | Path) -> None:
    """A one-line error, before any download, when the first build cannot succeed: the arm64
    user space is not cached yet and this process is not root (debootstrap needs it)."""
    if (Path(cache) / "root" / PYTHON).is_file() or os.geteuid() == 0:
        return
    raise LiteconvError(
        f"the emulated ARM user space is built once under {cache} (debootstrap; about 700 MB, "
        "Debian's mirror and PyPI): run this first time as root (sudo); later runs need no root"
    )


def ensure_qemu(install: bool = True) -> str:
    """Path of ``qemu-aarch64-static`` (installs Debian's qemu-user-static if allowed)."""
    exe = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
    if exe is None and install:
        _apt_install("qemu-user-static")
        exe = shutil.which("qemu-aarch64-static")
    if exe is None:
        raise LiteconvError(
            "qemu-aarch64-static not found: run 'sudo apt-get install qemu-user-static'"
        )
    return exe


@contextlib.contextmanager
def _building(cache: Path):
    """Held while a part of ``cache`` is built: a second process (another command, another
    test worker) waits, then finds it built, instead of deleting the first one's work."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".build.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def ensure_rootfs(cache: Path, install: bool = True, arch: str = "aarch64") -> Path:
    """An unpacked Debian user space of ``arch`` (arm64 by default, armhf for ``armv7l``)
    with Python 3.11 under ``cache/root``."""
    root = cache / "root"
    if (root / PYTHON).is_file():
        return root
    with _building(cache):
        return _build_rootfs(cache, root, install, userspace(arch))


def _build_rootfs(cache: Path, root: Path, install: bool, space: dict) -> Path:
    if (root / PYTHON).is_file():  # built while this process waited
        return root
    if shutil.which("debootstrap") is None:
        if not install:
            raise LiteconvError("debootstrap not found: run 'sudo apt-get install debootstrap'")
        _apt_install("debootstrap")
    if os.geteuid() != 0:
        raise LiteconvError("debootstrap needs root to unpack the arm64 user space: run as root")
    tmp = cache / "root.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _run(
        ["debootstrap", "--foreign", f"--arch={space['debian']}", "--variant=minbase",
         f"--include={space['include']}", DEBIAN_SUITE, str(tmp), DEBIAN_MIRROR],
        f"debootstrap of the {space['debian']} user space",
        "check that Debian's package mirror is reachable",
        timeout=1800,
    )  # fmt: skip
    for deb in sorted((tmp / "var/cache/apt/archives").glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(tmp)], f"unpacking {deb.name}", "rerun the command")
    folder, targets = ALTERNATIVES.get(space["debian"], ("", ()))
    for target in targets:
        link = tmp / folder / Path(target).name
        if (tmp / folder / target).is_file() and not link.exists():
            link.symlink_to(target)
    if not (tmp / PYTHON).is_file():
        raise LiteconvError(f"{tmp}: no {PYTHON} after debootstrap; delete {cache} and retry")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return root


def ensure_wheels(cache: Path, arch: str = "aarch64") -> Path:
    """The runtime's wheels for ``arch``/cp311 (``USERSPACES``: numpy and ai-edge-litert for
    aarch64, tflite-runtime for armv7l), unpacked under ``cache/site``."""
    site, module = cache / "site", userspace(arch)["module"]
    if (site / module).is_dir():
        return site
    with _building(cache):
        return _build_site(cache, site, arch)


def _build_site(cache: Path, site: Path, arch: str) -> Path:
    space = userspace(arch)
    if (site / space["module"]).is_dir():
        return site  # built while this process waited
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    platforms = [arg for tag in space["platforms"] for arg in ("--platform", tag)]
    _run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         *platforms, "--python-version", "3.11", "--implementation", "cp", "-d", str(wheels),
         *space["wheels"]],
        f"downloading the {arch} wheels",
        f"check that PyPI is reachable and that {', '.join(space['wheels'])} have {arch} wheels",
        timeout=900,
    )  # fmt: skip
    tmp = cache / "site.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    for wheel in sorted(wheels.glob("*.whl")):
        if any(wheel.name.startswith(w.split("==")[0].replace("-", "_") + "-" + w.split("==")[1])
               for w in space["wheels"]):  # fmt: skip
            with zipfile.ZipFile(wheel) as zf:
                zf.extractall(tmp)
    if not (tmp / space["module"]).is_dir():
        raise LiteconvError(f"{wheels}: no {space['module']} {arch} wheel; delete it and retry")
    shutil.rmtree(site, ignore_errors=True)
    tmp.rename(site)
    return site


def python_wrapper(cache: str | Path = str(caches.ARM64), install: bool = True) -> Path:
    """An executable ``cache/python`` that runs the emulated aarch64 Python 3.11 with numpy
    and ai-edge-litert: what ``liteconv device run --python`` takes to exercise the whole
    SSH path with aarch64 code. It marks results as emulated (``LITECONV_EMULATION``)."""
    cache = Path(cache).resolve()
    qemu = ensure_qemu(install)
    root = ensure_rootfs(cache, install)
    site = ensure_wheels(cache)
    wrapper = cache / "python"
    script = "\n".join([
        "#!/bin/sh",
        "# the emulated aarch64 Python of 'liteconv bench-arm64' (timings NOT representative)",
        "unset PYTHONHOME",
        f"export PYTHONPATH={shlex.quote(str(site))} PYTHONDONTWRITEBYTECODE=1",
        "export LITECONV_EMULATION=qemu-aarch64",
        f"export LITECONV_PYTHON={shlex.quote(str(wrapper))}  # the model probe's Python",
        f'exec {shlex.quote(qemu)} -L {shlex.quote(str(root))} '
        f'{shlex.quote(str(root / PYTHON))} "$@"',
        "",
    ])  # fmt: skip
    if not wrapper.is_file() or wrapper.read_text() != script:
        tmp = wrapper.with_name(".python.tmp")
        tmp.write_text(script)
        tmp.chmod(0o755)
        tmp.replace(wrapper)
    return wrapper
