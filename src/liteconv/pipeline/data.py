"""Datasets as ``tf.data`` pipelines with a fixed train/validation/test split.

The raw data comes from ``liteconv.pipeline.sources``; here the whole training index is
shuffled (seeded) before the validation split, ``limit`` and the shuffle buffer. Preprocessing (scale to [0, 1], channels, resize to the
model input) happens inside the pipeline, so the model and its TFLite export take float
images in [0, 1] of ``input_shape``.

Example:
    >>> splits = load_dataset(cfg.data, batch_size=128, seed=42)
    >>> model.fit(splits.train, validation_data=splits.val)
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from liteconv.compat import tf
from liteconv.config import AugmentConfig, DataConfig
from liteconv.device import caches
from liteconv.device.errors import LiteconvError
from liteconv.device.files import atomic_write_json, read_json
from liteconv.pipeline.sources import Source, balanced_limit, load_source, shuffled, split_off

AUTOTUNE = tf.data.AUTOTUNE


def decode(path, channels: int):
    """The image file at ``path`` (a path tensor or string) decoded to ``channels``: what the
    pipelines read, and what ``undecodable`` checks before them."""
    return tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)


def undecodable(files: list[str], channels: int = 3) -> list[str]:
    """The files of ``files`` TensorFlow's image decoder rejects (truncated or corrupt
    although their header looked right), all decoded once, in parallel."""
    ds = tf.data.Dataset.from_tensor_slices(np.asarray(files, dtype=str))
    ds = ds.map(lambda f: (f, tf.shape(decode(f, channels))),
                num_parallel_calls=AUTOTUNE).ignore_errors()  # fmt: skip
    ok = {f.decode() for f, _ in ds.as_numpy_iterator()}
    return [f for f in files if f not in ok]


def _decode_reason(path: str, channels: int) -> str:
    try:
        decode(path, channels)
    except tf.errors.OpError as err:
        first = (str(err.message).strip().splitlines() or [""])[0]
        return re.sub(r"\s*\[Op:.*$", "", first.split("}}")[-1]).strip()[:120]
    return "decodes on its own"


def drop_undecodable(source: Source, cfg: DataConfig, channels: int) -> Source:
    """``source`` (an image folder) once every file is known to decode: a file that does
    not (a truncated copy, a corrupt photo) is a one-line error naming it, before any
    training, or with ``data.skip_bad_images`` dropped with a note. The answer is cached
    per folder state (names, sizes, modification times), so the decoding pass runs once."""
    splits = {"train": (source.x_train, source.y_train), "test": (source.x_test, source.y_test)}
    if source.x_val is not None:
        splits["val"] = (source.x_val, source.y_val)
    files = [str(f) for x, _ in splits.values() for f in x]
    digest = hashlib.sha256(f"{channels}".encode())
    for f in files:
        stat = os.stat(f)
        digest.update(f"{f}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    record = caches.IMAGES / f"{digest.hexdigest()[:24]}.json"
    if record.is_file():
        bad = read_json(record, "image decode check")["undecodable"]
    else:
        print(f"checking that {len(files)} image files decode (once for this folder state)",
              flush=True)  # fmt: skip
        bad = undecodable(files, channels)
        atomic_write_json(record, {"files": len(files), "undecodable": bad})
    if not bad:
        return source
    key = "data.train_path" if cfg.train_path else "data.path"
    if not cfg.skip_bad_images:
        raise LiteconvError(
            f"{key}: {len(bad)} image file(s) cannot be decoded (truncated or corrupt), e.g. "
            f"{bad[0]} ({_decode_reason(bad[0], channels)}); remove them or set "
            "data.skip_bad_images: true"
        )
    print(f"note: skipping {len(bad)} image file(s) that cannot be decoded, e.g. {bad[0]}")
    gone = set(bad)
    kept = {name: (x[keep], y[keep]) for name, (x, y) in splits.items()
            for keep in [np.array([str(f) not in gone for f in x], dtype=bool)]}  # fmt: skip
    return dataclasses.replace(
        source, x_train=kept["train"][0], y_train=kept["train"][1], x_test=kept["test"][0],
        y_test=kept["test"][1], x_val=kept["val"][0] if "val" in kept else None,
        y_val=kept["val"][1] if "val" in kept else None,
    )  # fmt: skip


@dataclass
class DataSplits:
    """The three batched pipelines plus what travels with a run."""

    train: tf.data.Dataset
    val: tf.data.Dataset | None
    test: tf.data.Dataset
    class_names: list[str]
    input_shape: tuple[int, int, int]
    sizes: dict[str, int]
    fingerprint: str
    source: str
    batch_size: int = 1
    _raw: dict[str, tuple[np.ndarray, np.ndarray]] = field(repr=False, default_factory=dict)
    _load: Callable | None = field(repr=False, default=None)

    @property
    def steps_per_epoch(self) -> int:
        """Training batches per epoch (the last one may be partial)."""
        return max(1, math.ceil(self.sizes["train"] / self.batch_size))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_counts(self) -> dict[str, list[int]]:
        """Samples per class in each split: ``{"train": [n_0, n_1, ...], "val": ..., ...}``."""
        return {
            split: np.bincount(y, minlength=self.num_classes).tolist()
            for split, (_, y) in self._raw.items()
        }

    def counts_table(self, max_classes: int = 20) -> str:
        """Per-class sample counts of every split as a text table (the first ``max_classes``)."""
        from liteconv.device.tables import format_table

        counts = self.class_counts()
        splits = [s for s in ("train", "val", "test") if sum(counts.get(s, []))]
        rows = [[name, *(counts[s][i] for s in splits)]
                for i, name in enumerate(self.class_names[:max_classes])]  # fmt: skip
        if self.num_classes > max_classes:
            rows.append([f"... {self.num_classes - max_classes} more classes",
                         *(sum(counts[s][max_classes:]) for s in splits)])  # fmt: skip
        rows.append(["total", *(sum(counts[s]) for s in splits)])
        return format_table(["class", *splits], rows)

    def arrays(
        self, split: str = "test", limit: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Preprocessed model inputs (float32) and labels of ``split``, in split order."""
        x, y = self._raw[split]
        if limit is not None:
            x, y = x[:limit], y[:limit]
        ds = tf.data.Dataset.from_tensor_slices(x).map(self._load, num_parallel_calls=AUTOTUNE)
        images = (
            np.concatenate([b.numpy() for b in ds.batch(1024)])
            if len(x)
            else np.zeros((0, *self.input_shape), np.float32)
        )
        return images.astype(np.float32), np.asarray(y, dtype=np.int64)


