"""Height and width of a PNG, JPEG, GIF or BMP file from its header, without decoding it.

Image folders with ``data.image_size: null`` keep the images' native size, which must
then be one size for every file: reading headers tells in a fraction of a second per
thousand files, before any training starts.

Example:
    >>> image_size("data/cats/001.png")
    (32, 32)
"""

from __future__ import annotations

import struct
from pathlib import Path

# JPEG start-of-frame markers (baseline, progressive, lossless, ...): not DHT/JPG/DAC
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(fh) -> tuple[int, int] | None:
    fh.seek(2)
    while True:
        byte = fh.read(1)
        while byte and byte != b"\xff":
            byte = fh.read(1)
        while byte == b"\xff":
            byte = fh.read(1)
        if not byte:
            return None
        marker = byte[0]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            continue
        length = fh.read(2)
        if len(length) < 2:
            return None
        if marker in _SOF:
            head = fh.read(5)
            return struct.unpack(">HH", head[1:5]) if len(head) == 5 else None
        fh.seek(struct.unpack(">H", length)[0] - 2, 1)


def image_size(path: str | Path) -> tuple[int, int] | None:
    """``(height, width)`` of the image at ``path``; ``None`` if its header cannot tell."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(26)
            if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24:
                width, height = struct.unpack(">II", head[16:24])
                return height, width
            if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
                width, height = struct.unpack("<HH", head[6:10])
                return height, width
            if head.startswith(b"BM") and len(head) >= 26:
                width, height = struct.unpack("<ii", head[18:26])
                return abs(height), width  # negative height: rows stored top-down
            if head.startswith(b"\xff\xd8"):
                return _jpeg(fh)
    except OSError:
        return None
    return None
