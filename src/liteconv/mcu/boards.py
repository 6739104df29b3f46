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
from liteconv.device.targets import packaged_configs


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


def board_dir() -> Path:
    """The boards shipped with liteconv."""
    return packaged_configs() / "mcu"


def list_boards() -> list[str]:
    """Names of the shipped boards."""
    return sorted(p.stem for p in board_dir().glob("*.yaml"))


def load_board(name_or_path: str) -> Board:
    """A board by name or YAML path; one-line errors."""
    import yaml

    path = Path(name_or_path)
    if not path.suffix:
        path = board_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        raise LiteconvError(f"--board {name_or_path}: unknown board; known: "
                            f"{', '.join(list_boards())} (or give a YAML path)")  # fmt: skip
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise LiteconvError(f"{path}: cannot read the board ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise LiteconvError(f"{path}: expected a mapping of board settings")
    data.setdefault("name", path.stem)
    return build(Board, data, "", str(path))
