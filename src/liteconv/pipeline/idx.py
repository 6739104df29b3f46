"""A small reader for the IDX format of (Fashion-)MNIST, plain or gzip-compressed.

Layout: two zero bytes, a dtype code, the number of dimensions, then each dimension as a
big-endian uint32, then the data in C order (http://yann.lecun.com/exdb/mnist/).

Example:
    >>> images = read_idx("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
    >>> images.shape
    (10000, 28, 28)
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from liteconv.device.errors import LiteconvError

_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) into a numpy array; corrupt files raise one line."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:
        raise LiteconvError(f"{path}: cannot read IDX file ({err})") from err
    if len(raw) < 4 or raw[0:2] != b"\x00\x00" or raw[2] not in _DTYPES:
        raise LiteconvError(f"{path}: not an IDX file (bad magic number)")
    dtype, ndim = np.dtype(_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise LiteconvError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise LiteconvError(
            f"{path}: IDX data has {len(raw) - header} bytes, header promises {expected} "
            "(truncated or corrupt download)"
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))
    )
