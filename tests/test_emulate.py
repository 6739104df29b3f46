"""Emulating a target core: the counting plugin against programs whose count is known, the
cycle model against llvm-mca, and whole models under qemu's Cortex-A72 and A76."""

from __future__ import annotations

import dataclasses
import os
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import REPO
from liteconv.cli import cli
from liteconv.device.errors import LiteconvError
from liteconv.emulate import counts, cycles, tools

ARM64_CACHE = REPO / ".cache" / "arm64"


def _movz(rd: int, imm: int) -> int:
    return 0xD2800000 | (imm << 5) | rd


def _movn(rd: int, imm: int) -> int:
    return 0x92800000 | (imm << 5) | rd


SVC = 0xD4000001
MARK = [_movn(0, 7420)]  # x0 = -7421, the plugin's marker descriptor


def _movz_hi(rd: int, imm: int) -> int:  # movz xd, #imm, lsl #16
    return 0xD2A00000 | (imm << 5) | rd


BUFFER = 0x1000000  # the streaming program's zero-filled buffer (a second, writable LOAD)


def _elf(code: list[int], bss: int = 0) -> bytes:
    """A static aarch64 ELF running ``code`` (one R+X LOAD), with ``bss`` zero bytes at
    ``BUFFER`` when given."""
    body = b"".join(struct.pack("<I", c) for c in code)
    base, header = 0x400000, 64 + 56 * (2 if bss else 1)
    size = header + len(body)
    elf = (
        b"\x7fELF"
        + bytes([2, 1, 1, 0])
        + bytes(8)
        + struct.pack("<HHIQQQIHHHHHH", 2, 183, 1, base + header, 64, 0, 0, 64, 56,
                      2 if bss else 1, 64, 0, 0)
    )  # fmt: skip
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)  # R+X, one LOAD
    if bss:  # R+W, nothing from the file: bss bytes of zeros at BUFFER
        phdr += struct.pack("<IIQQQQQQ", 1, 6, 0, BUFFER, BUFFER, 0, bss, 0x1000)
    return elf + phdr + body


def loop_program(n: int) -> bytes:
    """A static aarch64 ELF: mark start, count x1 = n down (3 instructions a turn), mark
    stop, exit. The region holds 1 + 3n + 4 instructions; the whole run 3n + 12."""
    code = [*MARK, _movz(2, 16), _movz(8, 64), SVC,  # write(-7421, _, 16): region 0 starts
            _movz(1, n),
            0x91000463,  # add x3, x3, #1
            0xF1000421,  # subs x1, x1, #1
            0x54000000 | (((-2) & 0x7FFFF) << 5) | 1,  # b.ne back to the add
            *MARK, _movz(2, 1), _movz(8, 64), SVC,  # write(-7421, _, 1): region ends
            _movz(8, 93), _movz(0, 0), SVC]  # exit(0)  # fmt: skip
    return _elf(code)


def stream_program(lines: int, passes: int, store: bool = False) -> bytes:
    """A static aarch64 ELF reading (or writing) one 8-byte word in each of ``lines``
    consecutive 64-byte lines of a buffer, ``passes`` times; pass k is region k."""
    access = 0xF80404A4 if store else 0xF84404A4  # str/ldr x4, [x5], #64 (post-index)
    code = []
    for k in range(passes):
        code += [*MARK, _movz(2, 16 + k), _movz(8, 64), SVC,  # region k starts
                 _movz_hi(5, BUFFER >> 16), _movz(1, lines),
                 access,
                 0xF1000421,  # subs x1, x1, #1
                 0x54000000 | (((-2) & 0x7FFFF) << 5) | 1,  # b.ne back to the access
                 *MARK, _movz(2, 1), _movz(8, 64), SVC]  # region k ends  # fmt: skip
    code += [_movz(8, 93), _movz(0, 0), SVC]  # exit(0)
    return _elf(code, bss=lines * 64)


def reread_program(lines: int) -> bytes:
    """A static aarch64 ELF reading one word of each of ``lines`` 64-byte lines twice per
    region: region 0 reads them twice as one invoke, region 1 marks a new invoke between
    the two passes."""

    def mark(code: int) -> list[int]:  # write(-7421, _, code)
        return [*MARK, _movz(2, code), _movz(8, 64), SVC]

    def one_pass() -> list[int]:
        return [_movz_hi(5, BUFFER >> 16), _movz(1, lines),
                0xF84404A4,  # ldr x4, [x5], #64 (post-index)
                0xF1000421,  # subs x1, x1, #1
                0x54000000 | (((-2) & 0x7FFFF) << 5) | 1]  # b.ne back to the load  # fmt: skip

    code = [*mark(16), *one_pass(), *one_pass(), *mark(1),
            *mark(17), *one_pass(), *mark(3), *one_pass(), *mark(1),
            _movz(8, 93), _movz(0, 0), SVC]  # fmt: skip
    return _elf(code, bss=lines * 64)


def _need_tools():
    if not (shutil.which("qemu-aarch64") or os.path.isfile("/usr/bin/qemu-aarch64")):
        pytest.fail("qemu-aarch64 missing: 'make test' installs Debian's qemu-user")


@pytest.mark.parametrize("n", [1, 1000, 54321])
def test_plugin_counts_exactly_the_instructions_of_a_known_loop(tmp_path, n):
    _need_tools()
    program = tmp_path / "loop"
    program.write_bytes(loop_program(n))
    program.chmod(0o755)
    regions, total = counts.run_counted([str(program)], qemu_cpu="cortex-a72", cache=tmp_path)
    assert regions[0]["instructions"] == 1 + 3 * n + 4
    assert total == 3 * n + 12
    # blocks: the loop's entry (with its first turn) once, the loop body n - 1 times, the
    # stop marker's once
    assert sum(runs for _, _, runs, _ in regions[0]["blocks"]) == n + 1


A72_CACHES = {"l1d": (32, 2), "l2": (1024, 16)}  # the Pi 4's


@pytest.mark.parametrize(("lines", "l1_again", "l2_again"), [
    (256, 0, 0),            # 16 KB: fits the 32 KB L1D, the second pass hits everything
    (4096, 4096, 0),        # 256 KB: streams through the L1D (LRU), stays in the 1 MB L2
    (32768, 32768, 32768),  # 2 MB: streams through both
])  # fmt: skip
def test_cache_model_counts_the_misses_of_a_known_stream(tmp_path, lines, l1_again, l2_again):
    _need_tools()
    program = tmp_path / "stream"
    program.write_bytes(stream_program(lines, passes=2))
    program.chmod(0o755)
    regions, _ = counts.run_counted([str(program)], qemu_cpu="cortex-a72", cache=tmp_path,
                                    caches=A72_CACHES)  # fmt: skip
    first, again = regions[0]["memory"], regions[1]["memory"]
    assert first["loads"] == again["loads"] == lines and first["stores"] == 0
    assert first["l1_misses"] == first["l2_misses"] == lines  # cold: every line once
    assert again["l1_misses"] == l1_again and again["l2_misses"] == l2_again
    assert first["l2_writebacks"] == again["l2_writebacks"] == 0  # nothing was written
    # without the cache model the same program counts the same instructions, no memory
    plain, _ = counts.run_counted([str(program)], qemu_cpu="cortex-a72", cache=tmp_path)
    assert "memory" not in plain[0]
    assert plain[0]["instructions"] == regions[0]["instructions"] == 2 + 3 * lines + 4


def test_cache_model_writes_back_what_was_stored(tmp_path):
    """Storing to 2 MB twice: each pass misses every line (write-allocate) and, from the
    second on, evicts a dirty line for each one it brings in."""
    _need_tools()
    lines = 32768
    program = tmp_path / "store"
    program.write_bytes(stream_program(lines, passes=2, store=True))
    program.chmod(0o755)
    regions, _ = counts.run_counted([str(program)], qemu_cpu="cortex-a72", cache=tmp_path,
                                    caches=A72_CACHES)  # fmt: skip
    first, again = regions[0]["memory"], regions[1]["memory"]
    assert first["stores"] == lines and first["loads"] == 0
    assert first["l2_misses"] == again["l2_misses"] == lines
    l2_lines = 1024 * 1024 // 64
    assert first["l2_writebacks"] == lines - l2_lines  # the first pass fills the L2 first
    assert again["l2_writebacks"] == lines


@pytest.mark.parametrize(("lines", "again"), [(4096, 0), (32768, 32768)])
def test_cache_model_counts_what_an_invoke_reads_from_memory_twice(tmp_path, lines, again):
    """Re-reads: misses on lines the same invoke already read from memory. 256 KB read
    twice stays in the 1 MB L2 (no second miss); 2 MB read twice through an LRU L2 misses
    every line again, each a re-read, unless a new invoke is marked between the passes."""
    _need_tools()
    program = tmp_path / "reread"
    program.write_bytes(reread_program(lines))
    program.chmod(0o755)
    regions, _ = counts.run_counted([str(program)], qemu_cpu="cortex-a72", cache=tmp_path,
                                    caches=A72_CACHES)  # fmt: skip
    one_invoke, two_invokes = regions[0]["memory"], regions[1]["memory"]
    assert one_invoke["loads"] == 2 * lines
    assert one_invoke["l2_misses"] == lines + again and one_invoke["l2_rereads"] == again
    assert two_invokes["l2_misses"] == 2 * again and two_invokes["l2_rereads"] == 0


def test_random_replacement_is_deterministic_and_keeps_part_of_a_stream_too_big_for_lru(tmp_path):
    """2 MB streamed twice through a 1 MB L2: LRU misses every line again, random
    replacement keeps some (and the same ones on every run: a fixed seed)."""
    _need_tools()
    program = tmp_path / "stream"
    program.write_bytes(stream_program(32768, passes=2))
    program.chmod(0o755)
    caches = {"l1d": (32, 2, "lru"), "l2": (1024, 16, "random")}
    runs = [counts.run_counted([str(program)], qemu_cpu="cortex-a72", cache=tmp_path,
                               caches=caches)[0][1]["memory"] for _ in range(2)]  # fmt: skip
    assert runs[0] == runs[1]
    assert 0 < runs[0]["l2_misses"] < 32768
    assert runs[0]["l1_misses"] == 32768  # the L1 stays LRU: the stream misses it all


