"""kill -9 a liteconv command inside a chosen write, then look at what is left.

The kill is injected, not raced: the command runs with ``LITECONV_CRASH_AT=write:N``
(``device/files.py``), so its own atomic writer stops inside its N-th write — half of the
temporary on disk, before the rename — and SIGKILLs the command's process group. The
kill lands in the same write on every machine and under any load (in the manner of
SQLite's crash tests). A clean run with ``LITECONV_WRITES_LOG`` names every write of a
command first, so a test can choose the first, a middle or the last one, and the table
can go through all of them. What is left is then described: the temporaries, and every
final file with whether it is whole; then the same command runs again.

Used by ``tests/test_reliability.py`` and, as a script, for the kill -9 table in
``docs/results/reliability.md``:

    $ python tests/kill_points.py RUN_DIR OUT.json [export,train,bundle]
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

_KILLED = re.compile(r"liteconv crash point: \S+: killed at write \d+: (\S+) -> (.+)$", re.M)


def temporaries(*folders: Path) -> list[Path]:
    """The ``.*.tmp*`` files under ``folders``."""
    found = []
    for folder in folders:
        for root, _, files in os.walk(folder):
            found += [Path(root) / f for f in files if f.startswith(".") and ".tmp" in f]
    return sorted(found)


def writes(cmd: list[str], *, env=None, cwd=None, timeout: float = 1800) -> list[str]:
    """Run ``cmd`` to the end with ``LITECONV_WRITES_LOG``: the final path of every atomic
    write it made, in order (raises if the command fails)."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "writes.log"
        run = subprocess.run(cmd, env={**(env or os.environ), "LITECONV_WRITES_LOG": str(log)},
                             cwd=cwd, capture_output=True, text=True, timeout=timeout)  # fmt: skip
        if run.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed: {run.stderr[-2000:]}")
        lines = log.read_text().splitlines() if log.exists() else []
    return [line.split(" ", 2)[2] for line in lines if line.startswith("write ")]


def kill_inside_write(cmd: list[str], nth: int, *, env=None, cwd=None,
                      timeout: float = 1800) -> dict:  # fmt: skip
    """Run ``cmd`` with ``LITECONV_CRASH_AT=write:nth`` (in its own process group). Returns
    ``killed`` (SIGKILL at that write), ``at`` (the temporary's name), ``final`` (the file
    it was to become), ``mid_write`` (the temporary still there), ``seconds``,
    ``returncode`` and the end of ``stderr``."""
    began = time.perf_counter()
    proc = subprocess.run(cmd, env={**(env or os.environ), "LITECONV_CRASH_AT": f"write:{nth}"},
                          cwd=cwd, start_new_session=True, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, timeout=timeout)  # fmt: skip
    stderr = proc.stderr.decode("utf-8", "replace")
    match = _KILLED.search(stderr)
    at = Path(match.group(2)).with_name(match.group(1)) if match else None
    return {"killed": bool(match) and proc.returncode == -9,
            "at": at.name if at else None, "final": match.group(2) if match else None,
            "mid_write": bool(at and at.exists()),
            "seconds": round(time.perf_counter() - began, 2), "returncode": proc.returncode,
            "stderr": stderr[-500:]}  # fmt: skip


def whole(path: Path) -> bool | None:
    """Whether a final file is complete: a readable zip (.keras), tarball, JSON, UTF-8 text
    (.yaml, .csv, .md), a .tflite with its flatbuffer identifier; ``None`` for other kinds
    (TensorFlow's own checkpoint files, say), which this cannot judge."""
    if path.suffix not in (".keras", ".gz", ".json", ".tflite", ".yaml", ".csv", ".md"):
        return None
    try:
        if path.suffix == ".keras":
            with zipfile.ZipFile(path) as z:
                return z.testzip() is None
        if path.name.endswith(".tar.gz"):
            with tarfile.open(path) as t:
                return all(t.extractfile(m) is not None or not m.isfile() for m in t)
        if path.suffix == ".json":
            json.loads(path.read_text())
            return True
        if path.suffix == ".tflite":
            data = path.read_bytes()
            return len(data) > 8 and data[4:8] == b"TFL3"
        path.read_text()
        return True
    except Exception:  # noqa: BLE001 - any failure to read means not whole
        return False


