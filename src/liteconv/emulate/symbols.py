"""Which executed blocks run in parallel on a board's threads, and which run on one.

XNNPACK splits each operator's work with pthreadpool: the task functions it hands to
``pthreadpool_parallelize_*`` (``xnn_compute_*``) and the micro-kernels they call
(``*_ukernel_*``) run on every thread; the rest of an invoke (the TFLite interpreter, the
delegate, each operator's setup and the pthreadpool dispatch itself) runs on the calling
thread only. The emulated run has one thread; its blocks are named here from the symbol
table of the runtime's shared library (ai-edge-litert keeps a full ``.symtab``) and the
guest's own memory map, so the serial and parallel parts of an invoke are *counted*, not
fitted, and so is the number of parallel dispatches (each one synchronises the thread pool
at T > 1 threads).

TFLite's builtin kernels (``bench --no-xnnpack``) split their work otherwise: the GEMMs of
convolutions and fully-connected layers through ruy (its kernels and packing run on every
thread), depthwise convolutions and matrix-vector products through the same thread pool;
the rest (im2col, element-wise operators, pooling, softmax, the interpreter) runs on the
calling thread. They make no pthreadpool dispatch: their count is 0 (what ruy's own pool
costs to synchronise is not modelled).

Example:
    >>> parts = split_blocks(blocks, maps_text, llvm=19)
    >>> parts["serial"]["instructions"], parts["dispatches"]
"""

from __future__ import annotations

import bisect
import re
import struct
import subprocess
from pathlib import Path

from liteconv.device.errors import LiteconvError
from liteconv.emulate.tools import llvm_tool

# Functions whose instructions run on every thread: XNNPACK's pthreadpool tasks and the
# micro-kernels they call (names are XNNPACK's, stable since 2019).
PARALLEL = re.compile(r"^xnn_compute_|ukernel")
# What TFLite's builtin kernels run on every thread (ruy's namespace, mangled; the
# depthwise kernels of optimized_ops and optimized_integer_ops; cpu_backend_gemm's GEMV).
PARALLEL_BUILTIN = re.compile(r"_ZN3ruy|_ZNK3ruy|DepthwiseConv|depthwise_conv|CustomGemv")
# What the 32-bit runtime's kernels run on every thread. PyPI's tflite-runtime 2.14 armv7
# wheel is built without ruy: float GEMMs go through Eigen (at one thread TFLite's CONV_2D
# takes im2col and Eigen's GEMM, at more its multithreaded Eigen convolution: the same gebp
# kernel and packing, split over the threads), int8 GEMMs through gemmlowp (its workers
# split them), depthwise convolutions over the thread pool; the rest (element-wise
# operators, activations, pooling, the post-processing operator, the interpreter) runs on
# the calling thread.
PARALLEL_ARMV7 = re.compile(
    r"_ZN5Eigen8internal11gebp_kernel|_ZN5Eigen8internal13gemm_pack_|GemmImplUsingEigen"
    r"|gemmlowp|DepthwiseConv|depthwise_conv|_ZN3ruy|_ZNK3ruy|CustomGemv"
)
# pthreadpool's dispatch functions (the public names are aliases of these).
DISPATCH = re.compile(r"^pthreadpool_parallelize\w*_private_impl$")
# The library whose symbols name the blocks (the runtime's; its Python wrapper is tiny).
LIBRARY = "libpywrap_litert_common.so"
# The 32-bit runtime's library (tflite-runtime's wrapper holds all of TFLite, with symbols).
LIBRARY_ARMV7 = "_pywrap_tensorflow_interpreter_wrapper.so"


def parse_maps(text: str) -> list[tuple[int, int, int, str]]:
    """``(start, end, file offset, path)`` of each file-backed mapping in ``/proc/PID/maps``."""
    rows = []
    for line in text.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5].startswith("/"):
            start, end = (int(x, 16) for x in parts[0].split("-"))
            rows.append((start, end, int(parts[2], 16), parts[5].strip()))
    return rows


def load_segments(path: str | Path) -> list[tuple[int, int, int]]:
    """``(p_offset, p_vaddr, p_filesz)`` of each PT_LOAD segment of a 64- or 32-bit
    little-endian ELF file (an aarch64 or an armv7 library)."""
    with open(path, "rb") as fh:
        head = fh.read(64)
        if head[:4] != b"\x7fELF" or head[4] not in (1, 2) or head[5] != 1:
            raise LiteconvError(f"{path}: not a little-endian ELF file")
        wide = head[4] == 2
        (phoff,) = struct.unpack_from("<Q" if wide else "<I", head, 32 if wide else 28)
        phentsize, phnum = struct.unpack_from("<HH", head, 54 if wide else 42)
        fh.seek(phoff)
        table = fh.read(phentsize * phnum)
    segments = []
    for i in range(phnum):
        if wide:
            p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from(
                "<IIQQQQ", table, i * phentsize
            )
        else:
            p_type, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from(
                "<IIIII", table, i * phentsize
            )
        if p_type == 1:  # PT_LOAD
            segments.append((p_offset, p_vaddr, p_filesz))
    return segments


