"""The board: a Raspberry Pi or phone over SSH or adb, and emulated 64-bit ARM."""

from __future__ import annotations

from pathlib import Path

import click

from liteconv.cli.common import SectionedGroup, run_dir_or_newest, runtime_choice
from liteconv.cli.root import cli
from liteconv.device import caches
from liteconv.device.__main__ import int_list  # no TensorFlow: the device CLI's parser
from liteconv.pipeline import run as runlib


@cli.command()
def targets():
    """The known deployment targets and microcontroller boards: name, core, where each
    was found.

    A name is looked up in ./configs/targets (boards: ./configs/mcu), then the user folder
    ($LITECONV_HOME/targets and mcu/, default ~/.config/liteconv), then those shipped with
    liteconv; --target and --board also take a YAML path."""
    from liteconv.device.tables import format_table
    from liteconv.device.targets import find_named, find_targets, load_target
    from liteconv.emulate.estimate import accuracy_cell, core_model
    from liteconv.mcu.boards import load_board

    rows = []
    for name, (source, path) in sorted(find_targets().items()):
        target = load_target(str(path))
        core = (f"{target.qemu_cpu} @ {target.clock_mhz:g} MHz, cycles: {core_model(target)}"
                if target.core else "-")  # fmt: skip
        rows.append([name, target.description, core, accuracy_cell(target) if target.core else "-",
                     source if source != "user" else str(path)])  # fmt: skip
    click.echo(format_table(["target", "description", "emulated core (qemu -cpu), cycle model",
                             "held-out |error|: absolute / model to model", "from"],
                            rows))  # fmt: skip
    boards = []
    for name, (source, path) in sorted(find_named("mcu").items()):
        board = load_board(str(path))
        boards.append([name, board.description, f"{board.core} @ {board.clock_mhz:g} MHz",
                       f"{board.flash_kb} KB / {board.ram_kb} KB",
                       source if source != "user" else str(path)])  # fmt: skip
    click.echo("\nmicrocontroller boards (liteconv mcu --board):")
    click.echo(format_table(["board", "description", "core", "flash / RAM", "from"], boards))


@cli.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path())
@click.option(
    "--board",
    "boards",
    default=None,
    metavar="B[,B]",
    help="MCU boards (default: every known board, shipped and your own: 'liteconv "
    "targets' lists them), or YAML paths",
)
@click.option(
    "--emit",
    "emit_dir",
    default=None,
    type=click.Path(),
    help="write the model as a C array + a minimal TFLM main.cc (one model only)",
)
@click.option("--json", "json_path", default=None, type=click.Path(), help="write the records")
@click.option("--md", "md_path", default=None, type=click.Path(), help="write the table")
def mcu(sources, boards, emit_dir, json_path, md_path):
    """Whether an int8 model fits a microcontroller and runs under TensorFlow Lite Micro.

    SOURCES are .tflite files or run folders (their export/*int8*.tflite). Per model:
    every operator against TFLM's kernels, the smallest tensor arena TFLM allocates
    (bisection, with TFLM's allocation report), flash (model + a stated runtime
    allowance), TFLM's outputs against LiteRT's; per board: fits or not, with margins.
    A model that does not fit is an answer (exit 0); one TFLM cannot run is named (the
    others still get their answer) and the command exits 2."""
    from liteconv.device.errors import LiteconvError
    from liteconv.device.files import atomic_write_json, atomic_write_text
    from liteconv.device.tables import format_table
    from liteconv.mcu.boards import list_boards, load_board
    from liteconv.mcu.emit import write_sources
    from liteconv.mcu.fit import fit_model
    from liteconv.mcu.latency import SOURCE, cycles_per_mac

    chosen = [load_board(b.strip()) for b in (boards or ",".join(list_boards())).split(",")
              if b.strip()]  # fmt: skip
    models = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            found = sorted((path / runlib.EXPORT).glob("*int8*.tflite"))
            if not found:
                raise click.UsageError(f"{path}: no export/*int8*.tflite; run 'liteconv export "
                                       f"{path} --mode int8 --io int8' first")  # fmt: skip
            models += found
        else:
            models.append(path)
    if emit_dir and len(models) != 1:
        raise click.UsageError(f"--emit writes one model; got {len(models)}")
    records, failed = [], []
    for model in models:
        click.echo(f"checking {model} under TFLM", err=True)
        try:
            records.append(fit_model(model, chosen))
        except LiteconvError as err:  # this model cannot run on TFLM: the others still get
            if emit_dir:  # their answer, and the command exits 2 after the table
                raise
            failed.append({"file": str(model), "error": str(err)})
    if not records:
        raise LiteconvError("; ".join(f["error"] for f in failed))
    rows = []
    for r in records:
        for b in r["boards"]:
            rows.append([Path(r["file"]).name, b["board"], f"{r['model_bytes'] / 1024:.1f}",
                         f"{r['arena_bytes'] / 1024:.1f}", f"{b['flash_bytes'] / 1024:.1f}",
                         f"{b['flash_margin'] / 1024:+.1f}", f"{b['ram_margin'] / 1024:+.1f}",
                         "yes" if b["fits"] else "NO",
                         "ok" if r["parity"]["passed"] else "DIFFERS",
                         "{:g}–{:g}".format(*b["latency_ms_range"]) if b["latency_ms_range"]
                         else "—"])  # fmt: skip
    table = format_table(["model", "board", "model KB", "arena KB", "flash KB (est.)",
                          "flash margin KB", "RAM margin KB", "fits", "TFLM vs LiteRT",
                          "latency ms (range)"], rows, markdown=True)  # fmt: skip
    click.echo(table)
    fast, slow = cycles_per_mac()
    click.echo(
        "arena: TFLM's smallest allocation on x86-64 (64-bit pointers): an upper bound of "
        "a 32-bit MCU's; flash: the model plus a stated runtime allowance (not built);\n"
        f"latency: a range, not a measurement: MACs × {fast:.2f}–{slow:.2f} cycles per MAC "
        f"at the board's clock, from {SOURCE} (int8 models on Cortex-M4/M4F/M33 boards only; "
        "— elsewhere)"
    )
    if emit_dir:
        r = records[0]
        for path in write_sources(models[0], emit_dir, arena_bytes=r["arena_bytes"],
                                  operators=r["operator_kinds"]):  # fmt: skip
            click.echo(f"wrote {path}")
        click.echo("not compiled here: build with your board's toolchain and TFLM")
    if json_path:
        atomic_write_json(json_path, {"records": records, "failed": failed,
                                      "boards": [b.name for b in chosen]})  # fmt: skip
    if md_path:
        atomic_write_text(md_path, table + "\n")
    if failed:
        for f in failed[:-1]:
            click.echo(f"Error: {f['error']}", err=True)
        raise LiteconvError(failed[-1]["error"])


