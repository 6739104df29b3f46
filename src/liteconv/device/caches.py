"""Where liteconv keeps what it can rebuild: one root, ``.cache/`` in the working folder
(``LITECONV_CACHE`` moves it), one sub-folder per kind. Every command's cache option
defaults to these; deleting the root only costs the time to rebuild.

Example:
    >>> str(EMULATE)
    '.cache/emulate'
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(os.environ.get("LITECONV_CACHE") or ".cache")
EMULATE = ROOT / "emulate"  # instruction counts per model hash + core (emulate.estimate)
ARM64 = ROOT / "arm64"  # the emulated aarch64 user space (emulate.userspace)
LATENCY = ROOT / "latency"  # measured block latencies per machine (bench.profile)
PUBLISHED_MODELS = ROOT / "published-models"  # the emulation study's converted models
IMAGES = ROOT / "images"  # which files of an image folder TensorFlow cannot decode (pipeline.data)
