"""`liteconv device` over a real OpenSSH server (Debian's sshd) started on 127.0.0.1.

The "board" is this machine reached through sshd: `device info`, a full `device run` on
the digits run (its own Python, a fresh venv from a wheelhouse with tflite-runtime 2.14 as
a 32-bit Pi would have, the emulated aarch64 Python), and every SSH failure as one line.
"""

from __future__ import annotations

import getpass
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import copy_run
from liteconv.cli import cli
from liteconv.deploy.remote import platform_tags
from liteconv.deploy.ssh import parse_address
from liteconv.device.errors import LiteconvError

SSHD = "/usr/sbin/sshd"
REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


class Board:
    """A running sshd: its address, a key it accepts, a known_hosts file that knows it."""

    def __init__(self, folder: Path, extra_config: tuple[str, ...] = (), *,
                 password_only: bool = False) -> None:  # fmt: skip
        if not os.access(SSHD, os.X_OK):
            pytest.fail(f"{SSHD} missing: 'make test' installs Debian's openssh-server "
                        "(apt-get install openssh-server)")  # fmt: skip
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.host_key = _keygen(folder / "host_key")
        self.key = _keygen(folder / "client_key")
        shutil.copy(folder / "client_key.pub", folder / "authorized_keys")
        self.port = _free_port()
        config = folder / "sshd_config"
        config.write_text("\n".join([
            "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {folder / 'authorized_keys'}",
            f"PasswordAuthentication {'yes' if password_only else 'no'}",
            "KbdInteractiveAuthentication no",
            f"PubkeyAuthentication {'no' if password_only else 'yes'}",
            "PermitRootLogin prohibit-password", "StrictModes no", "UsePAM no", "PidFile none",
            *extra_config,
        ]) + "\n")  # fmt: skip
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
        self.log = open(folder / "sshd.log", "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-p", str(self.port), "-f", str(config)],
                                     stdout=self.log, stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 120  # a ceiling only: sshd answers in well under 1 s
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"sshd did not start: {(folder / 'sshd.log').read_text()[-500:]}")
                time.sleep(0.1)
        self.known_hosts = folder / "known_hosts"
        pub = (folder / "host_key.pub").read_text().split()[:2]
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {' '.join(pub)}\n")
        self.address = f"ssh://{getpass.getuser()}@127.0.0.1:{self.port}"

    def args(self, *, key: Path | None = None, known_hosts: Path | None = None) -> list[str]:
        return [self.address, "-i", str(key or self.key),
                "--known-hosts", str(known_hosts or self.known_hosts)]  # fmt: skip

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    b = Board(tmp_path_factory.mktemp("sshd"))
    yield b
    b.stop()


def _invoke(args: list[str]):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_a_password_only_board_names_ssh_copy_id(tmp_path):
    """A fresh Raspberry Pi takes passwords only; ssh runs with BatchMode (it never prompts),
    so the error must say how to set up key login, in one line, exit 2."""
    board = Board(tmp_path / "sshd", password_only=True)
    try:
        result = CliRunner().invoke(cli, ["device", "info", *board.args()])
    finally:
        board.stop()
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "ssh-copy-id" in lines[0] and "passwords only" in lines[0]
    assert f"-p {board.port}" in lines[0]


def test_parse_address_and_platform_tags():
    a = parse_address("ssh://pi@raspberrypi.local:2222")
    assert (a.user, a.host, a.port, str(a)) == ("pi", "raspberrypi.local", 2222,
                                                "pi@raspberrypi.local:2222")  # fmt: skip
    assert parse_address("pi@10.0.0.7").port is None
    for bad in ("http://pi@host", "ssh://pi@host/path", "ssh://-oProxyCommand=x", "ssh://h:99999"):
        with pytest.raises(LiteconvError):
            parse_address(bad)
    info = {"python": {"platform": "linux-aarch64", "libc": "glibc 2.36", "python": "3.11.2"}}
    tags = platform_tags(info)
    assert tags[0] == "manylinux_2_36_aarch64" and "manylinux_2_17_aarch64" in tags
    assert tags[-2:] == ["manylinux2014_aarch64", "linux_aarch64"]
    from liteconv.deploy.remote import prepare_python
    from liteconv.deploy.ssh import SSH

    board = SSH(parse_address("ssh://pi@raspberrypi.local"))
    with pytest.raises(LiteconvError, match="no python3 on the board"):
        prepare_python(board, {"python": None})
    with pytest.raises(LiteconvError, match="python3-venv"):
        prepare_python(board, {"python": {"python": "3.11.2", "venv": False}})
    with pytest.raises(LiteconvError, match="--python /opt/py: it has no TFLite runtime"):
        prepare_python(board, {"python": {"numpy": "1.26"}}, python="/opt/py")