def test_thread_model_arithmetic_on_made_up_counts():
    """ms(T) = scale × ((serial + parallel / T) / clock + dispatches × sync × (T − 1) / clock
    + DRAM bytes / bandwidth(T)): the serial part does not split over the threads, each
    dispatch costs its sync cycles per extra thread, none at one thread; T threads draw T
    times one thread's bandwidth up to the bus's peak (one thread's at any T without one);
    what they would move if they shared the re-read lines is counted, not used."""
    from liteconv.device.targets import Target
    from liteconv.emulate.estimate import (
        caches_of,
        dram_bandwidth,
        dram_bytes,
        thread_split,
        time_ms,
    )

    board = Target(name="b", core="cortex-a72", qemu_cpu="cortex-a72", clock_mhz=1000,
                   l1d_kb=32, l1d_ways=2, l2_kb=1024, l2_ways=16, dram_mb_s=6400,
                   threads=[1, 4])  # fmt: skip
    memory = {"l2_misses": 75_000, "l2_writebacks": 25_000}  # 6.4 MB: 1 ms at 6400 MB/s
    assert dram_bytes(memory) == 6_400_000
    counted = {"estimated_cycles": 5e6, "dispatches": 10, "memory": memory,
               "cycle_model": {"parts": {"serial": {"cycles": 1e6},
                                         "parallel": {"cycles": 4e6}}}}  # fmt: skip
    assert thread_split(counted) == (1e6, 4e6, 10)
    one = time_ms(board, counted, 1, sync_cycles=50_000)
    assert one == {"compute_ms": 5.0, "shared_l2_ms": 0.0, "sync_ms": 0.0, "memory_ms": 1.0,
                   "estimated_ms": 6.0}  # fmt: skip
    four = time_ms(board, counted, 4, sync_cycles=50_000)
    # 1 + 4/4 ms of compute, 10 dispatches × 50 000 cycles × 3 extra threads = 1.5 ms, 1 ms DRAM
    assert four == {"compute_ms": 2.0, "shared_l2_ms": 0.0, "sync_ms": 1.5, "memory_ms": 1.0,
                    "estimated_ms": 4.5}  # fmt: skip
    assert time_ms(dataclasses.replace(board, cycle_scale=2.0), counted, 4,
                   sync_cycles=50_000)["estimated_ms"] == 9.0  # fmt: skip
    # with the bus's peak: 2 threads draw 12 800 MB/s (0.5 ms), 4 threads the 16 000 peak
    bus = dataclasses.replace(board, dram_peak_mb_s=16_000)
    assert [dram_bandwidth(bus, t) for t in (1, 2, 4)] == [6400, 12_800, 16_000]
    # a board whose threads together sustain less than the bus's peak (a Pi's 32-bit bus):
    # 8000 MB/s for 2 or 4 threads; one core's figure: the same at any T; bus_peak ignores it
    narrow = dataclasses.replace(bus, dram_all_threads_mb_s=8000)
    assert [dram_bandwidth(narrow, t) for t in (1, 2, 4)] == [6400, 8000, 8000]
    assert [dram_bandwidth(narrow, t, bus_peak=True) for t in (1, 2, 4)] == [6400, 12_800, 16_000]
    one_core = dataclasses.replace(bus, dram_all_threads_mb_s=6400)
    assert time_ms(one_core, counted, 4, sync_cycles=50_000)["memory_ms"] == 1.0
    # if 4 threads shared the re-reads (60 000 of the 75 000 lines read): 15 000 first
    # reads + 60 000 / 4 re-reads + 25 000 write-backs = 3.52 MB; the estimate pays them all
    rereads = {**memory, "l2_rereads": 60_000}
    assert dram_bytes(rereads) == dram_bytes(memory) == 6_400_000
    assert dram_bytes(rereads, 4) == 3_520_000 and dram_bytes(memory, 4) == 6_400_000
    assert time_ms(bus, {**counted, "memory": rereads}, 4, sync_cycles=50_000)["memory_ms"] == 0.4
    assert time_ms(bus, counted, 1, sync_cycles=50_000)["memory_ms"] == 1.0
    assert time_ms(bus, counted, 2, sync_cycles=50_000)["memory_ms"] == 0.5
    assert time_ms(bus, counted, 4, sync_cycles=50_000) == {
        "compute_ms": 2.0,
        "shared_l2_ms": 0.0,
        "sync_ms": 1.5,
        "memory_ms": 0.4,
        "estimated_ms": 3.9,
    }
    no_dram = dataclasses.replace(board, dram_mb_s=0)
    assert dram_bandwidth(no_dram, 4) == 0
    assert time_ms(no_dram, counted, 1)["estimated_ms"] == 5.0  # no bandwidth: no term
    # a record counted before the split: all parallel, no dispatches
    old = {"estimated_cycles": 5e6, "memory": None, "cycle_model": {}}
    assert time_ms(no_dram, old, 4, sync_cycles=50_000)["estimated_ms"] == 1.25
    assert caches_of(board) == {"l1d": (32, 2, "lru"), "l2": (1024, 16, "lru")}
    assert caches_of(Target(name="x")) is None


def test_a_shared_l2_bounds_the_parallel_part_at_many_threads():
    """Where the cluster's cores share one L2 (``l2_shared``), the parallel part runs no
    faster than that L2 returns the counted L1D misses: 100 000 misses × 64 bytes at
    3.2 bytes per cycle are 2 000 000 cycles, 2 ms at 1000 MHz. It holds back 4 threads
    (1 ms of parallel work each), not 1 or 2 (4 and 2 ms); without the flag, or with no
    miss counted, nothing changes."""
    from liteconv.device.targets import Target
    from liteconv.emulate.estimate import shared_l2_cycles, time_ms

    board = Target(name="b", core="cortex-a72", qemu_cpu="cortex-a72", clock_mhz=1000,
                   l1d_kb=32, l1d_ways=2, l2_kb=1024, l2_ways=16, threads=[1, 2, 4],
                   l2_shared=True)  # fmt: skip
    counted = {"estimated_cycles": 5e6, "dispatches": 0,
               "memory": {"l1_misses": 100_000, "l2_misses": 0, "l2_writebacks": 0},
               "cycle_model": {"parts": {"serial": {"cycles": 1e6},
                                         "parallel": {"cycles": 4e6}}}}  # fmt: skip
    assert shared_l2_cycles(board, counted, 3.2) == 2e6
    times = {t: time_ms(board, counted, t, l2_bytes_per_cycle=3.2) for t in (1, 2, 4)}
    assert [times[t]["compute_ms"] for t in (1, 2, 4)] == [5.0, 3.0, 3.0]  # 1 + max(4/T, 2)
    assert all(times[t]["shared_l2_ms"] == 2.0 for t in times)
    # a faster L2 (8 bytes per cycle: 0.8 ms) no longer binds at 4 threads (1 ms each)
    assert time_ms(board, counted, 4, l2_bytes_per_cycle=8.0)["compute_ms"] == 2.0
    private = dataclasses.replace(board, l2_shared=False)  # a DynamIQ core's own L2
    own = time_ms(private, counted, 4, l2_bytes_per_cycle=3.2)
    assert own["compute_ms"] == 2.0 and own["shared_l2_ms"] == 0.0
    no_misses = {**counted, "memory": None}
    assert time_ms(board, no_misses, 4, l2_bytes_per_cycle=3.2)["compute_ms"] == 2.0


def test_the_shared_l2_flag_is_the_cluster_s():
    """The boards whose cores share one L2 (Cortex-A53 and A72 clusters) say so with its
    source; the DynamIQ boards (A55, A76: each core's own L2) do not; the flag needs the
    cache sizes that count the misses."""
    from liteconv.device.targets import list_targets, load_target, target_from_dict

    shared = {n for n in list_targets() if load_target(n).l2_shared}
    assert shared == {"raspberry-pi-3", "raspberry-pi-3-32bit", "raspberry-pi-4",
                      "raspberry-pi-zero-2", "single-core-embedded"}  # fmt: skip
    for name in shared:
        source = load_target(name).l2_shared_source
        assert "TRM" in source and ("Cortex-A53" in source or "Cortex-A72" in source), name
    for name in ("raspberry-pi-5", "pixel-4", "android-big-cores", "android-little-cores"):
        assert not load_target(name).l2_shared, name
    with pytest.raises(LiteconvError, match="l2_shared needs the cache sizes"):
        target_from_dict({"name": "t", "core": "cortex-a72", "qemu_cpu": "cortex-a72",
                          "clock_mhz": 1500, "l2_shared": True}, "t.yaml")  # fmt: skip


def test_target_cache_settings_are_checked():
    from liteconv.device.targets import target_from_dict

    base = {"name": "t", "core": "cortex-a72", "qemu_cpu": "cortex-a72", "clock_mhz": 1500}
    with pytest.raises(LiteconvError, match="give all four"):
        target_from_dict({**base, "l1d_kb": 32, "l2_kb": 1024}, "t.yaml")
    with pytest.raises(LiteconvError, match="l2_kb = 1000 is not a whole number of 12-way sets"):
        target_from_dict(
            {**base, "l1d_kb": 32, "l1d_ways": 2, "l2_kb": 1000, "l2_ways": 12}, "t.yaml"
        )
    with pytest.raises(LiteconvError, match="dram_mb_s needs the cache sizes"):
        target_from_dict({**base, "dram_mb_s": 4000}, "t.yaml")
    cached = {**base, "l1d_kb": 32, "l1d_ways": 2, "l2_kb": 1024, "l2_ways": 16}
    with pytest.raises(LiteconvError, match="dram_peak_mb_s = 3000 is below dram_mb_s = 4000"):
        target_from_dict({**cached, "dram_mb_s": 4000, "dram_peak_mb_s": 3000}, "t.yaml")
    with pytest.raises(LiteconvError, match="dram_peak_mb_s needs dram_mb_s"):
        target_from_dict({**cached, "dram_peak_mb_s": 3000}, "t.yaml")
    bus = {**cached, "dram_mb_s": 4000, "dram_peak_mb_s": 12000}
    assert (
        target_from_dict({**bus, "dram_all_threads_mb_s": 4000}, "t.yaml").dram_all_threads_mb_s
        == 4000
    )
    for wrong in (3000, 13000):  # below one thread's figure, above the bus's peak
        with pytest.raises(
            LiteconvError, match=f"dram_all_threads_mb_s = {wrong} must lie between"
        ):
            target_from_dict({**bus, "dram_all_threads_mb_s": wrong}, "t.yaml")
    with pytest.raises(LiteconvError, match="l2_policy"):
        target_from_dict({**base, "l1d_kb": 32, "l1d_ways": 2, "l2_kb": 1024, "l2_ways": 16,
                          "l2_policy": "fifo"}, "t.yaml")  # fmt: skip
    for wrong in ("410fd083", "0x410fd08", "0x410fdzz3"):
        with pytest.raises(LiteconvError, match="t.yaml: midr: .*(MIDR_EL1|hexadecimal)"):
            target_from_dict({**base, "arch": "aarch64", "midr": wrong}, "t.yaml")
    with pytest.raises(LiteconvError, match="only an aarch64 target"):
        target_from_dict({**base, "arch": "armv7l", "midr": "0x410fd034"}, "t.yaml")


def test_the_guest_is_shown_the_boards_core_and_nothing_else_of_the_root_changes(tmp_path):
    """``/proc/cpuinfo`` as 64-bit Linux prints it for the MIDR's fields (Arm's encoding:
    implementer [31:24], variant [23:20], architecture [19:16], part [15:4], revision [3:0]);
    the board's root links every other entry of the user space's."""
    import os

    from liteconv.emulate import userspace

    def fields(entry):  # one processor's "name<tab>: value" lines
        return {
            k.strip(): v.strip() for k, v in (line.split(":", 1) for line in entry.splitlines())
        }

    text = userspace.cpuinfo_text("0x517F804D")  # Snapdragon 855's Kryo 4xx Gold (r7p13)
    entries = [e for e in text.split("\n\n") if e]
    assert len(entries) >= max(os.cpu_count() or 1, 1)
    kryo = fields(entries[1])
    assert kryo["processor"] == "1"
    assert (kryo["CPU implementer"], kryo["CPU variant"], kryo["CPU part"],
            kryo["CPU revision"]) == ("0x51", "0x7", "0x804", "13")  # fmt: skip
    assert fields(userspace.cpuinfo_text("0x410fd083").split("\n\n")[0])["CPU part"] == "0xd08"
    root = tmp_path / "root"
    for folder in ("usr/bin", "proc", "etc"):
        (root / folder).mkdir(parents=True)
    (root / "usr/bin/python3.11").write_text("#")
    (root / "lib").symlink_to("usr/lib")
    board = userspace.board_root(root, "0x410fd034", tmp_path / "board")
    assert sorted(p.name for p in board.iterdir()) == ["etc", "lib", "proc", "usr"]
    assert (board / "usr/bin/python3.11").read_text() == "#"
    assert os.readlink(board / "lib") == str(root.resolve() / "lib")
    assert "CPU part\t: 0xd03" in (board / "proc/cpuinfo").read_text()
    assert not (root / "proc/cpuinfo").exists()  # the shared user space is untouched


def test_a_transferred_constant_equals_its_source_on_the_same_cycle_model():
    """A target whose constant says 'transferred from X' runs X's core, scheduling model and
    LLVM and has X's constant (refitting X must move it too); every other shipped target
    with emulation says where its constant came from."""
    import re

    from liteconv.device.targets import list_targets, load_target

    transferred = 0
    for name in list_targets():
        target = load_target(name)
        if not target.core:
            continue
        assert target.cycle_scale_source, name
        found = re.match(r"transferred from ([\w-]+)", target.cycle_scale_source)
        if found:
            source = load_target(found.group(1))
            assert (target.core, target.llvm) == (source.core, source.llvm), name
            assert target.cycle_scale == source.cycle_scale, name
            transferred += 1
    assert transferred >= 2  # raspberry-pi-zero-2, single-core-embedded