@cli.group(cls=SectionedGroup)
def device():
    """A Raspberry Pi over SSH (ssh://USER@HOST[:PORT]) or an Android phone over adb
    (adb://SERIAL): describe it, fetch wheels for it, benchmark a run on it.

    SSH needs key login (liteconv never types a password): on a fresh Pi run
    'ssh-copy-id USER@HOST' once. The first 'device run' makes a venv with numpy and
    ai-edge-litert on the board (a minute or two with internet; --wheelhouse without)."""


def _ssh_options(fn):
    opts = [
        click.argument("address"),
        click.option("-i", "--identity", type=click.Path(), default=None,
                     help="private key (default: ssh's own keys, agent and ~/.ssh/config)"),
        click.option("--known-hosts", type=click.Path(), default=None,
                     help="known_hosts file (default: ~/.ssh/known_hosts)"),
        click.option("--accept-new-host-key", is_flag=True,
                     help="trust a board seen for the first time (a changed key still fails)"),
        click.option("--python", "python", default=None,
                     help="an interpreter on the board that already has numpy and a runtime"),
    ]  # fmt: skip
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _board(address, identity, known_hosts, accept_new_host_key):
    from liteconv.deploy.ssh import SSH, parse_address

    return SSH(parse_address(address), identity=identity, known_hosts=known_hosts,
               accept_new_host_key=accept_new_host_key)  # fmt: skip


@device.command("info")
@_ssh_options
@click.option("--json", "json_path", default=None, help="also write the description here")
def device_info(address, identity, known_hosts, accept_new_host_key, python, json_path):
    """CPU, cores, architecture, OS, Python and runtimes of the board at ssh://USER@HOST[:PORT]
    (installs nothing)."""
    from liteconv.deploy.remote import board_info, info_lines
    from liteconv.device.files import atomic_write_json

    if address.startswith("adb://"):
        from liteconv.deploy import adb

        info = adb.phone_info(adb.ADB(adb.parse_address(address)))
        lines = [f"{k:<15} {v}" for k, v in info.items()]
    else:
        info = board_info(_board(address, identity, known_hosts, accept_new_host_key), python)
        lines = info_lines(info)
    for line in lines:
        click.echo(line)
    if json_path:
        click.echo(f"wrote {atomic_write_json(json_path, info)}")


@device.command("wheels")
@_ssh_options
@click.argument("folder", type=click.Path())
@click.option("--runtime", type=runtime_choice(["litert", "tflite_runtime"]), default="litert",
              show_default=True,
              help="which runtime's wheels (tflite_runtime: 32-bit boards; "
                   "tflite-runtime is accepted too)")  # fmt: skip
