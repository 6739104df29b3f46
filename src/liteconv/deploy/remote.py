"""``liteconv device``: describe a board, and benchmark a run on it in one command over SSH.

``board_info`` asks the board (nothing installed) for its CPU, cores, architecture, OS,
Python and runtime versions. ``run_on_board`` builds the run's bundle, copies it over,
prepares a Python environment once (a venv under ``~/.cache/liteconv/`` on the board,
reused afterwards; from the board's package index or from a host-side wheelhouse), runs
``bench.py --check`` then the benchmark, fetches the results into ``RUN_DIR/device/``
atomically and merges them into the run's report. ``fetch_wheels`` fills a wheelhouse for
the board's platform on the host, for boards without internet.

Example:
    >>> board = SSH(parse_address("ssh://pi@raspberrypi.local"))
    >>> board_info(board)["cpu"]
    'Cortex-A72'
    >>> run_on_board(board, "runs/fashion_mnist_flattened/20261124-004802")
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from liteconv.deploy.ssh import SSH, remote_failure, shell_path
from liteconv.device.errors import LiteconvError
from liteconv.device.files import atomic_write_bytes
from liteconv.device.harness import check_result_document
from liteconv.pipeline import run as runlib

CACHE = "~/.cache/liteconv"
# numpy and a runtime: ai-edge-litert where it has wheels (aarch64, x86-64), else
# tflite-runtime (armv7l: 32-bit Raspberry Pi OS), which needs numpy<2.
RUNTIME_REQUIREMENTS = {
    "litert": ("numpy", "ai-edge-litert"),
    "tflite-runtime": ("numpy<2", "tflite-runtime"),
}
PIP_OFFLINE = re.compile(
    r"Failed to establish a new connection|Temporary failure in name resolution|"
    r"Network is unreachable|Could not fetch URL|ProxyError|Connection refused|"
    r"Max retries exceeded|Read timed out|No route to host|Name or service not known"
)

_INFO_PY = r"""
import json, platform, sys, sysconfig
out = {"python": platform.python_version(), "python_exe": sys.executable,
       "platform": sysconfig.get_platform(), "machine": platform.machine(),
       "libc": " ".join(platform.libc_ver()).strip(), "implementation": sys.implementation.name}
try:
    from importlib import metadata
except ImportError:
    metadata = None
for name in ("numpy", "ai-edge-litert", "tflite-runtime", "tensorflow"):
    try:
        out[name] = metadata.version(name)
    except Exception:
        out[name] = None
try:
    import ensurepip, venv  # noqa: F401
    out["venv"] = True
except ImportError:
    out["venv"] = False
print("python_json=" + json.dumps(out))
"""

_INFO_SH = r"""
echo "arch=$(uname -m)"
echo "kernel=$(uname -sr)"
echo "cores=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null)"
echo "board=$(tr -d '\000' < /proc/device-tree/model 2>/dev/null)"
echo "cpu=$(grep -m1 -iE '^(model name|cpu model|hardware|processor[[:space:]]*:[[:space:]]*[A-Za-z])' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//')"
echo "os=$( (. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME") || uname -o)"
echo "memory_mb=$(awk '/MemTotal/ {printf "%d", $2/1024}' /proc/meminfo 2>/dev/null)"
echo "disk_free_mb=$(df -Pk "$HOME" 2>/dev/null | awk 'NR==2 {printf "%d", $4/1024}')"
if command -v "$PY" >/dev/null 2>&1; then
  echo "python_path=$(command -v "$PY")"
  "$PY" -c "$INFO_PY" 2>/dev/null || echo "python_error=$PY did not run"
else
  echo "python_error=no $PY"