def functions(path: str | Path, llvm: int) -> tuple[list[int], list[str]]:
    """Start addresses (sorted) and names of the functions in ``path``'s symbol table."""
    proc = subprocess.run([llvm_tool("llvm-nm", llvm), "--defined-only", "--no-demangle", str(path)],
                          capture_output=True, text=True)  # fmt: skip
    rows = []
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tTwW":  # bit 0 set: a Thumb function (armv7)
            rows.append((int(parts[0], 16) & ~1, parts[2]))
    if not rows:
        raise LiteconvError(f"{path}: no function symbols (llvm-nm-{llvm}: "
                            f"{proc.stderr.strip()[-200:] or 'none'})")  # fmt: skip
    rows.sort()
    return [a for a, _ in rows], [n for _, n in rows]


class Symbolizer:
    """Names guest addresses inside ``library`` from the guest's memory map."""

    def __init__(
        self, maps_text: str, library: str = LIBRARY, root: str | Path = "/", llvm: int = 16
    ):
        maps = [m for m in parse_maps(maps_text) if Path(m[3]).name == library]
        if not maps:
            raise LiteconvError(f"the emulated run's memory map has no {library}")
        path = Path(maps[0][3])
        if not path.is_file():  # the guest's path is inside the arm64 root
            path = Path(root) / str(path).lstrip("/")
        segments = load_segments(path)
        self.ranges = []  # (guest start, guest end, bias: ELF vaddr = guest address - bias)
        for start, end, offset, _ in maps:
            for p_offset, p_vaddr, _size in segments:
                page = p_offset & ~0xFFF
                if page == offset or p_offset == offset:
                    self.ranges.append((start, end, start - (p_vaddr - (p_offset - offset))))
                    break
        self.addresses, self.names = functions(path, llvm)

    def name(self, address: int) -> str | None:
        """The function containing guest ``address`` (None outside the library)."""
        for start, end, bias in self.ranges:
            if start <= address < end:
                i = bisect.bisect_right(self.addresses, address - bias) - 1
                return self.names[i] if i >= 0 else None
        return None

    def starts_function(self, address: int) -> bool:
        for start, end, bias in self.ranges:
            if start <= address < end:
                i = bisect.bisect_left(self.addresses, address - bias)
                return i < len(self.addresses) and self.addresses[i] == address - bias
        return False


def split_blocks(
    blocks: list[tuple],
    symbolizer: Symbolizer,
    xnnpack: bool = True,
    top: int = 5,
    armv7: bool = False,
) -> dict:
    """``{"kinds": [...], "serial": {...}, "parallel": {...}, "dispatches": N}``: the
    kind of each block (``"parallel"`` inside XNNPACK's tasks and micro-kernels, else
    ``"serial"``; with ``xnnpack`` False inside the builtin kernels' ``PARALLEL_BUILTIN``),
    the instructions of each kind per invoke, the pthreadpool dispatches per invoke
    (entries to ``pthreadpool_parallelize_*``) and the ``kernels``: the ``top`` functions by
    instructions per invoke (which micro-kernels the runtime picked for the emulated core).
    ``armv7``: the 32-bit runtime's kernels (``PARALLEL_ARMV7``; no XNNPACK there)."""
    parallel = PARALLEL_ARMV7 if armv7 else PARALLEL if xnnpack else PARALLEL_BUILTIN
    kinds, totals, calls = [], {"serial": 0.0, "parallel": 0.0}, 0.0
    by_name: dict[str, float] = {}
    for vaddr, n, runs, _code in blocks:
        name = symbolizer.name(vaddr) or ""
        kind = "parallel" if parallel.search(name) else "serial"
        kinds.append(kind)
        totals[kind] += n * runs
        by_name[name or "?"] = by_name.get(name or "?", 0.0) + n * runs
        if DISPATCH.match(name) and symbolizer.starts_function(vaddr):
            calls += runs
    kernels = sorted(by_name.items(), key=lambda kv: -kv[1])[:top]
    return {"kinds": kinds, "serial": {"instructions": round(totals["serial"])},
            "parallel": {"instructions": round(totals["parallel"])},
            "dispatches": round(calls),
            "kernels": {name: round(n) for name, n in kernels}}  # fmt: skip
