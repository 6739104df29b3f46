"""Deployment targets (``liteconv/configs/targets/*.yaml``, a user's own folder or a YAML
path): threads, cores to pin, runtime options, and the core model for emulation.

On the host a target mimics the device's parallelism; the bundle carries it as
``target.json`` so the device runs the same settings. Both load through the same typed
schema as the experiment configs (``schema.build``). No TensorFlow import; PyYAML only
for the host's YAML files.

Example:
    >>> load_target("raspberry-pi-4").threads
    [1, 2, 4]
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

from .errors import LiteconvError
from .schema import build, check

RUNTIME_NAMES = ("auto", "litert", "tflite_runtime", "tf")


@dataclass
class HeldOut:
    """How far a target's estimates fell from published figures that no fit saw
    (``liteconv study emulation``, its ``accuracy``): ``rows`` figures, the median and the
    worst (signed) error in percent; 0 rows: none was held out."""

    rows: int = field(default=0, metadata=check(0))
    median_pct: float = field(default=0.0, metadata=check(0))
    worst_pct: float = 0.0


@dataclass
class Target:
    """One deployment target."""

    name: str = "host"
    description: str = ""
    arch: str = ""
    threads: list[int] = field(default_factory=lambda: [1])
    cores: list[int] | None = None  # CPU cores to pin to (e.g. a phone's big cores)
    runtime: Literal[RUNTIME_NAMES] = "auto"
    xnnpack: list[bool] = field(default_factory=lambda: [True])
    # Emulation (``liteconv bench --emulate``): the core whose scheduling model gives the
    # cycles (llvm-mca -mcpu), qemu's -cpu model with that core's instruction set, clock,
    # caches, and at most one calibration constant with where it came from.
    core: str = ""  # llvm-mca's -mcpu: the scheduling model (see ``llvm``)
    llvm: Literal[16, 19] = 16  # which LLVM's llvm-mca models ``core`` (19 has neoverse-n1/a55)
    qemu_cpu: str = ""
    # The board's MIDR_EL1 (its cores' implementer, part, variant, revision): the emulated
    # guest's /proc/cpuinfo shows it, so XNNPACK and ruy pick the kernels they pick on the
    # board (aarch64; empty: the host's file, on which they find no ARM core: generic kernels).
    midr: str = ""
    midr_source: str = ""
    clock_mhz: float = field(default=0.0, metadata=check(0))
    l1d_kb: int = field(default=0, metadata=check(0))
    l1d_ways: int = field(default=0, metadata=check(0))
    l2_kb: int = field(default=0, metadata=check(0))  # the last level before DRAM
    l2_ways: int = field(default=0, metadata=check(0))
    l1d_policy: Literal["lru", "random"] = "lru"  # replacement, as the core's TRM gives it
    l2_policy: Literal["lru", "random"] = "lru"
    l2_policy_source: str = ""
    dram_mb_s: float = field(default=0.0, metadata=check(0))  # one thread's, e.g. STREAM copy
    dram_source: str = ""
    # The bus's peak (transfer rate × width, from the datasheet): what T threads' traffic
    # can reach together; 0: every thread count gets the one thread's ``dram_mb_s``.
    dram_peak_mb_s: float = field(default=0.0, metadata=check(0))
    dram_peak_source: str = ""
    # What all the threads together sustain, where it is known to stay below the bus's
    # peak (a board whose one core already draws what its bus delivers); 0: the peak.
    dram_all_threads_mb_s: float = field(default=0.0, metadata=check(0))
    dram_all_threads_source: str = ""
    # Whether the cores' L1Ds miss into one L2 they share (a Cortex-A53 or A72 cluster, from
    # the core's TRM; not DynamIQ cores, whose L2 is each core's own): the emulation then
    # bounds the threads' parallel work by what that L2 returns (``emulate.estimate``).
    l2_shared: bool = False
    l2_shared_source: str = ""
    cycle_scale: float = field(default=1.0, metadata=check(0, exclusive_min=True))
    cycle_scale_source: str = ""
    # What ``bench --emulate`` prints beside its estimates: their errors on published
    # figures held out from every fit, absolute (this board's figures, its constant from
    # another table) and model to model (one constant per table and mode, leave-one-out,
    # on the boards estimated with this target), as the committed study found them.
    held_out_absolute: HeldOut = field(default_factory=HeldOut)
    held_out_ratios: HeldOut = field(default_factory=HeldOut)
    held_out_source: str = ""
    emulation_notes: str = ""

    def to_dict(self) -> dict:
        """Plain data, as the bundle's ``target.json`` holds it."""
        return dataclasses.asdict(self)


