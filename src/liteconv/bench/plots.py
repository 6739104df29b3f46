"""Matplotlib for the result plots: headless (Agg), PNGs written atomically."""

from __future__ import annotations

import io
from pathlib import Path

from liteconv.device.files import atomic_write_bytes


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str | Path) -> None:
    """``fig`` as a 120-dpi PNG at ``path``, written to a temp file and renamed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
