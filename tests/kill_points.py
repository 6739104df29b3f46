"""kill -9 a liteconv command the moment it is writing a file, then look at what is left.

A command is started in its own process group; the folders it writes are polled, and the
instant the n-th temporary file (``.*.tmp*``, what the atomic writers write before their
rename) appears, the whole group is killed with SIGKILL. So the kill falls inside a write
(or, for a small file, at most a rename later) whatever the machine's load, unlike a kill
after a fixed time. What is left is then described: the temporaries, and every final
file with whether it is whole.

Used by ``tests/test_reliability.py`` and, as a script, for the kill -9 table in
``docs/results/reliability.md``:

    $ python tests/kill_points.py RUN_DIR OUT.json [export,train,bundle]
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path


def temporaries(*folders: Path) -> list[Path]:
    """The ``.*.tmp*`` files under ``folders`` (os.walk: a folder removed meanwhile by the
    command under watch is skipped, not an error)."""
    found = []
    for folder in folders:
        for root, _, files in os.walk(folder):
            found += [Path(root) / f for f in files if f.startswith(".") and ".tmp" in f]
    return sorted(found)


def kill_at_temporary(cmd: list[str], watch: list[Path], *, nth: int = 1, env=None,
                      cwd=None, timeout: float = 900) -> dict:  # fmt: skip
    """Run ``cmd``; SIGKILL its process group when the ``nth`` distinct temporary file
    appears under ``watch``. Returns ``killed``, ``at`` (that file's name), ``mid_write``
    (whether it was still there after the kill), ``seconds`` and ``returncode``."""
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    seen: list[Path] = []
    killed = None
    while proc.poll() is None and time.perf_counter() - began < timeout:
        for path in temporaries(*watch):
            if path not in seen:
                seen.append(path)
        if len(seen) >= nth:
            os.killpg(proc.pid, signal.SIGKILL)
            killed = seen[nth - 1]
            break
        time.sleep(0.0005)
    else:
        if proc.poll() is None:  # timed out without the temporary: stop it anyway
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return {"killed": killed is not None, "at": killed.name if killed else None,
            "mid_write": bool(killed and killed.exists()),
            "seconds": round(time.perf_counter() - began, 2), "returncode": proc.returncode,
            "stderr": proc.stderr.read().decode("utf-8", "replace")[-500:]}  # fmt: skip


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
    """Kill at the ``nth`` temporary, describe what is left, rerun, describe again
    (``runs``: the --out folder of a train, whose run folders are counted)."""
    kill = kill_at_temporary(cmd, watch, nth=nth, env=env)
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


def main(run_dir: str, out_json: str, only: str = "export,train,bundle") -> None:
    """Export, train and bundle kill points on copies of a digits run (``RUN_DIR``)."""
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="killpoints-"))
    src = Path(run_dir)
    rows = []
    config = src / "config.yaml"
    for nth in range(1, 7) if "export" in only else ():
        run = base / f"export{nth}" / src.parent.name / src.name
        shutil.copytree(src, run, ignore=shutil.ignore_patterns("export", "device", "report*"))
        rows.append(scenario("export fp32,int8,qat_int8",
                             liteconv("export", str(run), "--mode", "fp32,int8,qat_int8"),
                             [run], nth))  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    for nth in range(1, 6) if "train" in only else ():
        out = base / f"train{nth}"
        rows.append(scenario("train (2 epochs)",
                             liteconv("train", "-c", str(config), "--set", "train.epochs=2",
                                      "--out", str(out)), [out], nth, runs=out))  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    exported = src if (src / "export").is_dir() else base / "export1" / src.parent.name / src.name
    for nth in (1,) if "bundle" in only else ():
        dist = base / f"dist{nth}"
        rows.append(scenario("bundle", liteconv("bundle", str(exported), "-o", str(dist)),
                             [dist, exported], nth))  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    Path(out_json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main(*sys.argv[1:4])