def test_one_board_two_oses_one_memory_system():
    """The 32-bit Pi 3 target is the 64-bit one's board (BCM2837B0) under another OS: the
    same clock, caches and DRAM figures (what all threads draw together is chosen per
    target: see the 32-bit YAML)."""
    from liteconv.device.targets import load_target

    a64, a32 = load_target("raspberry-pi-3"), load_target("raspberry-pi-3-32bit")
    for field in ("l1d_kb", "l1d_ways", "l2_kb", "l2_ways", "l2_policy", "l2_shared",
                  "dram_mb_s", "dram_peak_mb_s", "clock_mhz"):  # fmt: skip
        assert getattr(a32, field) == getattr(a64, field), field


def test_plugin_output_parses_and_the_plugin_is_built_once(tmp_path):
    text = "region 0 9\ntb 400088 4 1 017d80d263040091210400f1c1ffff54\nregion 1 3\ntotal 20\n"
    regions, total = counts.parse_plugin_output(text)
    assert total == 20 and regions[1] == {"instructions": 3, "blocks": []}
    assert regions[0]["blocks"][0][:3] == (0x400088, 4, 1) and len(regions[0]["blocks"][0][3]) == 16
    first = tools.build_plugin(tmp_path)
    stamp = first.stat().st_mtime_ns
    assert tools.build_plugin(tmp_path) == first and first.stat().st_mtime_ns == stamp


def test_cycles_of_a_block_come_from_llvm_mca_and_the_cold_rest_at_the_hot_cpi():
    loop = bytes.fromhex("63040091210400f1c1ffff54")  # add; subs; b.ne: 1 cycle a turn on A72
    cold = bytes.fromhex("63040091")
    blocks = [(0x1000, 3, 1000, loop), (0x2000, 1, 1, cold)]
    cyc, detail = cycles.estimate_cycles(blocks, "cortex-a72")
    per_turn = cycles._mca({0: cycles.disassemble(loop)}, "cortex-a72")[0]  # noqa: SLF001
    assert 0.9 <= per_turn <= 1.5  # a dependent add/subs chain: about a cycle a turn
    assert detail["hot_blocks"] == 1 and detail["instructions"] == 3001
    assert cyc == pytest.approx(1000 * per_turn + 1 * per_turn / 3, rel=1e-9)
    # an in-order core is not faster on the same block
    assert cycles.estimate_cycles(blocks, "cortex-a53")[0] >= cyc * 0.99
    # blocks disassembled in one llvm-mc run split back exactly as one by one
    assert cycles.disassemble_many([loop, cold, loop]) == [
        cycles.disassemble(loop),
        cycles.disassemble(cold),
        cycles.disassemble(loop),
    ]
    assert len(cycles.disassemble(loop)) == 3
    # labelled blocks: each label's instructions and cycles, adding up to the whole
    cyc2, labelled = cycles.estimate_cycles(blocks, "cortex-a72", kinds=["parallel", "serial"])
    assert cyc2 == cyc and labelled["parts"]["parallel"]["instructions"] == 3000
    assert labelled["parts"]["serial"]["cycles"] == round(per_turn / 3)


# 3 loads, 8 FMLA by element, 2 SDOT, 1 subs (llvm-mc -triple=aarch64 -mattr=+dotprod)
SIMD_BLOCK = bytes.fromhex(
    "0004c13c2104c13c4204c13c1010814f1110a14f1218814f1318a14f5410814f5510a14f5618814f5718a14f"
    "1894824e3994824e630400f1"
)


def test_a76_class_cores_have_their_own_pipeline_in_llvm_19():
    """LLVM 16 schedules every big core like a Cortex-A72; LLVM 19's neoverse-n1 (the
    A76's twin) issues the block's 10 vector multiply-adds on two 128-bit pipes, so it
    runs it in a bit more than half the A72's cycles; the in-order A55 is slowest."""
    blocks = [(0x1000, 14, 100, SIMD_BLOCK)]
    a72 = cycles.estimate_cycles(blocks, "cortex-a72", 16)[0]
    assert cycles.estimate_cycles(blocks, "neoverse-n1", 16)[0] == pytest.approx(a72)
    assert cycles.estimate_cycles(blocks, "cortex-a72", 19)[0] == pytest.approx(a72)
    n1 = cycles.estimate_cycles(blocks, "neoverse-n1", 19)[0]
    a55 = cycles.estimate_cycles(blocks, "cortex-a55", 19)[0]
    assert 8 * 100 <= a72 <= 10 * 100  # 10 multiply-adds on one FP pipe: 8-10 cycles a turn
    assert 0.45 * a72 <= n1 <= 0.65 * a72, (a72, n1)
    assert a55 > 1.5 * a72, (a72, a55)


# XNNPACK's Cortex-A53 GEMM pattern: 8 FMLA by element, a 64-bit load slipped between them
# (two as d-registers, two as x-registers moved into the upper halves), subs, b.ne
A53_GEMM_BLOCK = bytes.fromhex(
    "1411804f648440fc3511a04f688440f85611814f858440fc7711a14f898440f89811824f041d184e"
    "b911a24f251d184eda11834ffb11a34f004000f101feff54"
)


def test_a53_boards_are_not_charged_in_order_write_back_for_loads_between_fmlas():
    """LLVM's cortex-a53 model keeps every write-back in order (no RetireOOO), so each load
    an A53 kernel slips between FMLAs waits for the FMLA before it: about 8x the block's
    resource bound of 8 cycles a turn. The A53 boards take LLVM 19's cortex-a55 (in order,
    dual issue, FP multiply-accumulates RetireOOO) and still run the A53's kernels."""
    from liteconv.device.targets import list_targets, load_target
    from liteconv.emulate.estimate import accuracy_cell

    blocks = [(0x1000, 16, 100, A53_GEMM_BLOCK)]
    a53 = cycles.estimate_cycles(blocks, "cortex-a53", 19)[0]
    a55 = cycles.estimate_cycles(blocks, "cortex-a55", 19)[0]
    assert a53 >= 6 * 8 * 100, a53  # the FMLA pipe needs 8 cycles a turn
    assert 8 * 100 <= a55 <= 2.5 * 8 * 100, a55
    a53_boards = [t for t in map(load_target, list_targets()) if t.midr[-4:-1] == "d03"]
    assert {t.name for t in a53_boards} >= {"raspberry-pi-3", "raspberry-pi-zero-2"}
    for board in a53_boards:
        assert (board.core, board.llvm, board.qemu_cpu) == ("cortex-a55", 19, "cortex-a53")
    # `liteconv targets` shows both: the core qemu runs (the A53's ISA and kernels) and the
    # model its cycles come from
    listed = CliRunner().invoke(cli, ["targets"])
    (row,) = [ln for ln in listed.output.splitlines() if ln.startswith("raspberry-pi-3 ")]
    assert "cortex-a53 @ 1400 MHz, cycles: cortex-a55 (LLVM 19)" in row, row
    # ...and how far its estimates were off, from its YAML
    assert accuracy_cell(load_target("raspberry-pi-3")) in row, row


def test_emulate_without_the_tools_is_a_one_line_error(tmp_path, monkeypatch, exported_run):
    monkeypatch.setattr(tools, "LLVM_DIRS", {})
    monkeypatch.setattr(tools.shutil, "which", lambda *_a, **_k: None)
    monkeypatch.setattr(tools.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(tools.Path, "is_file", lambda self: False)
    with pytest.raises(LiteconvError, match="sudo apt-get install qemu-user"):
        tools.qemu_user()
    with pytest.raises(LiteconvError, match="^qemu-arm .*sudo apt-get install qemu-user"):
        tools.qemu_user(arch="armv7l")  # a 32-bit target's
    with pytest.raises(LiteconvError, match="sudo apt-get install llvm-16"):
        tools.llvm_tool("llvm-mca")
    with pytest.raises(LiteconvError, match="llvm-mca of LLVM 19 .*'sudo apt-get install llvm-19'"):
        tools.llvm_tool("llvm-mca", 19)
    with pytest.raises(LiteconvError, match="llvm: 17 is not a supported LLVM version"):
        tools.llvm_tool("llvm-mca", 17)
    monkeypatch.undo()
    monkeypatch.setattr(tools, "qemu_user", lambda install=True, arch="": (_ for _ in ()).throw(
        LiteconvError("qemu-aarch64 (Debian's qemu-user) not found: run 'sudo apt-get install qemu-user'")))  # fmt: skip
    model = exported_run / "export" / "fp32.tflite"
    result = CliRunner().invoke(cli, ["bench", str(model), "--runs", "2", "--threads", "1",
                                      "--emulate", "raspberry-pi-4", "--emulate-cache",
                                      str(tmp_path / "cache")])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1].startswith("Error: qemu-aarch64")


def _conv_stack(tmp_path):
    """Four stacked 3×3 convolutions, C = 32 at 14×14, as fp32 and int8 TFLite."""
    from liteconv.compat import keras
    from liteconv.export.convert import to_tflite

    keras.utils.set_random_seed(0)
    inputs = keras.Input((14, 14, 32))
    x = inputs
    for i in range(4):
        x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name=f"c{i}")(x)
    model = keras.Model(inputs, x)
    data = np.random.default_rng(0).uniform(size=(8, 14, 14, 32)).astype("float32")
    paths = {}
    for mode in ("fp32", "int8"):
        paths[mode] = tmp_path / f"stack-{mode}.tflite"
        paths[mode].write_bytes(to_tflite(model, mode=mode, representative_data=data,
                                          num_calibration=8))  # fmt: skip
    return paths


@pytest.mark.large
def test_counts_repeat_whatever_the_shell_and_wherever_the_model_lies(tmp_path, monkeypatch):
    """The guest sees the same environment and paths of one length however the host's shell
    is set and wherever the model and cache lie, so its stack sits at the same addresses and
    the cache model's misses repeat (before: a 3 kB variable moved MobileNet v1 0.25/128's
    L1D misses on the Pi 4 by 2.6 %)."""
    from liteconv.compat import keras
    from liteconv.device.targets import load_target
    from liteconv.emulate.estimate import estimate_models
    from liteconv.export.convert import to_tflite

    _need_tools()
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNet(alpha=0.25, input_shape=(128, 128, 3), weights=None)
    near = tmp_path / "v1.tflite"
    near.write_bytes(to_tflite(model, mode="fp32"))
    far = tmp_path / ("a-folder-with-a-long-name" * 4) / "the-same-model.tflite"
    far.parent.mkdir()
    far.write_bytes(near.read_bytes())
    target = load_target("raspberry-pi-4")
    records = []
    for i, (path, padding) in enumerate(((near, ""), (far, "x" * 3000))):
        monkeypatch.setenv("LITECONV_TEST_PADDING", padding)
        (record,) = estimate_models([str(path)], target, cache=tmp_path / f"c{i}",
                                    arm64_cache=ARM64_CACHE)  # fmt: skip
        records.append(record)
    assert records[0]["memory"]["l1_misses"] > 0
    for key in ("instructions_per_invoke", "memory", "dispatches", "estimated_cycles"):
        assert records[0][key] == records[1][key], key