def device_wheels(address, identity, known_hosts, accept_new_host_key, python, folder, runtime):
    """Download numpy and the runtime for the board's platform into FOLDER (for
    'device run --wheelhouse FOLDER' on a board without internet)."""
    from liteconv.deploy.remote import board_info, fetch_wheels

    info = board_info(_board(address, identity, known_hosts, accept_new_host_key), python)
    for wheel in fetch_wheels(info, Path(folder), runtime.replace("_", "-"), echo=click.echo):
        click.echo(f"  {wheel.name}")


@device.command("run")
@_ssh_options
@click.argument("source", required=False, type=click.Path())
@click.option(
    "--target",
    default="raspberry-pi-4",
    show_default=True,
    help="the target profile the bundle carries (threads, cores)",
)
@click.option(
    "--wheelhouse",
    type=click.Path(),
    default=None,
    help="install numpy and the runtime from these wheels only (offline board)",
)
@click.option("--threads", default=None, help="comma list (default: the target's)")
@click.option("--runs", default=100, show_default=True, type=click.IntRange(1),
              help="timed runs per model")  # fmt: skip
@click.option("--warmup", default=10, show_default=True, type=click.IntRange(0),
              help="untimed runs per model")  # fmt: skip
@click.option("--keep", is_flag=True, help="leave the unpacked bundle on the board")
@click.option(
    "--remote-dir",
    default="~/.cache/liteconv",
    show_default=True,
    help="where on the board the venv and the bundles live",
)
@click.option("--bundle-dir", default="dist", show_default=True,
              help="where the bundle of a run is written on this machine")  # fmt: skip
@click.option("--profile", is_flag=True,
              help="also time every block of the model on the board (per-block table "
                   "beside the host's in the run's report_profile.md)")  # fmt: skip
def device_run(address, identity, known_hosts, accept_new_host_key, python, source, target,
               wheelhouse, threads, runs, warmup, keep, remote_dir, bundle_dir, profile):  # fmt: skip
    """Check and benchmark SOURCE (a run folder, default the newest run, or a bundle
    .tar.gz) on the board at ssh://USER@HOST[:PORT]; results into RUN_DIR/device/ and
    the run's report. adb://SERIAL: an Android phone through LiteRT's benchmark_model
    (pushed by you to /data/local/tmp; no --check there)."""
    from liteconv.deploy.remote import run_on_board

    if address.startswith("adb://"):  # a phone: benchmark_model, no Python, no --check
        from liteconv.deploy import adb

        phone = adb.ADB(adb.parse_address(address))
        adb.run_on_phone(phone, run_dir_or_newest(source), threads=int_list(threads) if threads else None,
                         runs=runs, warmup=warmup, echo=click.echo)  # fmt: skip
        return
    board = _board(address, identity, known_hosts, accept_new_host_key)
    src = source if source and Path(source).is_file() else run_dir_or_newest(source)
    result = run_on_board(board, src, target=target, python=python, wheelhouse=wheelhouse,
                          threads=int_list(threads) if threads else None, runs=runs,
                          warmup=warmup, keep=keep, cache=remote_dir.rstrip("/"),
                          bundle_dir=bundle_dir, profile=profile, echo=click.echo)  # fmt: skip
    click.echo(f"wrote {result['json']}")


@cli.command("bench-arm64")
@click.argument("bundle_path", required=False, type=click.Path())
@click.option("--cache", default=str(caches.ARM64), show_default=True,
              help="where the arm64 user space and wheels are kept")  # fmt: skip
@click.option("--runs", default=20, show_default=True, type=click.IntRange(1),
              help="timed runs per model (emulated: correctness, not speed)")  # fmt: skip
@click.option("--python-wrapper", is_flag=True,
              help="only prepare the emulated Python and print the path of a script that "
                   "runs it (for 'liteconv device run ... --python PATH')")  # fmt: skip
def bench_arm64(bundle_path, cache, runs, python_wrapper):
    """Check and time a device bundle on emulated 64-bit ARM (qemu; correctness, not speed).

    BUNDLE_PATH defaults to the newest dist/*.tar.gz. The first run builds, once, an arm64
    Debian user space under --cache: it needs root (debootstrap, and apt-get for
    qemu-user-static and debootstrap where missing), Debian's package mirror and PyPI
    (numpy and ai-edge-litert aarch64 wheels), about 700 MB of disk and a few minutes;
    later runs use the cache and need neither root nor the network."""
    from liteconv.deploy.arm64 import run_bundle_arm64
    from liteconv.deploy.bundle import newest_bundle
    from liteconv.emulate import userspace

    userspace.preflight(cache)  # not root before the first build: say so before downloading
    if python_wrapper:
        click.echo(userspace.python_wrapper(cache))
        return
    run_bundle_arm64(bundle_path or newest_bundle("dist"), cache=cache, runs=runs, echo=click.echo)