fi
"""


def board_info(board: SSH, python: str | None = None) -> dict:
    """What the board is: CPU, cores, architecture, OS, memory, free disk, Python and the
    installed numpy/runtime versions (``None`` where missing). Installs nothing."""
    py = python or "python3"
    script = f"PY={shlex.quote(py)}; INFO_PY={shlex.quote(_INFO_PY)}\n{_INFO_SH}"
    text = board.text(script, what="reading the board's description", timeout=120)
    info: dict = {"address": str(board.address)}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "python_json":
            try:
                info["python"] = json.loads(value)
            except ValueError:
                info["python_error"] = "its Python printed no description"
        elif key in ("cores", "memory_mb", "disk_free_mb"):
            info[key] = int(value) if value.strip().isdigit() else None
        else:
            info[key] = value.strip() or None
    info.setdefault("python", None)
    return info


def info_lines(info: dict) -> list[str]:
    """``board_info`` as aligned ``key: value`` lines for the terminal."""
    py = info.get("python") or {}
    runtimes = ", ".join(f"{k} {py[k]}" for k in ("ai-edge-litert", "tflite-runtime",
                                                  "tensorflow") if py.get(k)) or "none"  # fmt: skip
    rows = [
        ("board", info.get("board") or "-"),
        ("cpu", info.get("cpu") or "-"),
        ("cores", info.get("cores")),
        ("architecture", info.get("arch")),
        ("os", info.get("os")),
        ("kernel", info.get("kernel")),
        ("memory", f"{info['memory_mb']} MB" if info.get("memory_mb") else "-"),
        ("disk free", f"{info['disk_free_mb']} MB in $HOME" if info.get("disk_free_mb") else "-"),
        ("python", f"{py['python']} ({info.get('python_path')}, {py.get('platform')})"
         if py else info.get("python_error") or "not found"),
        ("numpy", py.get("numpy") or "not installed"),
        ("runtimes", runtimes),
        ("venv", ("available" if py.get("venv") else "missing (apt install python3-venv)")
         if py else "-"),
    ]  # fmt: skip
    return [f"{k:<13} {v}" for k, v in rows]


def platform_tags(info: dict) -> list[str]:
    """pip ``--platform`` tags for the board's Python: manylinux for its glibc and arch."""
    py = info.get("python") or {}
    plat = (py.get("platform") or "").replace("-", "_").replace(".", "_")  # linux_aarch64
    if not plat.startswith("linux_"):
        raise LiteconvError(
            f"{info.get('address')}: the board's Python reports platform {plat or '?'}; "
            "wheelhouses are supported for Linux boards"
        )
    arch = plat.removeprefix("linux_")
    match = re.match(r"glibc (\d+)\.(\d+)", py.get("libc") or "")
    tags = []
    if match and int(match.group(1)) == 2:
        tags += [f"manylinux_2_{m}_{arch}" for m in range(int(match.group(2)), 16, -1)]
        tags += [f"manylinux2014_{arch}"]
    return [*tags, plat]


