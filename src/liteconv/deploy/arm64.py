"""Run a device bundle on emulated 64-bit ARM Linux (``make bench-arm64``).

Builds, once, a cached aarch64 user space on this x86 machine from package registries
only: Debian's arm64 packages (``debootstrap --foreign``, unpacked with ``dpkg -x``: no
chroot, no binfmt needed), run by ``qemu-aarch64-static -L ROOT``, plus the
``ai-edge-litert`` and ``numpy`` manylinux aarch64 wheels from PyPI. Then it runs the
bundle's ``bench.py --check`` (ARM outputs vs the x86 reference outputs) and a short
benchmark. Timings under emulation say nothing about real hardware.

Example:
    >>> result = run_bundle_arm64("dist/fashion_mnist_flattened-...-raspberry-pi-4.tar.gz")
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from liteconv.device.errors import LiteconvError
from liteconv.device.files import atomic_write_json, read_json

DEBIAN_SUITE = "bookworm"  # python3.11, the same minor as the aarch64 wheels below
DEBIAN_MIRROR = "http://deb.debian.org/debian"
PYTHON = "usr/bin/python3.11"
# ai-edge-litert 2.3.0's aarch64 wheel segfaults while creating an interpreter under
# Debian 12's qemu-user 7.2 (any -cpu model); 2.0.2 runs. Real boards are unaffected.
WHEELS = ("ai-edge-litert==2.0.2", "numpy==1.26.4")
NOT_REPRESENTATIVE = "qemu-aarch64 emulation: timings are NOT representative of real hardware"


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
        f"bench-arm64 builds an arm64 user space once under {cache} (debootstrap; about 700 MB, "
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


def ensure_rootfs(cache: Path, install: bool = True) -> Path:
    """An unpacked Debian arm64 user space with Python 3.11 under ``cache/root``."""
    root = cache / "root"
    if (root / PYTHON).is_file():
        return root
    with _building(cache):
        return _build_rootfs(cache, root, install)


def _build_rootfs(cache: Path, root: Path, install: bool) -> Path:
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
        ["debootstrap", "--foreign", "--arch=arm64", "--variant=minbase",
         "--include=python3-minimal,libpython3.11-stdlib", DEBIAN_SUITE, str(tmp), DEBIAN_MIRROR],
        "debootstrap of the arm64 user space",
        "check that Debian's package mirror is reachable",
        timeout=1800,
    )  # fmt: skip
    for deb in sorted((tmp / "var/cache/apt/archives").glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(tmp)], f"unpacking {deb.name}", "rerun the command")
    if not (tmp / PYTHON).is_file():
        raise LiteconvError(f"{tmp}: no {PYTHON} after debootstrap; delete {cache} and retry")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return root


def ensure_wheels(cache: Path) -> Path:
    """numpy and ai-edge-litert for aarch64/cp311, unpacked under ``cache/site``."""
    site = cache / "site"
    if (site / "ai_edge_litert").is_dir() and (site / "numpy").is_dir():
        return site
    with _building(cache):
        return _build_site(cache, site)


def _build_site(cache: Path, site: Path) -> Path:
    if (site / "ai_edge_litert").is_dir() and (site / "numpy").is_dir():
        return site  # built while this process waited
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    _run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "--platform", "manylinux_2_27_aarch64", "--platform", "manylinux_2_17_aarch64",
         "--platform", "manylinux2014_aarch64", "--python-version", "3.11",
         "--implementation", "cp", "-d", str(wheels), *WHEELS],
        "downloading the aarch64 wheels",
        f"check that PyPI is reachable and that {', '.join(WHEELS)} have manylinux aarch64 wheels",
        timeout=900,
    )  # fmt: skip
    tmp = cache / "site.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    for wheel in sorted(wheels.glob("*.whl")):
        if any(wheel.name.startswith(w.split("==")[0].replace("-", "_") + "-" + w.split("==")[1])
               for w in WHEELS):  # fmt: skip
            with zipfile.ZipFile(wheel) as zf:
                zf.extractall(tmp)
    if not (tmp / "ai_edge_litert").is_dir():
        raise LiteconvError(f"{wheels}: no ai-edge-litert aarch64 wheel; delete it and retry")
    shutil.rmtree(site, ignore_errors=True)
    tmp.rename(site)
    return site


def python_wrapper(cache: str | Path = ".cache/arm64", install: bool = True) -> Path:
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


def newest_bundle(folder: str | Path = "dist") -> Path:
    bundles = sorted(Path(folder).glob("*.tar.gz"), key=lambda p: p.stat().st_mtime)
    if not bundles:
        raise LiteconvError(
            f"no bundle in {folder}/: make one with 'make bundle' (liteconv bundle)"
        )
    return bundles[-1]


def _unpack(bundle: Path, dest: str) -> Path:
    """Extract ``bundle`` under ``dest`` and return its top-level folder."""
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
    bundle: str | Path, *, cache: str | Path = ".cache/arm64", runs: int = 20, echo=print
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
        folder = _unpack(bundle, tmp)
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
