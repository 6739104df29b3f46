"""MCU boards (``liteconv/configs/mcu/*.yaml``, or a YAML path): flash, RAM, core, clock.

Two allowances are stated here, not measured (no Arm toolchain or TFLM source is
reachable here to build a firmware): the TFLM runtime's flash, ``runtime_flash_kb`` (TFLM's
README: "the core runtime just fits in 16 KB on an Arm Cortex M3"; each kernel adds code,
``kernel_flash_kb`` per distinct operator), and the RAM an application keeps besides the
tensor arena (stack, heap, buffers: ``ram_reserve_kb``). Override them in a board's YAML.

Example:
    >>> load_board("nano33-ble-sense").ram_kb
    256
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from liteconv.device.errors import LiteconvError
from liteconv.device.schema import build, check
from liteconv.device.targets import find_named, packaged_configs, read_settings


@dataclass
class Board:
    """One microcontroller board."""

    name: str = ""
    description: str = ""
    core: str = ""
    clock_mhz: float = field(default=0.0, metadata=check(0, exclusive_min=True))
    flash_kb: int = field(default=0, metadata=check(1))
    ram_kb: int = field(default=0, metadata=check(1))
    source: str = ""
    runtime_flash_kb: float = field(default=16.0, metadata=check(0))
    kernel_flash_kb: float = field(default=4.0, metadata=check(0))
    ram_reserve_kb: float = field(default=16.0, metadata=check(0))


def list_boards() -> list[str]:
    """Names of the known boards: ``./configs/mcu``, the user folder's ``mcu/``
    (``device.targets.user_dir``), the package's (``find_named``)."""
    return sorted(find_named("mcu"))


def shipped_boards() -> list[Board]:
    """The boards shipped in the package, read from there even where a user's board of
    the same name shadows one (what ``study mcu`` is made on, alike on every machine)."""
    return [load_board(str(p)) for p in sorted((packaged_configs() / "mcu").glob("*.yaml"))]


def load_board(name_or_path: str) -> Board:
    """A board by name or YAML path; one-line errors."""
    path = Path(name_or_path)
    if not path.suffix:
        path = find_named("mcu").get(name_or_path, ("", path))[1]
    if not path.is_file():
        raise LiteconvError(f"--board {name_or_path}: unknown board; known: "
                            f"{', '.join(list_boards())} (or give a YAML path)")  # fmt: skip
    data = read_settings(path)
    if not isinstance(data, dict):
        raise LiteconvError(f"{path}: expected a mapping of board settings")
    return build(Board, data, "", str(path))
