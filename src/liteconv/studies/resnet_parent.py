"""A second parent for ``flatten``: a plain-Keras ResNet on a generated image folder.

The flatten study's first parent (``baseline_cnn``) is this project's own design. This
one is not: ``small_resnet`` is the CIFAR-style residual network of He et al. 2016
(arXiv:1512.03385, section 4.2: 3×3 convolutions, BatchNorm, stride-2 convolutions to
downsample, 1×1 projection shortcuts where the shape changes), built with stock Keras
layers only, trained through ``liteconv train`` from its saved initial weights
(``model.init_from``) on an image folder, then decomposed by ``flatten_study``.

The folder (``write_shapes_folder``) is CIFAR-like and generated here (no download):
32×32 RGB PNGs, ten classes of drawn figures (disk, ring, square, frame, triangle, plus,
cross, bar pair, crescent, dots), each with a random position, size, rotation, colours
(figure and background at least 90 grey levels apart), clutter lines and pixel noise;
PNGs in ``<root>/<class>/``, written into a temporary folder and renamed when complete.

Example:
    >>> root = write_shapes_folder("data/shapes32", per_class=600)
    >>> model = small_resnet((32, 32, 3), 10)
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

import numpy as np

from liteconv.compat import keras

CLASSES = ("disk", "ring", "square", "frame", "triangle", "plus", "cross", "bars",
           "crescent", "dots")  # fmt: skip


def _colour_pair(rng) -> tuple[tuple[int, ...], tuple[int, ...]]:
    while True:
        fg, bg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        if abs(int(fg.mean()) - int(bg.mean())) >= 90:
            return tuple(int(v) for v in fg), tuple(int(v) for v in bg)


def _rotated(points, angle, cx, cy):
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]


def draw_figure(kind: str, rng, size: int = 32) -> np.ndarray:
    """One ``size × size × 3`` uint8 image of figure ``kind`` (one of ``CLASSES``)."""
    from PIL import Image, ImageDraw

    scale = 4  # drawn at 4× and downsampled: anti-aliased edges
    big = size * scale
    fg, bg = _colour_pair(rng)
    image = Image.new("RGB", (big, big), bg)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(0, 3)):  # clutter: thin lines in a third colour
        xy = [tuple(int(v) for v in rng.integers(0, big, 2)) for _ in range(2)]
        draw.line(xy, fill=tuple(int(v) for v in rng.integers(0, 256, 3)), width=scale)
    r = rng.uniform(0.22, 0.36) * big
    cx, cy = (rng.uniform(r + scale, big - r - scale) for _ in range(2))
    angle = rng.uniform(0, 2 * math.pi)
    w = max(scale, int(r * 0.3))
    box = [cx - r, cy - r, cx + r, cy + r]
    if kind == "disk":
        draw.ellipse(box, fill=fg)
    elif kind == "ring":
        draw.ellipse(box, outline=fg, width=w)
    elif kind in ("square", "frame"):
        corners = _rotated([(-r, -r), (r, -r), (r, r), (-r, r)], angle, cx, cy)
        if kind == "square":
            draw.polygon(corners, fill=fg)
        else:
            draw.line(corners + corners[:1], fill=fg, width=w, joint="curve")
    elif kind == "triangle":
        pts = [(r * math.cos(a), r * math.sin(a)) for a in (0, 2 * math.pi / 3, 4 * math.pi / 3)]
        draw.polygon(_rotated(pts, angle, cx, cy), fill=fg)
    elif kind in ("plus", "cross"):
        turn = angle % (math.pi / 8) if kind == "plus" else math.pi / 4 + angle % (math.pi / 8)
        for a in (turn, turn + math.pi / 2):
            (x0, y0), (x1, y1) = _rotated([(-r, 0), (r, 0)], a, cx, cy)
            draw.line([(x0, y0), (x1, y1)], fill=fg, width=w)
    elif kind == "bars":
        for off in (-0.5 * r, 0.5 * r):
            (x0, y0), (x1, y1) = _rotated([(-r, off), (r, off)], angle, cx, cy)
            draw.line([(x0, y0), (x1, y1)], fill=fg, width=w)
    elif kind == "crescent":
        draw.ellipse(box, fill=fg)
        dx, dy = 0.45 * r * math.cos(angle), 0.45 * r * math.sin(angle)
        draw.ellipse([box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy], fill=bg)
    elif kind == "dots":
        for a in (angle, angle + 2 * math.pi / 3, angle + 4 * math.pi / 3):
            px, py = cx + 0.6 * r * math.cos(a), cy + 0.6 * r * math.sin(a)
            d = 0.3 * r
            draw.ellipse([px - d, py - d, px + d, py + d], fill=fg)
    else:
        raise ValueError(f"Unknown figure {kind!r}; expected one of {', '.join(CLASSES)}")
    small = np.asarray(image.resize((size, size), Image.LANCZOS), np.float32)
    small += rng.normal(0, 12, small.shape)
    return np.clip(small, 0, 255).astype(np.uint8)


def write_shapes_folder(root: str | Path, *, per_class: int = 600, size: int = 32,
                        seed: int = 0) -> Path:  # fmt: skip
    """The image folder at ``root`` (made if missing or incomplete; kept if complete)."""
    from PIL import Image

    root = Path(root)
    if all(len(list((root / c).glob("*.png"))) == per_class for c in CLASSES):
        return root
    rng = np.random.default_rng(seed)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        for kind in CLASSES:
            (tmp / kind).mkdir()
            for i in range(per_class):
                Image.fromarray(draw_figure(kind, rng, size)).save(tmp / kind / f"{i:05d}.png")
        if root.exists():
            shutil.rmtree(root)
        tmp.rename(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return root


def small_resnet(input_shape, num_classes: int, *, widths=(32, 64, 128), blocks: int = 1,
                 weight_decay: float = 1e-4, name: str = "resnet_cifar"):  # fmt: skip
    """He et al.'s CIFAR ResNet with ``blocks`` basic blocks per stage: a 3×3 stem, then
    one stage per width (the first block of stages 2, 3 … downsamples with a stride-2
    3×3 convolution and a 1×1 stride-2 projection shortcut), global pooling, softmax.
    Stock Keras layers only (``blocks=3``, widths 16/32/64 is ResNet-20)."""
    reg = keras.regularizers.l2(weight_decay) if weight_decay else None

    def conv(x, filters, kernel, stride, label):
        return keras.layers.Conv2D(filters, kernel, strides=stride, padding="same",
                                   use_bias=False, kernel_regularizer=reg,
                                   kernel_initializer="he_normal", name=label)(x)  # fmt: skip

    def bn(x, label):
        return keras.layers.BatchNormalization(momentum=0.9, name=label)(x)

    inputs = keras.Input(tuple(input_shape))
    x = keras.layers.ReLU(name="stem_relu")(
        bn(conv(inputs, widths[0], 3, 1, "stem_conv"), "stem_bn")
    )
    for s, width in enumerate(widths, 1):
        for b in range(1, blocks + 1):
            stride = 2 if s > 1 and b == 1 else 1
            label = f"stage{s}_block{b}"
            y = keras.layers.ReLU(name=f"{label}_relu1")(
                bn(conv(x, width, 3, stride, f"{label}_conv1"), f"{label}_bn1")
            )
            y = bn(conv(y, width, 3, 1, f"{label}_conv2"), f"{label}_bn2")
            shortcut = x
            if stride != 1 or x.shape[-1] != width:
                shortcut = bn(conv(x, width, 1, stride, f"{label}_proj"), f"{label}_proj_bn")
            x = keras.layers.ReLU(name=f"{label}_out")(
                keras.layers.Add(name=f"{label}_add")([y, shortcut])
            )
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


CONFIG = "configs/experiments/shapes_resnet.yaml"


def train_resnet_parent(config: str | Path = CONFIG, *, per_class: int = 600,
                        overrides: dict | None = None, out_runs: str | Path = "runs",
                        echo=print):  # fmt: skip
    """The trained parent: the folder written if needed, ``small_resnet`` saved as the
    initial weights and trained by ``liteconv train`` (a finished run of the same config
    is reused); returns the run."""
    from liteconv.config import load_config
    from liteconv.pipeline import run as runlib
    from liteconv.pipeline.train import train
    from liteconv.studies.flatten_study import _finished

    cfg = load_config(config, overrides or {}, check_model=False)
    if cfg.data.name != "image_folder" or not cfg.data.path:
        raise ValueError(f"{config}: expected data.name image_folder with a data.path")
    folder = write_shapes_folder(cfg.data.path, per_class=per_class, seed=cfg.data.split_seed)
    echo(f"image folder: {folder} ({len(CLASSES)} classes x {per_class} generated PNGs)")
    done = _finished(out_runs, cfg.experiment, None, cfg.train.epochs)
    if done is not None and done.config().data.path == cfg.data.path:
        echo(f"reusing the trained parent {done.path}")
        return done
    size = cfg.data.image_size or [32, 32]
    init = Path(out_runs) / f"{cfg.experiment}_init.keras"
    init.parent.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(cfg.train.seed)
    runlib.save_model_atomic(small_resnet((*size, cfg.data.channels or 3), len(CLASSES)), init)
    import dataclasses

    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model,
                                                            init_from=str(init.resolve())))  # fmt: skip
    return train(cfg, out=out_runs, echo=echo)