@pytest.mark.large
def test_device_info_describes_this_machine(board, tmp_path):
    out = tmp_path / "info.json"
    result = _invoke(["device", "info", *board.args(), "--python", sys.executable,
                      "--json", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    info = json.loads(out.read_text())
    assert info["arch"] == platform.machine()
    assert info["cores"] == len(os.sched_getaffinity(0))
    assert info["python"]["python"] == platform.python_version()
    from importlib import metadata

    assert info["python"]["ai-edge-litert"] == metadata.version("ai-edge-litert")
    assert info["python"]["numpy"] == metadata.version("numpy")
    assert f"architecture  {platform.machine()}" in result.output


@pytest.mark.large
def test_ssh_failures_are_one_line_errors(board, tmp_path):
    stranger = _keygen(tmp_path / "stranger")
    cases = [
        (board.args(key=stranger), "authentication refused"),
        (board.args(known_hosts=tmp_path / "empty_known_hosts"), "--accept-new-host-key"),
        ([f"ssh://nobody@127.0.0.1:{_free_port()}", "-i", str(board.key)], "host unreachable"),
    ]
    changed = tmp_path / "changed_known_hosts"  # the board's name with another key
    pub = (board.folder / "client_key.pub").read_text().split()[:2]
    changed.write_text(f"[127.0.0.1]:{board.port} {' '.join(pub)}\n")
    cases.append((board.args(known_hosts=changed), "does not match"))
    for args, expected in cases:
        result = _invoke(["device", "info", *args])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], result.output
    # --accept-new-host-key trusts a first-seen board and records its key
    fresh = tmp_path / "fresh_known_hosts"
    result = _invoke(["device", "info", *board.args(known_hosts=fresh), "--accept-new-host-key"])
    assert result.exit_code == 0, result.output
    assert (board.folder / "host_key.pub").read_text().split()[1] in fresh.read_text()


def _document(run: Path) -> dict:
    files = sorted((run / "device").glob("*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


@pytest.mark.large
def test_device_run_with_the_boards_python_ends_in_the_merged_report(board, exported_run,
                                                                     tmp_path):  # fmt: skip
    run = copy_run(exported_run, tmp_path / "run")
    remote = tmp_path / "board-cache"
    # a wrong key: exit 2, one line, nothing written in the run folder
    bad = _invoke(["device", "run", *board.args(key=_keygen(tmp_path / "k")), str(run),
                   "--remote-dir", str(remote), "--bundle-dir", str(tmp_path / "dist")])  # fmt: skip
    assert bad.exit_code == 2 and "authentication refused" in bad.output
    assert not (run / "device").exists() and not (run / "report.md").exists()

    result = _invoke(["device", "run", *board.args(), str(run), "--python", sys.executable,
                      "--threads", "1", "--runs", "5", "--warmup", "1", "--profile",
                      "--remote-dir", str(remote), "--bundle-dir", str(tmp_path / "dist")])  # fmt: skip
    assert result.exit_code == 0, result.output
    for i, step in enumerate(["connect", "bundle", "copy", "install", "check", "benchmark",
                              "fetch", "report"], 1):  # fmt: skip
        assert f"[{i}/8] {step}" in result.output
    doc = _document(run)
    assert doc["where"] == "127.0.0.1" and not doc.get("emulated")
    assert sum(line.startswith("PASS") for line in doc["check"]) == 2
    models = {r["model"]: r for r in doc["records"]}
    assert set(models) == {"digits_quick/fp32", "digits_quick/int8"}
    from importlib import metadata

    for r in models.values():
        assert r["runtime"] == "litert" and r["runtime_version"] == metadata.version(
            "ai-edge-litert"
        )
        assert 0 < r["delegated_nodes"] <= r["nodes"] and r["threads"] == 1
    report = json.loads((run / "report.json").read_text())
    assert {row["name"]: row["p50_ms@127.0.0.1"] for row in report} == {
        "fp32": models["digits_quick/fp32"]["p50_ms"],
        "int8": models["digits_quick/int8"]["p50_ms"],
    }
    assert "p50 ms 127.0.0.1" in (run / "report.md").read_text()
    # --profile: the board timed every block; the run's per-block report has its column
    assert [p["mode"] for p in doc["profile"]] == ["fp32", "int8"]
    sections = json.loads((run / "report_profile.json").read_text())
    assert [s["columns"] for s in sections] == [["127.0.0.1"], ["127.0.0.1"]]
    for s, p in zip(sections, doc["profile"]):
        assert [r["127.0.0.1"] for r in s["rows"]] == [b["p50_ms"] for b in p["blocks"]]
    assert "liteconv profile" in (run / "report_profile.md").read_text()  # no host column yet
    assert not list((remote / "bundles").iterdir())  # the board's copy is removed


@pytest.mark.large
def test_wheelhouse_venv_with_tflite_runtime_214_offline(board, exported_run, tmp_path):
    """A fresh venv on the board from host-fetched wheels only (pip --no-index): numpy<2
    and tflite-runtime 2.14, what a 32-bit Raspberry Pi OS gets; its check passes and the
    table shows that its XNNPACK takes none of the int8 graph."""
    wheels = tmp_path / "wheels"
    fetched = _invoke(["device", "wheels", *board.args(), str(wheels), "--runtime",
                       "tflite-runtime"])  # fmt: skip
    assert fetched.exit_code == 0, fetched.output
    assert any(p.name.startswith("tflite_runtime-2.14") for p in wheels.glob("*.whl"))
    run = copy_run(exported_run, tmp_path / "run")
    remote = tmp_path / "board-cache"
    result = _invoke(["device", "run", *board.args(), str(run), "--wheelhouse", str(wheels),
                      "--threads", "1", "--runs", "5", "--warmup", "1",
                      "--remote-dir", str(remote), "--bundle-dir", str(tmp_path / "dist")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "from the wheelhouse (offline)" in result.output
    doc = _document(run)
    version = ".".join(doc["board"]["python"]["python"].split(".")[:2])
    assert (remote / f"venv-py{version}" / "bin" / "python").is_file()
    assert doc["check"][0].startswith("runtime: tflite_runtime 2.14")
    models = {r["model"]: r for r in doc["records"]}
    assert {r["runtime_version"] for r in models.values()} == {"2.14.0"}
    assert models["digits_quick/fp32"]["delegated_nodes"] == models["digits_quick/fp32"]["nodes"]
    int8 = models["digits_quick/int8"]
    assert int8["delegated_nodes"] == 0 < int8["nodes"]
    assert f"XNNPACK took 0 of {int8['nodes']} operators" in result.output
    # the venv is reused the second time
    again = _invoke(["device", "run", *board.args(), str(run), "--wheelhouse", str(wheels),
                     "--threads", "1", "--runs", "3", "--warmup", "0",
                     "--remote-dir", str(remote), "--bundle-dir", str(tmp_path / "dist")])  # fmt: skip
    assert again.exit_code == 0 and "reused" in again.output, again.output


@pytest.mark.large
def test_device_run_on_the_emulated_arm64_python(board, exported_run, tmp_path):
    from liteconv.emulate.userspace import python_wrapper

    wrapper = python_wrapper(REPO / ".cache" / "arm64")
    run = copy_run(exported_run, tmp_path / "run")
    result = _invoke(["device", "run", *board.args(), str(run), "--python", str(wrapper),
                      "--threads", "1", "--runs", "3", "--warmup", "1",
                      "--remote-dir", str(tmp_path / "board-cache"),
                      "--bundle-dir", str(tmp_path / "dist")])  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = _document(run)
    assert doc["emulated"] == "qemu-aarch64" and doc["where"] == "127.0.0.1 (emulated)"
    assert doc["machine"]["arch"] == "aarch64" and doc["board"]["python"]["machine"] == "aarch64"
    assert "NOT representative" in result.output
    assert "p50 ms 127.0.0.1 (emulated)" in (run / "report.md").read_text()


@pytest.mark.large
def test_install_failures_are_one_line_and_leave_nothing(exported_run, tmp_path):
    """A board whose pip cannot reach any index (its sessions get PIP_INDEX_URL pointing at
    a closed port), then a wheelhouse with no wheel for the board's platform: one line
    each, exit 2, no venv left on the board, nothing in the run folder."""
    closed = _free_port()
    offline = Board(tmp_path / "sshd", extra_config=(
        f"SetEnv PIP_INDEX_URL=http://127.0.0.1:{closed}/simple PIP_RETRIES=0",))  # fmt: skip
    try:
        run = copy_run(exported_run, tmp_path / "run")
        remote = tmp_path / "board-cache"
        common = [*offline.args(), str(run), "--remote-dir", str(remote),
                  "--bundle-dir", str(tmp_path / "dist")]  # fmt: skip
        result = _invoke(["device", "run", *common])
        assert result.exit_code == 2, result.output
        last = result.output.strip().splitlines()[-1]
        assert "cannot reach a package index" in last and "--wheelhouse" in last
        wrong = tmp_path / "armv7l-wheels"  # what a 32-bit Pi needs, not this board
        wrong.mkdir()
        for name in ("numpy-1.26.4-cp311-cp311-linux_armv7l.whl",
                     "tflite_runtime-2.14.0-cp311-cp311-linux_armv7l.whl"):  # fmt: skip
            (wrong / name).write_bytes(b"PK")
        result = _invoke(["device", "run", *common, "--wheelhouse", str(wrong)])
        assert result.exit_code == 2, result.output
        assert "no tflite-runtime or numpy wheel in it for the board" in result.output
        assert not [p for p in remote.glob("venv-*")]  # no half-made venv to reuse later
        assert not (run / "device").exists() and not (run / "report.md").exists()
        assert not list((remote / "bundles").iterdir())
    finally:
        offline.stop()


# benchmark_model's output in the format its README documents (numbers made up here; no
# phone exists in this project's machines): the warm-up statistics line, then the timed
# one, the summary in microseconds, the memory footprint, the delegate line.
BENCHMARK_MODEL_STDOUT = """\
STARTING!
Log parameter values verbosely: [0]
Num threads: [4]
Graph: [/data/local/tmp/liteconv/fp32.tflite]
Use xnnpack: [1]
Loaded model /data/local/tmp/liteconv/fp32.tflite
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
Explicitly applied XNNPACK delegate, and the model graph will be completely executed by the delegate.
The input model file size (MB): 0.206904
Initialized session in 3.411ms.
Running benchmark for at least 10 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=1731 first=412 curr=288 min=271 max=2107 avg=289.4 std=52
Running benchmark for at least 100 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=3460 first=301 curr=285 min=270 max=655 avg=286.9 std=19
Inference timings in us: Init: 3411, First inference: 412, Warmup (avg): 289.4, Inference (avg): 286.9
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Memory footprint delta from the start of the tool (MB): init=3.25 overall=4.125
"""  # noqa: E501

BENCHMARK_MODEL_LOGCAT = """\
11-24 09:12:01.100  4242  4242 I tflite  : Explicitly applied XNNPACK delegate, and the model graph will be partially executed by the delegate w/ 2 delegate kernels.
11-24 09:12:01.101  4242  4242 I tflite  : Initialized session in 12.5ms.
11-24 09:12:01.602  4242  4242 I tflite  : count=40 first=15000 curr=12000 min=11000 max=15000 avg=12250 std=900
11-24 09:12:02.605  4242  4242 I tflite  : count=80 first=12100 curr=11900 min=11500 max=13100 avg=11950.5 std=250 p5=11600 median=11900 p95=12600
11-24 09:12:02.606  4242  4242 I tflite  : Inference timings in us: Init: 12500, First inference: 15000, Warmup (avg): 12250, Inference (avg): 11950.5
"""  # noqa: E501


def test_benchmark_model_output_parses_into_records():
    from liteconv.deploy.adb import parse_address as adb_address
    from liteconv.deploy.adb import parse_benchmark_output

    fig = parse_benchmark_output(BENCHMARK_MODEL_STDOUT)  # the timed line, not the warm-up
    assert fig["runs"] == 3460 and fig["p50_is_mean"]
    assert fig["mean_ms"] == pytest.approx(0.2869) == fig["p50_ms"]
    assert (fig["std_ms"], fig["min_ms"], fig["max_ms"]) == (0.019, 0.27, 0.655)
    assert (fig["load_ms"], fig["first_inference_ms"]) == (3.411, 0.412)
    assert fig["memory_overall_mb"] == 4.125 and fig["delegation"] == "complete"
    fig = parse_benchmark_output(BENCHMARK_MODEL_LOGCAT)  # Android log prefixes, a median
    assert fig["runs"] == 80 and not fig["p50_is_mean"] and fig["p50_ms"] == 11.9
    assert fig["delegation"] == "partial (2 kernels)"
    with pytest.raises(LiteconvError, match="no timing statistics.*Failed to allocate"):
        parse_benchmark_output("STARTING!\nERROR: Failed to allocate tensors!\n")
    assert adb_address("adb://R58M123ABC") == "R58M123ABC" and adb_address("adb://") is None
    with pytest.raises(LiteconvError):
        adb_address("adb://bad serial;rm")


def test_device_run_on_a_phone_without_adb_or_device_is_one_line(tmp_path):
    result = _invoke(["device", "run", "adb://R58M123ABC", str(tmp_path)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1
    assert "adb not found" in lines[0] or "adb:" in lines[0]