@pytest.mark.large
def test_each_board_runs_its_own_cores_kernels_and_counts_repeat(tmp_path):
    """XNNPACK picks the kernels it picks on the board: the guest is shown the board's core
    (``midr``), so a Cortex-A72 runs XNNPACK's 4x8 fp32 kernels tuned for it, an A53 its
    in-order ones and an A76 the 6x8 ones; shown the host's x86 /proc/cpuinfo it would run
    the generic ones. The A76 has dot-product int8 kernels, the A72 not. Counting twice
    gives the same."""
    import dataclasses

    from liteconv.device.targets import load_target
    from liteconv.emulate.estimate import estimate_models

    _need_tools()
    paths = _conv_stack(tmp_path)
    models = [str(paths["fp32"]), str(paths["int8"])]
    pi4 = estimate_models(models, load_target("raspberry-pi-4"), cache=tmp_path / "a",
                          arm64_cache=ARM64_CACHE)  # fmt: skip
    again = estimate_models(models, load_target("raspberry-pi-4"), cache=tmp_path / "b",
                            arm64_cache=ARM64_CACHE)  # fmt: skip
    pi5 = estimate_models(models, load_target("raspberry-pi-5"), cache=tmp_path / "c",
                          arm64_cache=ARM64_CACHE)  # fmt: skip
    pi3 = estimate_models(models[:1], load_target("raspberry-pi-3"), cache=tmp_path / "d",
                          arm64_cache=ARM64_CACHE)  # fmt: skip
    host_cpuinfo = dataclasses.replace(load_target("raspberry-pi-4"), midr="")
    generic = estimate_models(models[:1], host_cpuinfo, cache=tmp_path / "e",
                              arm64_cache=ARM64_CACHE)  # fmt: skip
    assert all(r["check"]["passed"] for r in pi4 + pi5 + pi3 + generic)

    def kernel(record):  # the function that ran most: the convolutions' micro-kernel
        return next(iter(record["cycle_model"]["kernels"]))

    # XNNPACK's per-core choices (its gemm config): the 3x3 convolutions run an igemm kernel
    assert kernel(pi4[0]).startswith("xnn_f32_igemm_minmax_ukernel_4x8__"), kernel(pi4[0])
    assert "cortex_a53" in kernel(pi3[0]) and "6x8" in kernel(pi3[0]), kernel(pi3[0])
    assert kernel(pi5[0]).startswith("xnn_f32_igemm_minmax_ukernel_6x8__"), kernel(pi5[0])
    assert "cortex_a" not in kernel(generic[0]), kernel(generic[0])
    assert len({kernel(r[0]) for r in (pi4, pi3, pi5, generic)}) == 4
    assert "neondot" in kernel(pi5[1]) and "neondot" not in kernel(pi4[1])
    assert [r["instructions_per_invoke"] for r in pi4] == [
        r["instructions_per_invoke"] for r in again
    ]
    assert [r["estimated_cycles"] for r in pi4] == [r["estimated_cycles"] for r in again]
    # the runtime's symbols split each invoke: XNNPACK's tasks and micro-kernels (parallel)
    # hold nearly all of a conv stack's instructions; each of the 4 convolutions dispatches
    # to the thread pool at least once; the parts add up to the whole
    for r in pi4:
        parts = r["cycle_model"]["parts"]
        total = parts["serial"]["instructions"] + parts["parallel"]["instructions"]
        assert total == pytest.approx(r["instructions_per_invoke"], rel=1e-6)
        assert parts["parallel"]["instructions"] > 0.9 * total, parts
        assert parts["serial"]["cycles"] + parts["parallel"]["cycles"] == pytest.approx(
            r["estimated_cycles"], rel=1e-3
        )
        assert 4 <= r["dispatches"] <= 40, r["dispatches"]
    assert [r["dispatches"] for r in pi4] == [r["dispatches"] for r in again]
    fp32_a72, int8_a72 = (r["instructions_per_invoke"] for r in pi4)
    fp32_a76, int8_a76 = (r["instructions_per_invoke"] for r in pi5)
    assert abs(fp32_a72 - fp32_a76) > 1e-3 * fp32_a72  # other kernels (4x8, 6x8 tiles)
    assert int8_a76 < 0.7 * int8_a72  # SDOT does 4 multiply-adds per lane
    # fp32 FMA kernels cost fewer cycles per instruction on the A76's two ASIMD pipes (LLVM
    # 19's neoverse-n1) than on the A72's: the cores differ in CPI, not only in counts and clock
    cpi_a72, cpi_a76 = (r[0]["cycle_model"]["hot_cpi"] for r in (pi4, pi5))
    assert pi5[0]["cycle_model"]["mca_cpu"] == "neoverse-n1" and pi5[0]["llvm"] == 19
    assert cpi_a76 < 0.8 * cpi_a72, (cpi_a72, cpi_a76)
    assert fp32_a72 > 4 * 14 * 14 * 9 * 32 * 32 / 4  # at least a 4-lane FMA per 4 MACs

    # a cached estimate runs nothing
    def no_emulation(*_a, **_k):
        raise AssertionError("emulated again although cached")

    from liteconv.emulate import estimate as est

    original = est.counts.count_models
    est.counts.count_models = no_emulation
    try:
        cached = estimate_models(models, load_target("raspberry-pi-4"), cache=tmp_path / "a",
                                 arm64_cache=ARM64_CACHE)  # fmt: skip
    finally:
        est.counts.count_models = original
    assert [r["estimated_ms"] for r in cached] == [r["estimated_ms"] for r in pi4]
    # the memory counts repeat too; warm caches hold this 150 KB stack: almost no DRAM
    assert [r["memory"] for r in pi4] == [r["memory"] for r in again]
    weights_fp32 = 4 * 9 * 32 * 32 * 4
    assert all(0 <= r["dram_bytes"] < 0.05 * weights_fp32 for r in pi4), [r["memory"] for r in pi4]
    assert all(r["memory_ms"] < 0.05 * r["compute_ms"] for r in pi4)


@pytest.mark.large
def test_a_32bit_board_runs_the_armv7_runtime_and_counts_repeat(tmp_path):
    """raspberry-pi-3-32bit: the conv stack runs in the 32-bit user space (PyPI's
    tflite-runtime armv7l under qemu-arm) and matches the host; another instruction set
    than the 64-bit Pi 3's (A32 NEON has half A64's vector registers: smaller kernel tiles,
    more instructions); one cycle per instruction; one dispatch per computing operator; the
    invoke split by the 32-bit library's own symbols (its GEMMs, Eigen's in float and
    gemmlowp's in int8, on every thread; the interpreter on one)."""
    from liteconv.device.targets import load_target
    from liteconv.emulate.estimate import estimate_models

    _need_tools()
    paths = _conv_stack(tmp_path)
    models = [str(paths["fp32"]), str(paths["int8"])]
    target = load_target("raspberry-pi-3-32bit")
    a32 = estimate_models(models, target, cache=tmp_path / "a", arm64_cache=ARM64_CACHE)
    again = estimate_models(models, target, cache=tmp_path / "b", arm64_cache=ARM64_CACHE)
    a64 = estimate_models(models, load_target("raspberry-pi-3"), cache=tmp_path / "c",
                          arm64_cache=ARM64_CACHE)  # fmt: skip
    assert all(r["check"]["passed"] for r in a32 + a64), [r["check"] for r in a32]
    assert [r["instructions_per_invoke"] for r in a32] == [
        r["instructions_per_invoke"] for r in again
    ]
    assert [r["memory"] for r in a32] == [r["memory"] for r in again]
    for r in a32:
        assert r["runtime"].startswith("tflite-runtime") and r["llvm"] is None
        assert r["estimated_cycles"] == r["instructions_per_invoke"]
        assert r["memory"]["loads"] > 0
    assert [r["dispatches"] for r in a32] == [4, 6]  # + QUANTIZE, DEQUANTIZE at int8
    for r, gemm in zip(a32, ("Eigen", "gemmlowp")):
        parts = r["cycle_model"]["parts"]
        serial, parallel = parts["serial"]["cycles"], parts["parallel"]["cycles"]
        assert serial > 0 and parallel > 0.5 * r["instructions_per_invoke"]
        assert serial + parallel == r["instructions_per_invoke"]
        assert any(gemm in name for name in r["cycle_model"]["kernels"]), r["cycle_model"]
    assert a32[0]["instructions_per_invoke"] > 1.2 * a64[0]["instructions_per_invoke"]


@pytest.mark.large
def test_builtin_kernels_are_emulated_when_xnnpack_is_off(tmp_path):
    """``bench --no-xnnpack --emulate``: the emulated runtime runs its builtin kernels
    (other instructions than XNNPACK's, outputs still the host's), split by their own
    names (ruy's GEMM on every thread, im2col on the calling one), no pthreadpool
    dispatch; cached apart from XNNPACK's; bench's records get the estimate of the
    kernels they were timed with."""
    from liteconv.device.targets import load_target
    from liteconv.emulate.estimate import estimate_models, time_ms
    from liteconv.emulate.report import add_estimates

    _need_tools()
    paths = _conv_stack(tmp_path)
    models = [str(paths["fp32"]), str(paths["int8"])]
    pi4 = load_target("raspberry-pi-4")
    cache = tmp_path / "cache"
    xnn = estimate_models(models, pi4, cache=cache, arm64_cache=ARM64_CACHE)
    builtin = estimate_models(models, pi4, cache=cache, arm64_cache=ARM64_CACHE, xnnpack=False)
    assert all(r["check"]["passed"] for r in xnn + builtin), [r["check"] for r in builtin]
    assert len(list(cache.glob("*.json"))) == 4  # one entry per model and kernel setting
    for x, b in zip(xnn, builtin):
        assert "builtin kernels" in b["runtime"] and "builtin" not in x["runtime"]
        assert b["xnnpack"] is False and x["xnnpack"] is True
        # other kernels: the counts differ by more than noise (counts repeat exactly)
        ratio = b["instructions_per_invoke"] / x["instructions_per_invoke"]
        assert abs(ratio - 1) > 0.02, ratio
        assert b["dispatches"] == 0 and x["dispatches"] >= 4
        parts = b["cycle_model"]["parts"]
        total = parts["serial"]["instructions"] + parts["parallel"]["instructions"]
        assert total == pytest.approx(b["instructions_per_invoke"], rel=1e-6)
        # ruy's kernels hold most of a 3x3 conv stack's work; im2col runs on one thread
        assert 0.5 * total < parts["parallel"]["instructions"] < total, parts
        four = time_ms(pi4, b, 4)
        assert four["sync_ms"] == 0 and four["estimated_ms"] < b["estimated_ms"]
    # the 32-bit board: its armv7 wheel has no XNNPACK, so the same builtin kernels either
    # way (the same count); XNNPACK off drops only the dispatch term
    a32 = load_target("raspberry-pi-3-32bit")
    both = [estimate_models(models[:1], a32, cache=cache, arm64_cache=ARM64_CACHE, xnnpack=x)[0]
            for x in (True, False)]  # fmt: skip
    assert all(r["check"]["passed"] for r in both)
    assert both[0]["dispatches"] == 4 and both[1]["dispatches"] == 0
    assert both[0]["instructions_per_invoke"] == both[1]["instructions_per_invoke"]
    assert "XNNPACK off" in both[1]["runtime"] and "no XNNPACK" in both[0]["runtime"]
    assert time_ms(a32, both[1], 4)["sync_ms"] == 0 < time_ms(a32, both[0], 4)["sync_ms"]
    records = [{"file": m, "model": Path(m).stem, "mode": mode, "threads": 4, "xnnpack": on,
                "p50_ms": 1.0} for m, mode in zip(models, ("fp32", "int8"))
               for on in (True, False)]  # fmt: skip
    tables = add_estimates(records, models, ["raspberry-pi-4"], cache=str(cache))
    assert len(tables) == 2 and "builtin kernels (XNNPACK off)" in tables[1]
    by = {(r["file"], r["xnnpack"]): r for r in records}
    for x, b in zip(xnn, builtin):
        for on, est in ((True, x), (False, b)):
            got = by[(est["file"], on)]["estimates"]
            assert len(got) == 1 and got[0]["xnnpack"] is on
            assert got[0]["instructions_per_invoke"] == est["instructions_per_invoke"]