def parse_midr(midr: str) -> dict:
    """The fields of a MIDR_EL1 value (``0x410fd083``: Arm, r0p3, part 0xd08, a Cortex-A72)."""
    text = str(midr).strip().lower()
    if not text.startswith("0x") or len(text) != 10:
        raise LiteconvError(f"midr: {midr!r} is not a MIDR_EL1 value: give 0x and 8 hex digits, "
                            "as /proc/cpuinfo's fields make it (e.g. 0x410fd083, a Cortex-A72)")  # fmt: skip
    try:
        value = int(text, 16)
    except ValueError:
        raise LiteconvError(f"midr: {midr!r} is not hexadecimal (e.g. 0x410fd083)") from None
    return {"implementer": value >> 24, "variant": (value >> 20) & 0xF,
            "architecture": (value >> 16) & 0xF, "part": (value >> 4) & 0xFFF,
            "revision": value & 0xF}  # fmt: skip


def target_from_dict(data, source: str) -> Target:
    """Check plain data (a target YAML or ``target.json``) against the schema."""
    if not isinstance(data, dict):
        raise LiteconvError(f"{source}: expected a mapping of target settings")
    target = build(Target, data, "", source)
    if not target.threads or min(target.threads) < 1:
        raise LiteconvError(f"{source}: threads: expected positive integers")
    if target.cores is not None and any(c < 0 for c in target.cores):
        raise LiteconvError(f"{source}: cores: expected non-negative integers")
    if not target.xnnpack:
        raise LiteconvError(f"{source}: xnnpack: expected a list of true/false")
    caches = (target.l1d_kb, target.l1d_ways, target.l2_kb, target.l2_ways)
    if any(caches) and not all(caches):
        raise LiteconvError(f"{source}: l1d_kb, l1d_ways, l2_kb, l2_ways: give all four (the "
                            "emulated cache model) or none")  # fmt: skip
    for n, kb, ways in (
        ("l1d", target.l1d_kb, target.l1d_ways),
        ("l2", target.l2_kb, target.l2_ways),
    ):
        if kb and (kb * 1024 // 64) % ways:
            raise LiteconvError(f"{source}: {n}_kb = {kb} is not a whole number of {ways}-way "
                                "sets of 64-byte lines")  # fmt: skip
    if target.dram_mb_s and not all(caches):
        raise LiteconvError(f"{source}: dram_mb_s needs the cache sizes (l1d_kb, l1d_ways, "
                            "l2_kb, l2_ways) to count the memory traffic")  # fmt: skip
    if target.l2_shared and not all(caches):
        raise LiteconvError(f"{source}: l2_shared needs the cache sizes (l1d_kb, l1d_ways, "
                            "l2_kb, l2_ways) to count the L1D misses it returns")  # fmt: skip
    if target.dram_peak_mb_s and target.dram_peak_mb_s < target.dram_mb_s:
        raise LiteconvError(f"{source}: dram_peak_mb_s = {target.dram_peak_mb_s:g} is below "
                            f"dram_mb_s = {target.dram_mb_s:g}: the bus's peak bounds what one "
                            "thread sustains")  # fmt: skip
    if target.dram_peak_mb_s and not target.dram_mb_s:
        raise LiteconvError(f"{source}: dram_peak_mb_s needs dram_mb_s (one thread's "
                            "sustained bandwidth) beside it")  # fmt: skip
    if target.dram_all_threads_mb_s and not (
        target.dram_mb_s <= target.dram_all_threads_mb_s <= (target.dram_peak_mb_s or math.inf)
    ):
        raise LiteconvError(f"{source}: dram_all_threads_mb_s = {target.dram_all_threads_mb_s:g} "
                            f"must lie between dram_mb_s ({target.dram_mb_s:g}, one thread) and "
                            f"dram_peak_mb_s ({target.dram_peak_mb_s:g}, the bus)")  # fmt: skip
    if target.midr:
        try:
            parse_midr(target.midr)
        except LiteconvError as exc:
            raise LiteconvError(f"{source}: {exc}") from None
        if target.arch != "aarch64":
            raise LiteconvError(f"{source}: midr: only an aarch64 target's emulated guest reads "
                                f"it (this one is {target.arch or 'no arch'}): remove it")  # fmt: skip
    return target


USER_HOME_ENV = "LITECONV_HOME"


def user_dir() -> Path:
    """The user's own liteconv folder: ``$LITECONV_HOME``, else ``$XDG_CONFIG_HOME/liteconv``
    (``~/.config/liteconv``). Targets there (``targets/NAME.yaml``) are found by name."""
    if os.environ.get(USER_HOME_ENV):
        return Path(os.environ[USER_HOME_ENV]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "liteconv"


def packaged_configs() -> Path:
    """The configs shipped inside the package (``liteconv/configs``): ``base.yaml``,
    ``experiments/``, ``targets/``, ``mcu/``."""
    return Path(str(resources.files("liteconv"))) / "configs"


def config_dirs(kind: str) -> list[tuple[str, Path]]:
    """Where names of ``kind`` (``targets``, ``mcu``) are looked up, first match wins:
    ``(source, folder)`` for this folder's ``configs/KIND`` (a project or checkout), the
    user folder's ``KIND/``, the package's."""
    here = Path("configs") / kind
    if here.is_dir() and here.resolve() == (packaged_configs() / kind).resolve():
        here = Path("/nonexistent")  # a source checkout: ./configs is the package's folder
    return [(f"./configs/{kind}", here), ("user", user_dir() / kind),
            ("liteconv", packaged_configs() / kind)]  # fmt: skip


def find_named(kind: str) -> dict[str, tuple[str, Path]]:
    """Every known name of ``kind``: ``{name: (source, path)}`` (the first folder that has
    it, ``config_dirs``)."""
    found: dict[str, tuple[str, Path]] = {}
    for source, folder in config_dirs(kind):
        for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else ():
            found.setdefault(path.stem, (source, path))
    return found


def find_targets() -> dict[str, tuple[str, Path]]:
    """Every known target name: ``{name: (source, path)}`` (the first folder that has it)."""
    return find_named("targets")


def list_targets() -> list[str]:
    """Names of the known targets."""
    return sorted(find_targets())


def read_settings(path: Path) -> object:
    """A settings file (YAML, or JSON by its suffix) as plain data, ``name`` defaulting to
    the file's stem; unreadable or invalid text is a one-line error naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise LiteconvError(f"{path}: cannot read ({err})") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as err:
            raise LiteconvError(f"{path}: not valid JSON ({err})") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise LiteconvError(f"{path}: invalid YAML ({str(err).splitlines()[0]})") from None
    data = {} if data is None else data
    if isinstance(data, dict):
        data.setdefault("name", path.stem)
    return data


def load_target(name_or_path: str) -> Target:
    """Load and check a target by name, YAML path or JSON path; one-line errors."""
    path = Path(name_or_path)
    if not path.suffix:
        path = find_targets().get(name_or_path, ("", path))[1]
    if not path.is_file():
        raise LiteconvError(
            f"--target {name_or_path}: unknown target; known: {', '.join(list_targets())} "
            "(or give a YAML path)"
        )
    return target_from_dict(read_settings(path), str(path))