def final_files(*folders: Path) -> dict[str, bool]:
    """Every non-temporary file under ``folders`` (tensorboard logs aside) and whether it
    is whole (``None``: not judged)."""
    out = {}
    for folder in folders:
        if not folder.exists():
            continue
        for p in sorted(folder.rglob("*")):
            if p.is_file() and not p.name.startswith(".") and "tensorboard" not in p.parts:
                out[str(p.relative_to(folder))] = whole(p)
    return out


def liteconv(*args: str) -> list[str]:
    return [sys.executable, "-m", "liteconv.cli", *args]


def scenario(name: str, cmd: list[str], watch: list[Path], nth: int, env=None,
             runs: Path | None = None) -> dict:  # fmt: skip
    """Kill inside the ``nth`` write, describe what is left, rerun, describe again
    (``runs``: the --out folder of a train, whose run folders are counted)."""
    kill = kill_inside_write(cmd, nth, env=env)
    left = temporaries(*watch)
    finals = final_files(*watch)
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    return {
        "scenario": name, "nth": nth, **{k: v for k, v in kill.items() if k != "stderr"},
        "temporaries_left": [p.name for p in left],
        "final_files": len(finals),
        "broken_final_files": [k for k, ok in finals.items() if ok is False],
        "rerun_exit": rerun.returncode, "rerun_error": rerun.stderr.strip().splitlines()[-1:]
        if rerun.returncode else [],
        "temporaries_after_rerun": [p.name for p in temporaries(*watch)],
        "broken_after_rerun": [k for k, ok in final_files(*watch).items() if ok is False],
        # a runs folder (out/<experiment>/<run>): the run folders, and any without manifest
        "run_folders_after_rerun": len(list(runs.glob("*/*/manifest.json"))) if runs else None,
        "folders_without_manifest": sorted(str(p.relative_to(runs)) for p in runs.glob("*/*")
                                           if not (p / "manifest.json").exists()) if runs else None,
    }  # fmt: skip


def _export_copy(src: Path, dest: Path) -> Path:
    run = dest / src.parent.name / src.name
    shutil.copytree(src, run, ignore=shutil.ignore_patterns("export", "device", "report*"))
    return run


def main(run_dir: str, out_json: str, only: str = "export,train,bundle") -> None:
    """Every write of export, train and bundle killed in turn, on copies of a digits run
    (``RUN_DIR``, trained with ``train.deterministic=true`` so that reruns write alike)."""
    base = Path(tempfile.mkdtemp(prefix="killpoints-"))
    src = Path(run_dir)
    rows = []
    config = src / "config.yaml"
    det = ["--set", "train.deterministic=true", "--set", "train.verbose=0"]

    def export(folder: Path) -> tuple[list[str], list[Path]]:
        run = _export_copy(src, folder)
        return liteconv("export", str(run), "--mode", "fp32,int8,qat_int8"), [run]

    def train(folder: Path) -> tuple[list[str], list[Path]]:
        return liteconv("train", "-c", str(config), "--set", "train.epochs=2", *det,
                        "--out", str(folder)), [folder]  # fmt: skip

    exported = _export_copy(src, base / "exported")
    subprocess.run(liteconv("export", str(exported), "--mode", "fp32,int8"), check=True,
                   capture_output=True)  # fmt: skip

    def bundle(folder: Path) -> tuple[list[str], list[Path]]:
        return liteconv("bundle", str(exported), "-o", str(folder)), [folder]

    for name, make in (("export fp32,int8,qat_int8", export), ("train (2 epochs)", train),
                       ("bundle", bundle)):  # fmt: skip
        if name.split()[0] not in only:
            continue
        cmd, _ = make(base / f"{name.split()[0]}-clean")
        listed = writes(cmd)
        for nth in range(1, len(listed) + 1):
            cmd, watch = make(base / f"{name.split()[0]}{nth}")
            row = scenario(name, cmd, watch, nth, runs=watch[0] if make is train else None)
            row["expected"] = Path(listed[nth - 1]).name
            rows.append(row)
            print(json.dumps(row), flush=True)
    Path(out_json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:4])