@pytest.mark.large
def test_weights_larger_than_the_l2_stream_from_dram_every_invoke(tmp_path):
    """A 1024 -> 512 dense layer: 2 MB of fp32 weights do not fit the Pi 4's 1 MB L2 and
    come from DRAM on every invoke; as int8 (0.5 MB) they stay in it."""
    from liteconv.compat import keras
    from liteconv.device.targets import load_target
    from liteconv.emulate.estimate import estimate_models
    from liteconv.export.convert import to_tflite

    _need_tools()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((1024,))
    model = keras.Model(inputs, keras.layers.Dense(512, name="fc")(inputs))
    data = np.random.default_rng(0).uniform(size=(8, 1024)).astype("float32")
    files = []
    for mode in ("fp32", "int8"):
        files.append(tmp_path / f"fc-{mode}.tflite")
        files[-1].write_bytes(to_tflite(model, mode=mode, representative_data=data,
                                        num_calibration=8))  # fmt: skip
    fp32, int8 = estimate_models([str(f) for f in files], load_target("raspberry-pi-4"),
                                 cache=tmp_path / "c", arm64_cache=ARM64_CACHE)  # fmt: skip
    weights = 1024 * 512 * 4
    assert fp32["check"]["passed"] and int8["check"]["passed"]
    assert fp32["dram_bytes"] >= 0.5 * weights, fp32["memory"]
    assert int8["dram_bytes"] < 0.1 * weights, int8["memory"]
    assert fp32["memory_ms"] > int8["memory_ms"]
    assert fp32["estimated_ms_threads"]["4"] < fp32["estimated_ms"]  # compute splits


@pytest.mark.large
def test_every_input_is_set_and_any_output_shape_is_checked(tmp_path):
    """A model with two inputs (the second one matters) and one with a feature-map output:
    the host reference sets both inputs (against numpy with the layer's weights), and the
    emulated run matches it, so both get an estimate."""
    from liteconv.compat import keras
    from liteconv.device.targets import load_target
    from liteconv.emulate.estimate import estimate_models, host_reference
    from liteconv.export.convert import to_tflite

    _need_tools()
    keras.utils.set_random_seed(0)
    a, b = keras.Input((16,), name="a"), keras.Input((24,), name="b")
    dense = keras.layers.Dense(3, name="fc")
    two = keras.Model([a, b], dense(keras.layers.Concatenate()([a, b])))
    image = keras.Input((12, 12, 3))
    fmap = keras.Model(image, keras.layers.Conv2D(5, 3, padding="same")(image))
    files = [tmp_path / "two-inputs.tflite", tmp_path / "feature-map.tflite"]
    for file, model in zip(files, (two, fmap)):
        file.write_bytes(to_tflite(model, mode="fp32"))

    ref = host_reference(files[0])
    by_width = {x.shape[-1]: x for x in ref["inputs"]}
    assert sorted(by_width) == [16, 24] and by_width[24].any()
    kernel, bias = dense.get_weights()
    expected = np.concatenate([by_width[16], by_width[24]], axis=1) @ kernel + bias
    np.testing.assert_allclose(ref["output"], expected, rtol=1e-5, atol=1e-5)

    records = estimate_models([str(f) for f in files], load_target("raspberry-pi-4"),
                              cache=tmp_path / "c", arm64_cache=ARM64_CACHE)  # fmt: skip
    for record in records:
        assert record["check"]["passed"], record["check"]
        assert record["estimated_ms"] > 0


def test_a_detector_passes_on_its_class_scores_and_fails_on_other_inputs_scores():
    """The detector check (made-up scores): Pearson's r against numpy's; agreement within
    the tolerance passes whatever the control; beyond it, a run passes only where its r is at
    least halfway from the control's to 1; a constant tensor is handled; a failed check's
    words for the warning."""
    from liteconv.emulate.estimate import check_words, compare_detector, pearson

    rng = np.random.default_rng(0)
    host = rng.uniform(0, 1, (1, 500)).astype("float32")
    other = (0.5 * host + 0.5 * rng.uniform(0, 1, host.shape)).astype("float32")  # r ~ 0.7
    r_other = np.corrcoef(host.ravel(), other.ravel())[0, 1]
    assert pearson(other, host) == pytest.approx(r_other, abs=1e-9)
    assert pearson(np.ones(4), np.ones(4)) == 1.0 and pearson(np.ones(4), np.arange(4)) == 0.0
    step = 1 / 1024  # tolerance: 32 steps, 0.03
    within = np.clip(host + rng.integers(-3, 4, host.shape) * step, 0, 1)
    assert compare_detector(within, host, host, step)["passed"]  # within 32 steps everywhere
    needed = (1 + r_other) / 2
    outcomes = []
    for weight in (0.1, 0.3, 0.4, 0.9):  # r 0.99, 0.92, 0.83, 0.13; needed 0.85
        mixed = (1 - weight) * host + weight * rng.uniform(0, 1, host.shape)
        r = np.corrcoef(host.ravel(), mixed.ravel())[0, 1]
        check = compare_detector(mixed, host, other, step)
        assert check["max_abs_diff"] > check["tolerance"]
        assert check["passed"] == (r >= needed), (weight, r, needed)
        assert check["needed_correlation"] == pytest.approx(needed, abs=1e-4)
        outcomes.append(check["passed"])
    assert outcomes == [True, True, False, False]
    failed = compare_detector(other, host, other, step)
    assert not failed["passed"]
    assert check_words(failed) == (f"max |diff| {failed['max_abs_diff']:.3g}, tolerance 0.0313; "
                                   f"r {r_other:.2f}, needed 0.85 (other inputs: {r_other:.2f})")  # fmt: skip
    assert compare_detector(host + 1e-5, host, other, 0.0)["passed"]  # float: 1e-4
    assert not compare_detector(host + 1e-3 * rng.standard_normal(host.shape) + 0.3, host,
                                host, 0.0)["passed"]  # fmt: skip


@pytest.mark.large
def test_a_model_the_emulated_runtime_cannot_run_is_named_and_the_others_go_on(tmp_path):
    """tflite-runtime 2.14 (the 32-bit board's) has no kernel for a per-channel
    dynamic-range FULLY_CONNECTED (version 12): that model gets a warning naming the
    operator and no estimate, uncached; the LSTM beside it still gets one. The LSTM keeps
    state between invokes (its outputs after three invokes are not the first's): the
    emulated output checked is the first invoke's, as the host's reference."""
    from liteconv.compat import keras
    from liteconv.device.targets import load_target
    from liteconv.emulate.estimate import estimate_models, no_estimate
    from liteconv.export.convert import to_tflite

    _need_tools()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64,))
    dense = keras.Model(inputs, keras.layers.Dense(32)(keras.layers.Dense(64)(inputs)))
    seq = keras.Input((6, 4), batch_size=1)
    lstm = keras.Model(seq, keras.layers.Dense(3)(keras.layers.LSTM(8)(seq)))
    files = [tmp_path / "dense-dynamic.tflite", tmp_path / "lstm.tflite"]
    files[0].write_bytes(to_tflite(dense, mode="dynamic"))
    files[1].write_bytes(to_tflite(lstm, mode="fp32"))
    said = []
    cache = tmp_path / "c"
    a32 = estimate_models([str(f) for f in files], load_target("raspberry-pi-3-32bit"),
                          cache=cache, arm64_cache=ARM64_CACHE, echo=said.append)  # fmt: skip
    assert "FULLY_CONNECTED" in a32[0]["error"] and no_estimate(a32[0])
    assert a32[0]["estimated_ms"] is None and a32[0]["instructions_per_invoke"] is None
    warned = [line for line in said if line.startswith("warning: dense-dynamic.tflite")]
    assert len(warned) == 1 and "FULLY_CONNECTED" in warned[0], said
    assert a32[1]["check"]["passed"] and a32[1]["estimated_ms"] > 0, a32[1]["check"]
    assert len(list(cache.glob("*.json"))) == 1  # the LSTM's: the failure is not kept
    a64 = estimate_models([str(f) for f in files], load_target("raspberry-pi-4"),
                          cache=tmp_path / "d", arm64_cache=ARM64_CACHE)  # fmt: skip
    assert all(r["check"]["passed"] and r["estimated_ms"] > 0 for r in a64), a64


def _small_cnn():
    from liteconv.compat import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", name="c1")(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn1")(x))
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="out")(x))
    return model


@pytest.mark.large
def test_profile_emulate_estimates_every_block_and_the_sum_predicts_the_whole(tmp_path):
    """profile --emulate: every block converted alone and estimated on the Pi 4's core; the
    sum of the blocks (less the per-invoke cost) against the whole model's own estimate."""
    import json

    _need_tools()
    path = tmp_path / "cnn.keras"
    _small_cnn().save(path)
    result = CliRunner().invoke(cli, ["profile", str(path), "--mode", "int8", "--emulate",
                                      "raspberry-pi-4", "--emulate-cache", str(tmp_path / "c"),
                                      "--out", str(tmp_path / "prof")])  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "prof.json").read_text())
    res = doc["modes"]["int8"]
    assert res["emulated"]["core"] == "cortex-a72" and res["emulated"]["target"] == "raspberry-pi-4"
    assert [b["block"] for b in res["blocks"]][:2] == ["c1", "pool"]
    assert all(b["p50_ms"] > 0 for b in res["blocks"])
    by_name = {b["block"]: b for b in res["blocks"]}
    assert by_name["c2"]["p50_ms"] > by_name["gap"]["p50_ms"]  # 147k MACs against a mean
    assert abs(res["error_pct"]) < 25, res  # blocks alone add up to the whole model
    text = (tmp_path / "prof.md").read_text()
    assert "**Estimated** for raspberry-pi-4" in text and "estimated ms" in text


@pytest.mark.large
def test_budget_plan_on_the_emulated_board(tmp_path):
    """flatten --budget-ms --target raspberry-pi-4 --emulate plans on estimates: the parent's
    predicted latency is its emulated profile's; a budget at the fastest reachable plan
    decomposes, one above the parent keeps every layer."""
    from liteconv.bench.budget import plan_for_budget
    from liteconv.bench.latency import Emulated
    from liteconv.device.targets import load_target

    _need_tools()
    model = _small_cnn()
    images = np.random.default_rng(0).uniform(size=(32, 16, 16, 1)).astype("float32")
    board = load_target("raspberry-pi-4")
    loose = plan_for_budget(model, 1e3, calibration=images, mode="int8", source=Emulated(board),
                            echo=lambda *_: None)  # fmt: skip
    whole = Emulated(board).profile(model, calibration=images, modes=["int8"])["int8"]
    assert whole["emulated"]["core"] == board.core and whole["measured"] == 0
    assert loose.baseline_ms == pytest.approx(whole["predicted_ms"], rel=1e-6)
    assert set(loose.choices.values()) == {"keep"}
    tight = plan_for_budget(model, loose.fastest_ms * 1.0001, calibration=images, mode="int8",
                            source=Emulated(board), echo=lambda *_: None)  # fmt: skip
    assert tight.predicted_ms <= loose.fastest_ms * 1.0001 < loose.baseline_ms
    assert any(c != "keep" for c in tight.choices.values())