def fetch_wheels(info: dict, folder: Path, runtime: str = "litert", echo=print) -> list[Path]:
    """Download numpy and the runtime for the board's platform and Python into ``folder``
    (``pip download --only-binary=:all: --platform ...``), for ``--wheelhouse``."""
    py = info.get("python") or {}
    if not py.get("python"):
        raise LiteconvError(
            f"{info.get('address')}: no python3 on the board; install it first "
            "('sudo apt install python3 python3-venv')"
        )
    version = ".".join(py["python"].split(".")[:2])
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
           "--only-binary=:all:", "--python-version", version, "--implementation", "cp",
           "-d", str(folder)]  # fmt: skip
    for tag in platform_tags(info):
        cmd += ["--platform", tag]
    echo(f"fetching {' '.join(RUNTIME_REQUIREMENTS[runtime])} for Python {version} on "
         f"{platform_tags(info)[-1]} into {folder}")  # fmt: skip
    proc = subprocess.run([*cmd, *RUNTIME_REQUIREMENTS[runtime]], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        if PIP_OFFLINE.search(proc.stderr):
            raise LiteconvError(f"pip download: no package index reachable from this host ({last})")
        other = "tflite-runtime" if runtime == "litert" else "litert"
        raise LiteconvError(
            f"pip download: no {runtime} wheel for Python {version} on "
            f"{platform_tags(info)[-1]} ({last}); try --runtime {other}"
        )
    return sorted(folder.glob("*.whl"))


def _wheelhouse_runtime(folder: Path) -> str:
    names = [p.name.lower() for p in folder.glob("*.whl")]
    if not any(n.startswith("numpy-") for n in names):
        raise LiteconvError(f"--wheelhouse {folder}: no numpy wheel; fill it with "
                            "'liteconv device wheels ssh://... DIR'")  # fmt: skip
    for runtime, prefix in (("litert", "ai_edge_litert-"), ("tflite-runtime", "tflite_runtime-")):
        if any(n.startswith(prefix) for n in names):
            return runtime
    raise LiteconvError(f"--wheelhouse {folder}: no ai-edge-litert or tflite-runtime wheel; "
                        "fill it with 'liteconv device wheels ssh://... DIR'")  # fmt: skip


@dataclass
class Steps:
    """Progress lines: ``[2/6] copy  ...  0.4 s``."""

    total: int
    echo: object = print
    done: int = 0
    name: str = ""
    times: dict = field(default_factory=dict)

    def start(self, name: str) -> float:
        self.done += 1
        self.name = name
        return time.perf_counter()

    def end(self, began: float, detail: str) -> None:
        seconds = time.perf_counter() - began
        self.times[self.name] = round(seconds, 2)
        self.echo(f"[{self.done}/{self.total}] {self.name:<9} {detail} ({seconds:.1f} s)")


def _python_ready(py: dict | None) -> str | None:
    """Why an interpreter cannot run the bundle (``None``: it can)."""
    if not py:
        return "it does not run"
    if not py.get("numpy"):
        return "it has no numpy"
    if not (py.get("ai-edge-litert") or py.get("tflite-runtime") or py.get("tensorflow")):
        return "it has no TFLite runtime (ai-edge-litert or tflite-runtime)"
    return None


def prepare_python(
    board: SSH,
    info: dict,
    *,
    python: str | None = None,
    wheelhouse: Path | None = None,
    cache: str = CACHE,
) -> tuple[str, str]:
    """The interpreter that runs the bundle on the board, and what was done to get it.

    ``python``: use that interpreter as it is (it must have numpy and a runtime). Else a
    venv ``CACHE/venv-py<X.Y>`` made once with the board's ``python3`` and reused while its
    requirements are unchanged; packages from the board's index, or with ``wheelhouse``
    from those wheels only (``--no-index``: works offline).
    """
    if python:
        why = _python_ready(info.get("python"))
        if why:
            raise LiteconvError(f"--python {python}: {why} on the board; install numpy and "
                                "ai-edge-litert for it, or leave --python out")  # fmt: skip
        return python, f"using {python} as it is"
    py = info.get("python")
    if not py:
        raise LiteconvError(
            f"{board.address}: no python3 on the board; install it ('sudo apt install "
            "python3 python3-venv') or give --python with an interpreter that has a runtime"
        )
    if not py.get("venv"):
        raise LiteconvError(
            f"{board.address}: the board's python3 cannot make a venv (no ensurepip); "
            "install it ('sudo apt install python3-venv') or give --python"
        )
    version = ".".join(py["python"].split(".")[:2])
    venv = f"{cache}/venv-py{version}"
    runtime = _wheelhouse_runtime(wheelhouse) if wheelhouse else "litert"
    wanted = " ".join(RUNTIME_REQUIREMENTS[runtime])
    venv_q, marker = shell_path(venv), shell_path(f"{venv}/.liteconv-ready")
    have = board.text(f"cat {marker} 2>/dev/null || true").strip()
    if have == wanted or (not wheelhouse and have):
        return f"{venv}/bin/python", f"reused {venv} ({have})"
    pip = f"{venv_q}/bin/python -m pip install --disable-pip-version-check -q"
    board.run(f"rm -rf {venv_q} && mkdir -p {shell_path(cache)} && python3 -m venv {venv_q}",
              what="making the venv", fix="check python3-venv on the board")  # fmt: skip
    try:
        if wheelhouse:
            remote = f"{cache}/wheelhouse"
            with tempfile.TemporaryDirectory() as tmp:
                archive = Path(tmp) / "wheels.tar.gz"
                subprocess.run(["tar", "czf", str(archive), "-C", str(wheelhouse), "."],
                               check=True, capture_output=True)  # fmt: skip
                board.run(f"rm -rf {shell_path(remote)}")
                board.put_tar(archive, remote, what="copying the wheelhouse")
            _pip(board, f"{pip} --no-index --find-links {shell_path(remote)} "
                        f"{' '.join(shlex.quote(r) for r in RUNTIME_REQUIREMENTS[runtime])}",
                 info, runtime, offline=True)  # fmt: skip
        else:
            try:
                _pip(board, f"{pip} --retries 1 --timeout 20 numpy ai-edge-litert", info, runtime)
            except _NoWheel:  # e.g. armv7l: ai-edge-litert has no wheel, tflite-runtime has
                runtime, wanted = "tflite-runtime", " ".join(RUNTIME_REQUIREMENTS["tflite-runtime"])
                _pip(board, f"{pip} --retries 1 --timeout 20 'numpy<2' tflite-runtime", info,
                     runtime)  # fmt: skip
        board.run(f"echo {shlex.quote(wanted)} > {marker}")
    except BaseException:
        board.run(f"rm -rf {venv_q}", check=False)  # no half-made venv is ever reused
        raise
    source = "the wheelhouse (offline)" if wheelhouse else "the board's package index"
    return f"{venv}/bin/python", f"made {venv}: {wanted} from {source}"


class _NoWheel(LiteconvError):
    pass


def _pip(board: SSH, command: str, info: dict, runtime: str, offline: bool = False) -> None:
    proc = board.run(command, check=False)
    if proc.returncode == 0:
        return
    err = proc.stderr.decode("utf-8", "replace") + proc.stdout.decode("utf-8", "replace")
    plat = f"{(info.get('python') or {}).get('platform')}, Python {info['python']['python']}"
    if "No space left on device" in err:
        raise remote_failure(err, "installing the runtime", "")
    if not offline and PIP_OFFLINE.search(err):
        raise LiteconvError(
            f"{board.address}: pip on the board cannot reach a package index; fetch the "
            "wheels on this host ('liteconv device wheels ADDRESS DIR') and pass --wheelhouse DIR"
        )
    if "No matching distribution" in err or "from versions: none" in err:
        if offline:
            raise LiteconvError(
                f"--wheelhouse: no {runtime} or numpy wheel in it for the board ({plat}); "
                "fetch them with 'liteconv device wheels ADDRESS DIR'"
            )
        raise _NoWheel(
            f"{board.address}: no {runtime} wheel for the board ({plat}); use a Python that "
            "ai-edge-litert or tflite-runtime publishes wheels for, or give --python"
        )
    raise remote_failure(err, "installing numpy and the runtime", "see pip's message")


def _check_failure(output: str, address) -> LiteconvError:
    failed = [ln for ln in output.splitlines() if ln.startswith("FAIL ")]
    detail = failed[0][5:] if failed else (output.strip().splitlines() or ["no output"])[-1]
    return LiteconvError(
        f"{address}: bench.py --check failed, the board does not compute what the host did: "
        f"{detail}; benchmark not run"
    )


def run_on_board(
    board: SSH,
    source: str | Path,
    *,
    target: str = "raspberry-pi-4",
    python: str | None = None,
    wheelhouse: str | Path | None = None,
    threads: list[int] | None = None,
    runs: int = 100,
    warmup: int = 10,
    keep: bool = False,
    cache: str = CACHE,
    bundle_dir: str | Path = "dist",
    profile: bool = False,
    echo=print,
) -> dict:
    """Check and benchmark ``source`` (a run folder or a bundle ``.tar.gz``) on the board.

    Returns ``{"document": ..., "json": path, "report": [paths] or None}``. The results go
    to ``RUN_DIR/device/<host>-<time>.json`` (beside the bundle when given a bundle),
    written atomically once everything succeeded; a run's report is rewritten with a
    column for each board measured.
    """
    from liteconv.deploy.bundle import unpack  # the bundle layout check, no TensorFlow

    source = Path(source)
    wheelhouse = Path(wheelhouse) if wheelhouse else None
    if wheelhouse is not None and not wheelhouse.is_dir():
        raise LiteconvError(f"--wheelhouse {wheelhouse}: no such folder")
    run = None
    if source.is_dir():
        from liteconv.pipeline.run import Run

        run = Run.open(source)
    elif not source.is_file():
        raise LiteconvError(f"{source}: no such run folder or bundle")
    steps = Steps(total=8 if run else 6, echo=echo)

    began = steps.start("connect")
    info = board_info(board, python)
    py = info.get("python") or {}
    steps.end(began, f"{board.address}: {info.get('board') or info.get('cpu') or '?'}, "
                     f"{info.get('arch')}, {info.get('cores')} cores, Python "
                     f"{py.get('python', 'missing')}")  # fmt: skip

    if run is not None:
        from liteconv.deploy.bundle import make_bundle

        began = steps.start("bundle")
        bundle = make_bundle(run.path, out=bundle_dir, target=target, profile=profile)
        steps.end(began, f"{bundle} ({bundle.stat().st_size / 1024:.0f} KB)")
    else:
        bundle = source
    with tempfile.TemporaryDirectory() as tmp:
        name = unpack(bundle, tmp).name  # a readable liteconv bundle, before copying it

    began = steps.start("copy")
    stage = f"{cache}/bundles/{name}-{int(time.time())}"
    board.run(f"rm -rf {shell_path(stage)}")
    board.put_tar(bundle, stage, what="copying the bundle")
    folder = shell_path(f"{stage}/{name}")
    steps.end(began, f"{bundle.name} -> {board.address.host}:{stage}")
    try:
        began = steps.start("install")
        exe, how = prepare_python(board, info, python=python, wheelhouse=wheelhouse, cache=cache)
        steps.end(began, how)
        py_q = shell_path(exe)

        began = steps.start("check")
        check = board.run(f"cd {folder} && {py_q} bench.py --check", check=False)
        output = check.stdout.decode("utf-8", "replace")
        if check.returncode != 0:
            raise _check_failure(output + check.stderr.decode("utf-8", "replace"), board.address)
        passed = [ln for ln in output.splitlines() if ln.startswith("PASS")]
        steps.end(began, f"{len(passed)} model(s) pass: "
                         f"{(output.splitlines() or [''])[0]}")  # fmt: skip

        began = steps.start("benchmark")
        args = ["--json", "results.json", "--runs", str(runs), "--warmup", str(warmup)]
        if threads:
            args += ["--threads", ",".join(str(t) for t in threads)]
        if profile:
            args.append("--profile")
        bench = board.run(f"cd {folder} && {py_q} bench.py {shlex.join(args)}",
                          what="the benchmark", fix="rerun with --keep and run bench.py there")  # fmt: skip
        table = [ln for ln in bench.stdout.decode("utf-8", "replace").splitlines()
                 if ln.startswith(("|", "warning"))]  # fmt: skip
        steps.end(began, f"{runs} runs per model" + (", every block" if profile else ""))

        began = steps.start("fetch")
        blob = board.read(f"{stage}/{name}/results.json", what="fetching results.json")
        document = _device_document(blob, board, info, output)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        if run is not None:
            dest = write_device_document(run, document, board.address.label)
        else:
            dest = bundle.with_name(f"{name}-{board.address.label}-{stamp}.json")
            atomic_write_bytes(dest, json.dumps(document, indent=2, allow_nan=False).encode())
        steps.end(began, str(dest))
    finally:
        if not keep:
            board.run(f"rm -rf {shell_path(stage)}", check=False)
    for line in table:
        echo(line)
    if document.get("emulated"):
        echo(f"NOTE: measured under {document['emulated']} emulation: the timings are NOT "
             "representative of real hardware")  # fmt: skip
    report = None
    if run is not None:
        began = steps.start("report")
        report = _merge_report(run, min(r["threads"] for r in document["records"]))
        from liteconv.bench.report import device_documents

        steps.end(began, f"{report[1]} (host and {len(device_documents(run))} device file(s))")
        echo(Path(report[1]).read_text().rstrip())
    if keep:
        echo(f"kept the bundle on the board: {stage}/{name}")
    return {"document": document, "json": dest, "report": report, "steps": steps.times}


def _device_document(blob: bytes, board: SSH, info: dict, check_output: str) -> dict:
    try:
        document = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise LiteconvError(f"{board.address}: results.json is not JSON ({err})") from None
    check_result_document(document, f"{board.address}:results.json")
    if not document["records"]:
        raise LiteconvError(f"{board.address}: results.json holds no benchmark records")
    document["where"] = board.address.label + (" (emulated)" if document.get("emulated") else "")
    document["board"] = info
    document["check"] = check_output.strip().splitlines()
    return document


def write_device_document(run, document: dict, label: str) -> Path:
    """``RUN_DIR/device/<label>-<time>.json``, written atomically."""
    dest = run.file(runlib.DEVICE) / f"{label}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    return atomic_write_bytes(dest, json.dumps(document, indent=2, allow_nan=False).encode())


def save_device_document(run, document: dict, label: str, echo=print) -> dict:
    """Write a device's results into the run and rewrite the run's report with them."""
    dest = write_device_document(run, document, label)
    report = _merge_report(run, min(r["threads"] for r in document["records"]))
    echo(Path(report[1]).read_text().rstrip())
    echo(f"wrote {dest} and {report[1]}")
    return {"document": document, "json": dest, "report": report}


def _merge_report(run, threads: int) -> list[Path]:
    """The run's report (and its per-block report when a board profiled the blocks)."""
    from liteconv.bench.report import (
        profile_sections,
        report_rows,
        write_profile_report,
        write_report,
    )

    paths = write_report(report_rows([run.path], threads=threads), run.path / "report")
    sections = profile_sections([run.path])
    if sections:
        paths += write_profile_report(sections, run.path / "report")
    return paths