# ----------------------------------------------------------------------------- pipeline


def fingerprint(source: Source) -> str:
    """A short SHA-256 of the data (file names and sizes for image folders)."""
    digest = hashlib.sha256(source.name.encode())
    arrays = [source.x_train, source.y_train, source.x_test, source.y_test]
    if source.x_val is not None:
        arrays += [source.x_val, source.y_val]
    for arr in arrays:
        if source.from_files and arr.dtype.kind in "US":
            for f in arr:
                digest.update(f"{f}:{os.path.getsize(f)}".encode())
        else:
            digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()[:16]


def _loader(source: Source, cfg: DataConfig) -> tuple[Callable, tuple[int, int, int]]:
    h, w, c = source.native_shape
    if cfg.image_size:
        h, w = cfg.image_size
    channels = cfg.channels or c

    def load(x):
        if source.from_files:
            x = decode(x, channels)
        image = tf.cast(x, tf.float32) / 255.0
        if image.shape[-1] == 1 and channels == 3:
            image = tf.image.grayscale_to_rgb(image)
        elif image.shape[-1] == 3 and channels == 1:
            image = tf.image.rgb_to_grayscale(image)
        if source.from_files or (h, w) != tuple(source.native_shape[:2]):
            image = tf.image.resize(image, (h, w), antialias=True)
        return tf.ensure_shape(image, (h, w, channels))

    return load, (h, w, channels)


def _augment(aug: AugmentConfig, shape: tuple[int, int, int], seed: int):
    h, w, c = shape

    def apply(image, label):
        if aug.flip:
            image = tf.image.random_flip_left_right(image, seed=seed)
        if aug.translate:
            t = aug.translate
            image = tf.pad(image, [[t, t], [t, t], [0, 0]])
            image = tf.image.random_crop(image, (h, w, c), seed=seed + 1)
        return image, label

    return apply


def load_dataset(
    cfg: DataConfig,
    *,
    batch_size: int,
    seed: int,
    augmentation: AugmentConfig | None = None,
) -> DataSplits:
    """Build the train/validation/test pipelines for ``cfg``.

    Args:
        cfg: the ``data:`` section.
        batch_size: global batch size of every split.
        seed: shuffling and augmentation seed (the split itself uses ``cfg.split_seed``).
        augmentation: training-only augmentation; ``None`` for none.
    """
    source = load_source(cfg)
    if source.from_files:
        source = drop_undecodable(source, cfg, cfg.channels or source.native_shape[2])
    # The whole index is shuffled (seeded) before the validation split, the limit and the
    # shuffle buffer: sources sorted by class (image folders) would otherwise give batches
    # of one or two classes (measured: 15 points of test accuracy lost on CIFAR-10 folders).
    x_all, y_all = shuffled(source.x_train, source.y_train, cfg.split_seed)
    if source.x_val is not None:
        (x_train, y_train) = (x_all, y_all)
        x_val, y_val = shuffled(source.x_val, source.y_val, cfg.split_seed + 1)
    else:
        (x_train, y_train), (x_val, y_val) = split_off(
            x_all, y_all, cfg.validation_split, cfg.split_seed
        )
    if cfg.limit is not None:
        x_train, y_train = balanced_limit(x_train, y_train, cfg.limit, cfg.split_seed)
    if len(x_train) == 0:
        raise LiteconvError(
            f"data.validation_split {cfg.validation_split}: leaves no training data from "
            f"{len(x_all)} samples; lower it (e.g. 0.1)"
        )
    load, shape = _loader(source, cfg)

    def pipeline(x, y, training: bool):
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        ds = ds.map(lambda a, b: (load(a), b), num_parallel_calls=AUTOTUNE)
        if cfg.cache:
            ds = ds.cache()
        if training:
            ds = ds.shuffle(
                min(cfg.shuffle_buffer, len(x)), seed=seed, reshuffle_each_iteration=True
            )
            if augmentation and (augmentation.flip or augmentation.translate):
                ds = ds.map(_augment(augmentation, shape, seed), num_parallel_calls=AUTOTUNE)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
        return ds.batch(batch_size).prefetch(AUTOTUNE).with_options(options)

    return DataSplits(
        train=pipeline(x_train, y_train, True),
        val=pipeline(x_val, y_val, False) if len(x_val) else None,
        test=pipeline(source.x_test, source.y_test, False),
        class_names=source.class_names,
        input_shape=shape,
        sizes={"train": len(x_train), "val": len(x_val), "test": len(source.x_test)},
        fingerprint=fingerprint(source),
        source=source.location,
        batch_size=batch_size,
        _raw={
            "train": (x_train, y_train),
            "val": (x_val, y_val),
            "test": (source.x_test, source.y_test),
        },
        _load=load,
    )