def test_flatten_emulate_needs_a_budget_and_a_board(digits_run, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["flatten", str(digits_run), "--emulate", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--emulate is for --budget-ms" in result.output
    result = runner.invoke(cli, ["flatten", str(digits_run), "--budget-ms", "1", "--emulate",
                                 "--out", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 2 and "give --target T" in result.output
    assert not any(tmp_path.iterdir())


@pytest.mark.large
def test_report_puts_host_measured_board_estimated_and_board_measured_side_by_side(
    exported_run, tmp_path
):
    import json

    from liteconv.device.targets import load_target
    from liteconv.emulate.estimate import estimate_models

    _need_tools()
    board = {"where": "raspberrypi", "records": [
        {"model": "digits_quick/fp32", "threads": 1, "p50_ms": 0.5},
        {"model": "digits_quick/int8", "threads": 1, "p50_ms": 0.2},
    ]}  # fmt: skip
    bench = tmp_path / "pi.json"
    bench.write_text(json.dumps(board))
    result = CliRunner().invoke(cli, ["report", str(exported_run), "--runs", "3", "--bench",
                                      str(bench), "--emulate", "raspberry-pi-4",
                                      "--emulate-cache", str(tmp_path / "c"),
                                      "--out", str(tmp_path / "report")])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads((tmp_path / "report.json").read_text())}
    direct = estimate_models([rows["fp32"]["file"], rows["int8"]["file"]],
                             load_target("raspberry-pi-4"), cache=tmp_path / "c2")  # fmt: skip
    for name, rec in zip(("fp32", "int8"), direct):
        row = rows[name]
        assert row["p50_ms"] > 0 and row["p50_ms@raspberrypi"] in (0.5, 0.2)
        assert row["estimated_ms@raspberry-pi-4"] == rec["estimated_ms"] > 0
    text = (tmp_path / "report.md").read_text()
    assert "p50 ms (host)" in text and "p50 ms raspberrypi" in text
    assert "estimated ms raspberry-pi-4" in text and "not measured" in text


@pytest.mark.large
def test_bundle_readme_says_what_to_expect_on_the_board(exported_run, tmp_path):
    from liteconv.deploy.bundle import bundle_files
    from liteconv.device.targets import load_target
    from liteconv.emulate.estimate import estimate_models

    _need_tools()
    result = CliRunner().invoke(cli, ["bundle", str(exported_run), "--target", "raspberry-pi-5",
                                      "--emulate", "--emulate-cache", str(tmp_path / "c"),
                                      "-o", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 0, result.output
    (path,) = tmp_path.glob("*.tar.gz")
    readme = bundle_files(path)["README.md"].decode()
    assert "What to expect on this board (estimated, not measured)" in readme
    assert "cortex-a76" in readme
    files = sorted((exported_run / "export").glob("*.tflite"))
    for rec in estimate_models([str(f) for f in files], load_target("raspberry-pi-5"),
                               cache=tmp_path / "c"):  # fmt: skip
        assert f"| {rec['estimated_ms']:.4f} |" in readme


def test_held_out_scores_never_let_a_row_into_its_own_constant():
    """Leave-one-out on made-up figures: a row that alone is off gets its whole error (its
    constant comes from the others), the rest stay exact; Spearman and the shares follow."""
    from liteconv.studies.emulation import geometric_fit, judge_table, leave_one_out, spearman

    assert geometric_fit([(1.0, 2.0), (2.0, 8.0)]) == pytest.approx((2 * 4) ** 0.5)  # 2× and 4×
    predicted, published = [1.0, 2.0, 4.0, 8.0], [3.0, 6.0, 12.0, 36.0]  # the last is 1.5× off
    loo = leave_one_out(predicted, published)
    assert loo[3] == pytest.approx(8 * 3 / 36 - 1)  # constant 3 from the other three rows
    assert all(abs(e) > 0 for e in loo[:3])  # …whose constants include the odd row
    assert spearman(predicted, published) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2], [1, 2]) is None
    rows = [{"mode": "fp32", "published_ms": p, "estimate": q, "macs": q * q, "host": q}
            for q, p in zip(predicted, published)]  # fmt: skip
    scores = judge_table(rows)["fp32"]
    assert scores["estimate"]["n"] == 4 and scores["host"] == scores["estimate"]
    assert scores["macs"]["spearman"] == pytest.approx(1.0)
    assert scores["macs"]["median"] > scores["estimate"]["median"]  # squares: wrong spread
    assert rows[3]["estimate_loo_error"] == pytest.approx(loo[3])


def test_thread_count_is_fitted_on_pairs_alone_and_recovered():
    """Made-up counts whose 2-thread ÷ 1-thread ratios follow a known sync count: the fit
    finds it; the board constant cancels in the ratio."""
    from liteconv.device.targets import Target
    from liteconv.emulate.estimate import time_ms
    from liteconv.studies.emulation import fit_sync

    board = Target(name="b", clock_mhz=2000, cycle_scale=3.0)
    models = [{"estimated_cycles": c, "dispatches": d, "memory": None,
               "cycle_model": {"parts": {"serial": {"cycles": c * 0.01},
                                         "parallel": {"cycles": c * 0.99}}}}
              for c, d in ((1e8, 30), (3e7, 110), (6e7, 70))]  # fmt: skip
    truth = 12_000
    pairs = [(m, time_ms(board, m, 2, sync_cycles=truth)["estimated_ms"]
              / time_ms(board, m, 1, sync_cycles=truth)["estimated_ms"]) for m in models]  # fmt: skip
    fitted, rows = fit_sync(pairs, board)
    assert fitted == pytest.approx(truth, abs=500)
    assert all(r["estimated_ratio"] == pytest.approx(r["published_ratio"], rel=1e-3) for r in rows)


def test_the_dispatch_cost_pairs_ask_for_is_the_one_that_made_their_ratios():
    """Made-up 1- vs T-thread pairs whose ratios follow a known dispatch cost: each pair, and
    all of them together, ask for that cost (the board constant cancels), where their
    median error is nil and at the estimate's cost is not; a speed-up above what no
    dispatch cost gives asks for less than none, one below what the grid's end gives for
    more."""
    from liteconv.device.targets import Target
    from liteconv.emulate.estimate import time_ms
    from liteconv.studies.emulation import sync_asked

    board = Target(name="b", clock_mhz=2000, cycle_scale=3.0)
    models = [{"estimated_cycles": c, "dispatches": d, "memory": None,
               "cycle_model": {"parts": {"serial": {"cycles": c * 0.01},
                                         "parallel": {"cycles": c * 0.99}}}}
              for c, d in ((6e7, 70), (2e7, 150))]  # fmt: skip

    def pair(model, threads, sync):
        ratio = (time_ms(board, model, 1)["estimated_ms"]
                 / time_ms(board, model, threads, sync_cycles=sync)["estimated_ms"])  # fmt: skip
        return board, model, board, model, threads, ratio

    for truth in (0, 8000, 47_500):
        pairs = [pair(m, t, truth) for m in models for t in (2, 4)]
        for one in pairs:
            assert sync_asked([one], 8.6)["cycles"] == pytest.approx(truth, abs=500)
        together = sync_asked(pairs, 8.6, sync=8000)
        assert together["cycles"] == pytest.approx(truth, abs=500) and together["bound"] is None
        assert together["median_error_asked"] < 0.002
        assert (together["median_error"] > 0.01) == (truth != 8000)
    fast = pair(models[0], 4, 0)
    assert sync_asked([fast[:-1] + (fast[-1] * 1.1,)], 8.6)["bound"] == "below"
    assert sync_asked([fast[:-1] + (1.0001,)], 8.6)["bound"] == "above"


def test_the_shared_l2_fit_finds_the_rate_that_made_the_ratios():
    """Made-up 1- vs T-thread pairs on a board whose L2 is shared, their ratios computed at
    a known rate (5 bytes per cycle): the fit finds it; the board constant cancels."""
    from liteconv.device.targets import Target
    from liteconv.emulate.estimate import time_ms
    from liteconv.studies.emulation import fit_shared_l2

    board = Target(name="b", clock_mhz=1500, cycle_scale=2.0, l1d_kb=32, l1d_ways=2,
                   l2_kb=1024, l2_ways=16, l2_shared=True)  # fmt: skip
    models = [{"estimated_cycles": c, "dispatches": 50,
               "memory": {"l1_misses": m, "l2_misses": 0, "l2_writebacks": 0},
               "cycle_model": {"parts": {"serial": {"cycles": c * 0.02},
                                         "parallel": {"cycles": c * 0.98}}}}
              for c, m in ((4e8, 6e6), (2e8, 2e6), (1e8, 2.5e6))]  # fmt: skip
    truth = 5.0
    pairs = [(board, m, m, t, time_ms(board, m, 1, l2_bytes_per_cycle=truth)["estimated_ms"]
              / time_ms(board, m, t, l2_bytes_per_cycle=truth)["estimated_ms"])
             for m in models for t in (2, 4)]  # fmt: skip
    fitted, rows = fit_shared_l2(pairs, sync=8000)
    assert fitted == pytest.approx(truth, abs=0.1)
    assert all(r["estimated_ratio"] == pytest.approx(r["published_ratio"], rel=1e-3) for r in rows)
    # the bound binds on at least one made-up pair (else any rate would fit)
    assert any(time_ms(board, m, 4, l2_bytes_per_cycle=truth)["compute_ms"]
               > time_ms(board, m, 4, l2_bytes_per_cycle=1e9)["compute_ms"] for m in models)  # fmt: skip


def test_published_tables_name_their_source_and_fit_tables_exist(tmp_path):
    """The shipped CSV groups into tables with a target each; every board constant's table
    and the thread-model pairs are among them; an unknown board is a one-line error."""
    from liteconv.device.targets import load_target
    from liteconv.studies import emulation

    tables, skipped = emulation.load_tables()
    keys = {(t.board, t.threads) for t in tables}
    for prefix, board, threads in emulation.FIT_TABLES.values():
        # exactly one table: a constant never sees another table's rows (the SSD log's
        # INT8 column, other kernels, is a table of its own beside its fp32 one)
        assert len(emulation._find(tables, prefix, board, threads)) == 1, (prefix, board)  # noqa: SLF001
    for board, prefix in emulation.BANDWIDTH_PAIRS.items():  # the pairs chosen on: one source
        assert len({t.source for t in emulation._find(tables, prefix, board)}) == 1, board  # noqa: SLF001
    # the shared L2's count is fitted on pairs already marked fit (bandwidth), never held out
    board, prefix = emulation.SHARED_L2_PAIRS
    assert emulation.BANDWIDTH_PAIRS[board] == prefix
    assert {t.threads for t in emulation._find(tables, prefix, board)} >= {1, 2, 4}  # noqa: SLF001
    int8 = [t for t in tables if "INT8 column" in t.source]
    assert {t.board for t in int8} == {"Raspberry Pi 4", "Raspberry Pi 3B+ (64-bit)",
                                       "Raspberry Pi 3B+"}  # fmt: skip
    assert not any(emulation.measured_with_xnnpack(t) for t in int8)
    assert emulation._find(tables, *emulation.SYNC_TABLE, 1)  # noqa: SLF001
    assert emulation._find(tables, *emulation.SYNC_TABLE, 2)  # noqa: SLF001
    assert ("Raspberry Pi 4", 4) in keys and ("Pixel 4", 4) in keys
    assert all(t.rows and all(r["published_ms"] > 0 for r in t.rows) for t in tables)
    for t in tables:  # one figure per architecture and precision within a table
        arch = [(r["model"], r["alpha"], r["resolution"], r["precision"]) for r in t.rows]
        assert len(arch) == len(set(arch)), t.key
    # XNNPACK's 32-bit Raspbian columns run on the 32-bit target; the Pi 2's A7 stands in
    on = {t.board: (t.target, t.stand_in) for t in tables}
    assert on["Raspberry Pi 3B+"] == ("raspberry-pi-3-32bit", "")
    assert on["Raspberry Pi 2"][0] == "raspberry-pi-3-32bit" and on["Raspberry Pi 2"][1]
    assert on["Raspberry Pi 5"] == ("raspberry-pi-5", "")
    # the SSD figures of a 64-bit Pi 3B+ run on the 64-bit Pi 3 target, which they fit
    assert on["Raspberry Pi 3B+ (64-bit)"] == ("raspberry-pi-3", "")
    assert emulation.FIT_TABLES["raspberry-pi-3"][1] == "Raspberry Pi 3B+ (64-bit)"
    # the Pixel 1/2 stand-ins keep a phone's memory: T threads up to the bus's peak
    pixel2 = next(t for t in tables if t.board == "Pixel 2" and t.threads == 4)
    targets = {"raspberry-pi-4": load_target("raspberry-pi-4")}
    assert emulation._board(pixel2, targets).dram_all_threads_mb_s == 0  # noqa: SLF001
    pi4 = next(t for t in tables if t.board == "Raspberry Pi 4" and t.threads == 4)
    assert emulation._board(pi4, targets) == targets["raspberry-pi-4"]  # noqa: SLF001
    assert not any(s.startswith("Raspberry Pi") for s in skipped)
    with pytest.raises(LiteconvError, match="no published figures for Nokia 3310"):
        emulation.emulation_study("/tmp/none", boards=["Nokia 3310"])
    bad = tmp_path / "bad.csv"
    bad.write_text("board,model,ms\nPixel 4,mobilenet_v1,14\n")
    with pytest.raises(LiteconvError, match="bad.csv: no column source, threads"):
        emulation.load_tables(bad)


def test_board_constant_never_sees_a_held_out_row(tmp_path, monkeypatch):
    """The whole study on made-up counts: the Pi 4 constant comes from its named table
    alone (changing a held-out figure leaves it as it is), held-out rows are marked so and
    judged with it; the study writes its JSON and Markdown."""
    import json

    from liteconv.studies import emulation

    source22 = "google/XNNPACK README.md, revision of 2022-02: test"
    rows = [(source22, "mobilenet_v1", 80), (source22, "mobilenet_v2", 40),
            ("held-out source", "mobilenet_v1", 75), ("held-out source", "mobilenet_v2", 44)]  # fmt: skip
    header = (
        "source,board,soc,cores_used,threads,runtime,model,alpha,resolution,precision,ms,note\n"
    )

    def write(held_v2):
        text = header + "".join(
            f'"{src}",Raspberry Pi 4,x,4,4,x,{m},1.0,224,fp32,{held_v2 if src != source22 and m.endswith("2") else ms},\n'
            for src, m, ms in rows)  # fmt: skip
        (tmp_path / "p.csv").write_text(text)

    def convert(rows, folder, max_macs=0, echo=None):
        for r in rows:
            emulation.model_file(folder, r).parent.mkdir(parents=True, exist_ok=True)
            emulation.model_file(folder, r).write_bytes(b"x")
        return {emulation.model_file(folder, r): 1000 for r in rows}

    cycles = {"mobilenet_v1": 4e8, "mobilenet_v2": 2e8}

    def estimate(files, target, **_k):
        assert target.cycle_scale == 1.0  # the YAML's constant is set aside
        return [{"file": f, "estimated_cycles": cycles[Path(f).name.split("-")[0]],
                 "dispatches": 0, "memory": None, "cycle_model": {}, "check": {"passed": True}}
                for f in files]  # fmt: skip

    monkeypatch.setattr(emulation, "convert_rows", convert)
    monkeypatch.setattr(emulation, "estimate_models", estimate)
    found = []
    for held_v2 in (44, 88):
        write(held_v2)
        out = tmp_path / f"study{held_v2}"
        emulation.emulation_study(out, published=tmp_path / "p.csv", models_dir=str(tmp_path / "m"),
                                  host=False, cnns=False, echo=lambda *_: None)  # fmt: skip
        doc = json.loads(out.with_suffix(".json").read_text())
        found.append(doc["constants"]["raspberry-pi-4"]["constant"])
        held = next(
            t for t in doc["tables"] if t["table"].startswith("Raspberry Pi 4, 4 threads — held")
        )
        assert {r["role"] for r in held["rows"]} == {"held out"}
        assert all(r["absolute_error"] is not None for r in held["rows"])
        assert "held out" in out.with_suffix(".md").read_text()
    # 4e8 cycles at 1.8 GHz / 4 threads = 55.6 ms, 2e8: 27.8 ms; published 80 and 40
    assert found[0] == found[1] == pytest.approx((80 / 55.5556 * 40 / 27.7778) ** 0.5, rel=1e-3)


def test_symbols_split_blocks_by_function_and_count_dispatches(tmp_path):
    """Blocks inside XNNPACK's tasks and micro-kernels are parallel, the rest serial; a
    dispatch is an entry to pthreadpool's parallelize functions; ELF segments and the
    guest's memory map give the load bias."""
    from liteconv.emulate import symbols

    class Names:  # the Symbolizer's interface on a made-up library
        table = {0x100: "xnn_f32_gemm_minmax_ukernel_4x8", 0x200: "xnn_compute_gemm",
                 0x300: "pthreadpool_parallelize_2d_tile_2d_private_impl",
                 0x400: "_ZN6tflite8Subgraph6InvokeEv"}  # fmt: skip

        def name(self, address):
            return self.table.get(address & ~0xFF)

        def starts_function(self, address):
            return address in self.table

    blocks = [(0x100, 10, 50.0, b""), (0x210, 5, 50.0, b""), (0x300, 4, 7.0, b""),
              (0x310, 6, 7.0, b""), (0x400, 20, 1.0, b"")]  # fmt: skip
    split = symbols.split_blocks(blocks, Names())
    assert split["kinds"] == ["parallel", "parallel", "serial", "serial", "serial"]
    assert split["parallel"]["instructions"] == 750 and split["serial"]["instructions"] == 90
    assert split["dispatches"] == 7
    # the functions that ran most, by instructions per invoke (10 x 50, 5 x 50, 4 x 7 + 6 x 7)
    assert list(split["kernels"].items())[:3] == [
        ("xnn_f32_gemm_minmax_ukernel_4x8", 500), ("xnn_compute_gemm", 250),
        ("pthreadpool_parallelize_2d_tile_2d_private_impl", 70)]  # fmt: skip
    assert len(symbols.split_blocks(blocks, Names(), top=2)["kernels"]) == 2
    maps = ("7f0000000000-7f0000100000 r-xp 00000000 08:01 12 /usr/lib/libx.so\n"
            "7f0000200000-7f0000201000 rw-p 00100000 08:01 12 /usr/lib/libx.so\n"
            "7fff00000000-7fff00021000 rw-p 00000000 00:00 0 [stack]\n")  # fmt: skip
    assert symbols.parse_maps(maps) == [(0x7F0000000000, 0x7F0000100000, 0, "/usr/lib/libx.so"),
                                        (0x7F0000200000, 0x7F0000201000, 0x100000,
                                         "/usr/lib/libx.so")]  # fmt: skip
    segments = symbols.load_segments(sys.executable)  # any 64-bit ELF has PT_LOAD segments
    assert segments and all(size >= 0 for _, _, size in segments)
    with pytest.raises(LiteconvError, match="not a little-endian ELF"):
        symbols.load_segments(__file__)
    # a 32-bit ELF (the armv7 runtime's library): its 32-bit program headers
    elf32 = tmp_path / "lib32.so"
    header = (
        b"\x7fELF\x01\x01\x01"
        + bytes(9)
        + struct.pack("<HHIIIIIHHHHHH", 3, 40, 1, 0, 52, 0, 0, 52, 32, 2, 40, 0, 0)
    )
    loads = struct.pack("<8I", 1, 0x1000, 0x11000, 0x11000, 0x200, 0x200, 5, 0x1000)
    note = struct.pack("<8I", 4, 0x2000, 0x12000, 0x12000, 0x10, 0x10, 4, 4)
    elf32.write_bytes(header + loads + note)
    assert symbols.load_segments(elf32) == [(0x1000, 0x11000, 0x200)]
    # the builtin kernels: ruy's GEMM and the depthwise kernels parallel; im2col, the
    # interpreter and XNNPACK's names (not run) serial; pthreadpool entries still counted
    Names.table = {0x100: "_ZN3ruy15KernelFloatNeonERKNS_17KernelParamsFloatILi8ELi8EEE",
                   0x200: "_ZN6tflite13optimized_ops26FloatDepthwiseConvAccumRowILb1ELi0ELi1EEEviiiiPKfiiiS3_iiiPf",
                   0x300: "_ZN6tflite13optimized_ops6Im2colIfEEvRKNS_10ConvParamsEiihRKNS_12RuntimeShapeEPKT_S7_PS8_",
                   0x400: "xnn_compute_gemm"}  # fmt: skip
    split = symbols.split_blocks(blocks, Names(), xnnpack=False)
    assert split["kinds"] == ["parallel", "parallel", "serial", "serial", "serial"]
    assert split["parallel"]["instructions"] == 750 and split["serial"]["instructions"] == 90
    assert split["dispatches"] == 0
    # the 32-bit wheel's (no ruy): Eigen's GEMM kernel and gemmlowp's parallel, an
    # element-wise kernel and the interpreter serial
    Names.table = {0x100: "_ZN5Eigen8internal11gebp_kernelIffiNS0_16blas_data_mapperIfiLi0ELi0ELi1EEELi12ELi4ELb0ELb0EEclERKS3_PKfS8_iiifiiii",
                   0x200: "_ZNK8gemmlowp39NEON_32bit_GEMM_Int8Operands_LhsNonzero3RunEPijjPKhS3_jj",
                   0x300: "_ZN6tflite21optimized_integer_ops18AddElementwiseInt8EiRKNS_16ArithmeticParamsEPKaS5_Pa",
                   0x400: "_ZN6tflite8Subgraph10InvokeImplEv"}  # fmt: skip
    split = symbols.split_blocks(blocks, Names(), armv7=True)
    assert split["kinds"] == ["parallel", "parallel", "serial", "serial", "serial"]


def test_thread_speedups_pair_one_source_and_mark_the_sync_fit():
    """1-thread ÷ T-thread ratios pair rows of one source and board by model and mode;
    the sync count's own board is marked fitted, another held out; other sources or
    rows without an estimate are left out; rows with a builtin-kernel estimate get its
    ratio's error too."""
    from liteconv.studies.emulation import SYNC_TABLE, Table, thread_speedups

    def rows(*pairs):
        return [{"model": m, "mode": "fp32", "published_ms": p, "estimate": e} for m, p, e in pairs]

    src = SYNC_TABLE[0] + " (test)"
    tables = [Table(src, "Phone", 1, rows(("a", 80.0, 40.0), ("b", 20.0, None))),
              Table(src, "Phone", 4, rows(("a", 20.0, 12.5), ("b", 6.0, 3.0))),
              Table("other source", "Phone", 2, rows(("a", 50.0, 25.0))),
              Table(src, SYNC_TABLE[1], 1, rows(("a", 10.0, 10.0))),
              Table(src, SYNC_TABLE[1], 2, rows(("a", 5.0, 4.0)))]  # fmt: skip
    out = thread_speedups(tables)
    assert [(r["board"], r["threads"], r["model"]) for r in out] == [("Phone", 4, "a"),
                                                                     (SYNC_TABLE[1], 2, "a")]  # fmt: skip
    assert out[0]["published"] == 4.0 and out[0]["estimated"] == 3.2
    assert out[0]["error"] == pytest.approx(-0.2) and out[0]["role"] == "held out"
    assert out[1]["role"] == "fit (threads)" and out[1]["estimated"] == 2.5
    assert out[0]["builtin_error"] is None  # no builtin estimate on these rows
    # a table measured without XNNPACK: the builtin kernels' ratio judged beside
    tables[0].rows[0]["builtin"], tables[1].rows[0]["builtin"] = 60.0, 20.0
    assert thread_speedups(tables)[0]["builtin_error"] == pytest.approx(3.0 / 4.0 - 1)
    # the pairs a Pi board's all-thread bandwidth was chosen on are not held out
    from liteconv.studies.emulation import BANDWIDTH_PAIRS, SSD_LOGS

    board, prefix = next(iter(BANDWIDTH_PAIRS.items()))
    pi = [Table(prefix + " log", board, 1, rows(("a", 90.0, 30.0))),
          Table(prefix + " log", board, 2, rows(("a", 60.0, 20.0))),
          Table("another source", board, 1, rows(("a", 90.0, 30.0))),
          Table("another source", board, 2, rows(("a", 60.0, 20.0))),
          # the same author's SSD logs: not what the bandwidth was chosen on
          Table(SSD_LOGS + " log", board, 1, rows(("a", 90.0, 30.0))),
          Table(SSD_LOGS + " log", board, 2, rows(("a", 60.0, 20.0)))]  # fmt: skip
    assert [r["role"] for r in thread_speedups(pi)] == ["fit (bandwidth)", "held out", "held out"]


def test_speedup_variants_score_held_out_pairs_under_each_way_of_adding_memory():
    """The memory variants on speed-up pairs (made-up terms): with no memory term the
    ratio is compute + sync alone; sharing the re-reads or a bus that scales changes only
    the memory term; the sync count's own pairs never enter."""
    from liteconv.device.targets import Target
    from liteconv.studies.emulation import SYNC_TABLE, Table, speedup_variants

    def row(published, compute, sync, memory, shared):
        return {"model": "a", "mode": "fp32", "published_ms": published, "estimate": 1.0,
                "terms": {"compute_ms": compute, "sync_ms": sync, "memory_ms": memory,
                          "memory_shared_ms": shared}}  # fmt: skip

    board = Target(name="b", dram_mb_s=1000, dram_peak_mb_s=4000)
    targets = {"b": board}
    src = SYNC_TABLE[0] + " (test)"
    # one thread: 8 ms compute + 4 ms memory; four threads: 2 + 1 sync, memory at 4× the
    # bandwidth 1 ms (0.5 ms if the threads shared the re-reads)
    tables = [Table("s", "Phone", 1, [row(12.0, 8.0, 0.0, 4.0, 4.0)], "b"),
              Table("s", "Phone", 4, [row(4.0, 2.0, 1.0, 1.0, 0.5)], "b"),
              Table(src, SYNC_TABLE[1], 1, [row(9.0, 9.0, 0.0, 0.0, 0.0)], "b"),
              Table(src, SYNC_TABLE[1], 2, [row(1.0, 4.5, 0.0, 0.0, 0.0)], "b")]  # fmt: skip
    out = speedup_variants(tables, targets)
    assert {v["n"] for v in out.values()} == {1}  # the fitted pair is left out
    # published 12 / 4 = 3: used 12 / 4 = 3 exactly; no memory 8 / 3; shared 12 / 3.5;
    # at one thread's bandwidth memory costs 4 ms at 4 threads too: 12 / 7
    assert out["add (used)"]["median"] == 0.0
    assert out["no memory term"]["low"] == pytest.approx(8 / 3 / 3 - 1, abs=1e-4)
    assert out["re-reads shared by the threads"]["high"] == pytest.approx(
        12 / 3.5 / 3 - 1, abs=1e-4
    )
    assert out["one thread's bandwidth at any T"]["low"] == pytest.approx(12 / 7 / 3 - 1, abs=1e-4)


def test_kernel_variants_score_only_tables_measured_without_xnnpack():
    """Which kernels the figures ask for (made-up rows): a table whose runtime is not
    XNNPACK is scored with the estimate and with the builtin kernels' estimate, each with
    its own leave-one-out constant; XNNPACK's own tables and rows without a builtin
    estimate are left out. In the published CSV only XNNPACK's README tables and the Pi
    logs' fp32 figures ran XNNPACK."""
    from liteconv.studies.emulation import (
        Table,
        kernel_variants,
        load_tables,
        measured_with_xnnpack,
    )

    def rows(*triples):
        return [{"model": m, "mode": "fp32", "published_ms": p, "estimate": e, "builtin": b}
                for m, p, e, b in triples]  # fmt: skip

    # builtin exactly proportional to the published times; the estimate 2x off on one row
    old = Table("TFLite README", "Phone", 1, rows(("a", 10.0, 5.0, 20.0), ("b", 20.0, 20.0, 40.0),
                                                  ("c", 40.0, 20.0, 80.0), ("d", 5.0, 2.5, None)),
                runtime="TFLite (CPU)")  # fmt: skip
    new = Table("XNNPACK README", "Phone", 1, rows(("a", 10.0, 5.0, 20.0), ("b", 20.0, 20.0, 40.0)),
                runtime="XNNPACK end2end-bench")  # fmt: skip
    out = kernel_variants([old, new])
    assert len(out) == 1 and out[0]["table"] == old.key and out[0]["n"] == 3
    assert out[0]["builtin"]["within_10"] == 1.0 and out[0]["builtin"]["median"] == pytest.approx(0)
    # the estimate: row b is 2x the others' ratio, so its leave-one-out error is +100 %
    assert out[0]["xnnpack"]["worst"] == pytest.approx(1.0)
    assert out[0]["xnnpack"]["within_10"] == 0.0
    tables, _ = load_tables()
    xnn = {t.source.split(",")[0].split(":")[0] for t in tables if measured_with_xnnpack(t)}
    assert xnn == {"google/XNNPACK README.md"} | {  # the Pi logs' fp32; their INT8 column: builtin
        t.source.split(":")[0]
        for t in tables
        if t.source.startswith("NobuoTsukamoto") and "INT8 column" not in t.source
    }
    assert any(not measured_with_xnnpack(t) for t in tables)


def test_cross_board_ratio_applies_each_boards_constant():
    """Board A ÷ board B: each raw estimate times its own board's constant, against the
    published ratio of one source's two columns."""
    from liteconv.studies.emulation import cross_board_rows

    pairs = [{"model": "m", "mode": "fp32", "a_raw": 30.0, "b_raw": 20.0,
              "a_published": 90.0, "b_published": 60.0}]  # fmt: skip
    (row,) = cross_board_rows(pairs, constant_a=0.5, constant_b=1.5)
    assert row["estimated"] == pytest.approx(30 * 0.5 / (20 * 1.5))  # 0.5
    assert row["published"] == pytest.approx(1.5)
    assert row["error"] == pytest.approx(0.5 / 1.5 - 1, abs=1e-4)
    (same,) = cross_board_rows(pairs, constant_a=3.0, constant_b=2.0)  # 2.25 against 1.5
    assert same["error"] == pytest.approx(0.5, abs=1e-4)


def test_the_report_names_where_a_baseline_beats_the_estimate_and_its_worst_row():
    """A table whose host-time baseline has a lower median error than the estimate is
    listed with that baseline and the estimate's worst row; a table the estimate wins is
    not; a 2-row fit table says so."""
    from liteconv.studies.emulation import not_beaten

    def row(model, err):
        return {"model": model, "alpha": 1.0, "resolution": 224, "mode": "fp32",
                "estimate_loo_error": err}  # fmt: skip

    def scores(est, macs, host, n):
        return {"fp32": {"estimate": {"n": n, "median": est}, "macs": {"n": n, "median": macs},
                         "host": {"n": n, "median": host}}}  # fmt: skip

    doc = {"machine": {"cpu": "Test CPU"}, "tables": [
        {"table": "lost", "fit_table": False, "scores": scores(0.08, 0.20, 0.05, 4),
         "rows": [row("a", 0.02), row("b", -0.15), row("c", 0.09), row("d", None)]},
        {"table": "won", "fit_table": False, "scores": scores(0.03, 0.20, 0.05, 4),
         "rows": [row("a", 0.03)]},
        {"table": "tiny", "fit_table": True, "scores": scores(0.10, 0.04, 0.30, 2),
         "rows": [row("a", 0.10), row("b", -0.10)]}]}  # fmt: skip
    found = {v["table"]: v for v in not_beaten(doc)}
    assert set(found) == {"lost", "tiny"}
    assert found["lost"]["baseline"] == "host" and found["lost"]["baseline_median"] == 0.05
    assert found["lost"]["worst"] == "b 1/224" and found["lost"]["worst_error"] == -0.15
    assert found["lost"]["notes"] == ["host-dependent (Test CPU)"]
    assert found["tiny"]["baseline"] == "macs"
    assert found["tiny"]["notes"] == ["2 rows", "the board's fit table"]


def test_held_out_accuracy_counts_only_rows_no_fit_saw():
    """Per target: absolute errors and leave-one-out errors of the held-out rows, neither
    from a fit's rows nor from the T-thread rows of pairs a bandwidth was chosen on; the
    median of |error| and the signed worst, in percent."""
    from liteconv.studies.emulation import EFFICIENTDET_LOGS, Table, held_out_accuracy

    def row(role, absolute, loo, model="m"):
        return {"model": model, "mode": "fp32", "role": role, "absolute_error": absolute,
                "estimate_loo_error": loo}  # fmt: skip

    other = Table("some source", "Raspberry Pi 4", 4, [
        row("held out", 0.10, -0.02), row("held out", -0.30, 0.05),
        row("held out", 0.20, None), row("fit (constant)", 0.90, 0.90)], "raspberry-pi-4")  # fmt: skip
    one = Table(f"{EFFICIENTDET_LOGS} x", "Raspberry Pi 4", 1, [row("held out", 0.04, 0.01)],
                "raspberry-pi-4")  # fmt: skip
    four = Table(f"{EFFICIENTDET_LOGS} x", "Raspberry Pi 4", 4, [row("held out", 0.80, 0.70)],
                 "raspberry-pi-4")  # fmt: skip
    found = held_out_accuracy([other, one, four])["raspberry-pi-4"]
    # absolute: 0.10, -0.30, 0.20 and the 1-thread row 0.04 (the 4-thread one's pair chose
    # the bandwidth; the fit's row is the constant's own)
    assert found["absolute"] == {"rows": 4, "median_pct": pytest.approx(100 * (0.10 + 0.20) / 2),
                                 "worst_pct": -30.0}  # fmt: skip
    assert found["ratios"] == {"rows": 3, "median_pct": 2.0, "worst_pct": 5.0}
    nothing = held_out_accuracy([Table("s", "b", 1, [row("fit (constant)", 0.1, 0.1)], "t")])
    assert nothing["t"]["absolute"] == {"rows": 0, "median_pct": 0.0, "worst_pct": 0.0}


def test_every_estimate_says_how_far_its_target_was_off():
    """The held-out errors in a target's YAML are printed beside its estimates; a target
    without any says there is nothing to check it on; the YAML's block is checked."""
    from liteconv.device.targets import HeldOut, Target, target_from_dict
    from liteconv.emulate.estimate import accuracy_cell, describe_accuracy
    from liteconv.emulate.report import estimate_title

    board = Target(name="b", core="cortex-a72", clock_mhz=1800, qemu_cpu="cortex-a72",
                   held_out_absolute=HeldOut(22, 13.1, -24.4),
                   held_out_ratios=HeldOut(1, 3.9, 24.7), held_out_source="a study")  # fmt: skip
    text = describe_accuracy(board)
    assert "absolute (this board) median |error| 13.1 % (worst -24.4 %) over 22 figures" in text
    assert "median |error| 3.9 % (worst +24.7 %) over 1 figure " in text and "a study" in text
    assert text in estimate_title(board)
    assert accuracy_cell(board) == "13.1 % of 22 / 3.9 % of 1"  # `liteconv targets`
    half = dataclasses.replace(board, held_out_ratios=HeldOut())
    assert "model to model (one constant per table): none held out" in describe_accuracy(half)
    bare = Target(name="c", held_out_source="no published figure of this board")
    assert describe_accuracy(bare) == (
        "Held out from every fit: nothing to check it on (no published figure of this board)."
    )
    assert accuracy_cell(bare) == "none / none"
    data = {"name": "c", "held_out_ratios": {"rows": 2, "median_pct": -1}}
    with pytest.raises(LiteconvError, match=r"x.yaml: held_out_ratios.median_pct: -1"):
        target_from_dict(data, "x.yaml")


def test_target_yamls_carry_the_committed_studys_figures():
    """Each target's constant and held-out errors are the ones the committed study
    (docs/results/emulation.json, ``make bench-emulation``) fitted and found."""
    import json

    from liteconv.device.targets import load_target

    doc = json.loads((REPO / "docs" / "results" / "emulation.json").read_text())
    for name, fit in doc["constants"].items():
        assert load_target(name).cycle_scale == fit["constant"], name
    assert doc["accuracy"], "the study judged no target"
    for name, found in doc["accuracy"].items():
        target = load_target(name)
        assert dataclasses.asdict(target.held_out_absolute) == found["absolute"], name
        assert dataclasses.asdict(target.held_out_ratios) == found["ratios"], name
