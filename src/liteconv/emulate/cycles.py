"""Cycles of executed translation blocks from llvm-mca's scheduling model of a core.

Each hot block (the most executed, until ``COVERAGE`` of the instructions) is disassembled
by ``llvm-mc`` and given to ``llvm-mca -mcpu=CORE`` as one code region; its steady-state
cycles per execution (total cycles / iterations, the block run back to back as in a
kernel's inner loop) times its executions is its share. The cold rest is charged the hot
blocks' mean cycles per instruction. What this leaves out: cache misses and memory
bandwidth (llvm-mca assumes every load hits L1), branch mispredictions, and the
interpreter's scheduling between threads.

Example:
    >>> cycles, detail = estimate_cycles(blocks, core="cortex-a72")
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from liteconv.device.errors import LiteconvError
from liteconv.emulate.tools import DEFAULT_LLVM, llvm_tool

COVERAGE = 0.98  # of the instructions, in the hottest blocks
MAX_BLOCKS = 600
ITERATIONS = 100
# Every extension a target core may run; llvm-mc only decodes what it is told exists.
MATTR = "+v8.4a,+dotprod,+fullfp16,+fp16fml,+i8mm,+bf16,+crypto,+rcpc,+lse"


def disassemble(code: bytes, llvm: int = DEFAULT_LLVM) -> list[str]:
    """The aarch64 instructions of ``code`` as assembly lines (``llvm-mc --disassemble``)."""
    text = " ".join(f"0x{b:02x}" for b in code)
    proc = subprocess.run([llvm_tool("llvm-mc", llvm), "--disassemble", "-triple=aarch64",
                           f"-mattr={MATTR}"], input=text, capture_output=True, text=True)  # fmt: skip
    lines = [ln.strip() for ln in proc.stdout.splitlines()]
    return [ln for ln in lines if ln and not ln.startswith(".")]


def disassemble_many(codes: list[bytes], llvm: int = DEFAULT_LLVM) -> list[list[str]]:
    """``disassemble`` of each block, in one ``llvm-mc`` run (AArch64 instructions are 4
    bytes each: the listing splits back by length); block by block where a byte string
    does not decode to one line per 4 bytes."""
    lines = disassemble(b"".join(codes), llvm)
    if len(lines) == sum(len(c) // 4 for c in codes) and all(len(c) % 4 == 0 for c in codes):
        out, at = [], 0
        for code in codes:
            out.append(lines[at : at + len(code) // 4])
            at += len(code) // 4
        return out
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda c: disassemble(c, llvm), codes))


_REGION = re.compile(r"\[(\d+)\] Code Region - b(\d+).*?Iterations:\s+(\d+).*?Total Cycles:\s+(\d+)",
                     re.S)  # fmt: skip


def _mca(asm: dict[int, list[str]], core: str, llvm: int = DEFAULT_LLVM) -> dict[int, float]:
    """Cycles per execution of each block (one llvm-mca run, one region per block)."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "blocks.s"
        source.write_text("".join(
            f"# LLVM-MCA-BEGIN b{k}\n" + "\n".join(lines) + f"\n# LLVM-MCA-END b{k}\n"
            for k, lines in asm.items()))  # fmt: skip
        proc = subprocess.run(
            [llvm_tool("llvm-mca", llvm), "-mtriple=aarch64", f"-mcpu={core}", f"-mattr={MATTR}",
             f"-iterations={ITERATIONS}", "-summary-view", "-instruction-info=0",
             "-resource-pressure=0", str(source)], capture_output=True, text=True,
        )  # fmt: skip
    if proc.returncode != 0:
        return {}
    return {int(m[1]): int(m[3]) / int(m[2]) for m in _REGION.findall(proc.stdout)}


def estimate_cycles(blocks: list[tuple], core: str, llvm: int = DEFAULT_LLVM,
                    kinds: list[str] | None = None) -> tuple[float, dict]:  # fmt: skip
    """Estimated cycles of one invoke from its ``blocks`` (``(vaddr, n_insns,
    executions, code)``) on LLVM ``llvm``'s scheduling model ``core``, and how they were
    made (coverage, hot blocks, mean CPI). With ``kinds`` (one label per block, e.g.
    ``symbols.split_blocks``' serial / parallel) the detail also has ``parts``: the
    instructions and cycles of each label (cold blocks at the mean CPI)."""
    if not blocks:
        raise LiteconvError("no executed blocks to estimate cycles from")
    total = sum(n * runs for _, n, runs, _ in blocks)
    labels = kinds if kinds is not None else ["all"] * len(blocks)
    label_of = {id(b): k for b, k in zip(blocks, labels)}
    ranked = sorted(blocks, key=lambda b: b[1] * b[2], reverse=True)
    hot, covered = [], 0.0
    for block in ranked:
        if covered >= COVERAGE * total or len(hot) >= MAX_BLOCKS:
            break
        hot.append(block)
        covered += block[1] * block[2]
    asm = dict(enumerate(disassemble_many([b[3] for b in hot], llvm)))
    per_exec = _mca(asm, core, llvm)
    if len(per_exec) < len(asm):  # an instruction the model lacks broke the batch: one by one
        with ThreadPoolExecutor(4) as pool:
            singles = list(pool.map(lambda k: _mca({k: asm[k]}, core, llvm), list(asm)))
        per_exec = {k: v for one in singles for k, v in one.items()}
    known = [(hot[k], c) for k, c in per_exec.items()]
    if not known:
        raise LiteconvError(f"llvm-mca {llvm} could not schedule any hot block for {core}")
    known_insns = sum(b[1] * b[2] for b, _ in known)
    hot_cycles = sum(c * b[2] for b, c in known)
    cpi = hot_cycles / known_insns
    cycles = hot_cycles + (total - known_insns) * cpi
    parts = {k: {"instructions": 0.0, "cycles": 0.0} for k in dict.fromkeys(labels)}
    timed = {id(b): c * b[2] for b, c in known}
    for block in blocks:
        part = parts[label_of[id(block)]]
        part["instructions"] += block[1] * block[2]
        part["cycles"] += timed.get(id(block), block[1] * block[2] * cpi)
    detail = {"instructions": total, "hot_blocks": len(known),
              "hot_coverage": round(known_insns / total, 4), "hot_cpi": round(cpi, 4),
              "mca_cpu": core, "llvm": llvm}  # fmt: skip
    if kinds is not None:
        detail["parts"] = {k: {n: round(v) for n, v in p.items()} for k, p in parts.items()}
    return cycles, detail
