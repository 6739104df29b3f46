"""Raw data sources: uint8 NHWC arrays, or file paths for image folders, with their split.

``fashion_mnist`` (Debian's dataset-fashion-mnist IDX files, then the Keras cache, then a
Keras download), ``digits`` (scikit-learn, always offline), ``image_folder`` (class
sub-folders; ``train/``/``val/``/``test/`` split folders kept as given), ``tfds`` and
``synthetic``. Splits drawn here are stratified and seeded, and never keep the order on
disk. ``liteconv.pipeline.data`` turns a source into ``tf.data`` pipelines.

Example:
    >>> source = load_source(DataConfig(name="digits"))
    >>> source.x_train.shape
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from liteconv.compat import keras
from liteconv.config import DataConfig
from liteconv.device.errors import LiteconvError
from liteconv.pipeline.idx import read_idx
from liteconv.pipeline.image_header import image_size

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
FASHION_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}
# Image formats a photo folder may hold that TensorFlow's decoders do not read.
OTHER_IMAGE_EXTENSIONS = {".webp", ".heic", ".heif", ".avif", ".tif", ".tiff", ".jxl", ".jp2",
                          ".dng", ".cr2", ".nef", ".arw", ".raw", ".ppm", ".pgm", ".pnm",
                          ".ico", ".svg"}  # fmt: skip


@dataclass
class Source:
    """Raw, unprocessed data: uint8 NHWC arrays, or file paths for an image folder."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    location: str
    native_shape: tuple[int, int, int]
    from_files: bool = False
    x_val: np.ndarray | None = None  # a validation split given by the source (val/ folder)
    y_val: np.ndarray | None = None


def _fashion_dirs(path: str | None) -> list[Path]:
    dirs = [Path(path)] if path else []
    if os.environ.get("LITECONV_FASHION_MNIST"):
        dirs.append(Path(os.environ["LITECONV_FASHION_MNIST"]))
    dirs += [DEBIAN_FASHION_MNIST, Path.home() / ".keras" / "datasets" / "fashion-mnist"]
    return dirs


def load_fashion_mnist(path: str | None = None) -> Source:
    """The real 70k Fashion-MNIST images from IDX files, or a Keras download."""
    for folder in _fashion_dirs(path):
        files = {k: folder / v for k, v in FASHION_MNIST_FILES.items()}
        if all(f.exists() for f in files.values()):
            arrays = {k: read_idx(f) for k, f in files.items()}
            return Source(
                "fashion_mnist",
                arrays["x_train"][..., None],
                arrays["y_train"].astype(np.int64),
                arrays["x_test"][..., None],
                arrays["y_test"].astype(np.int64),
                list(FASHION_MNIST_CLASSES),
                str(folder),
                (28, 28, 1),
            )
        if path and folder == Path(path):
            missing = [f.name for f in files.values() if not f.exists()]
            raise LiteconvError(f"data.path {path}: missing Fashion-MNIST file(s) {missing}")
    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    except Exception as err:  # no network: urllib, HTTP and SSL errors alike
        raise LiteconvError(
            "Fashion-MNIST not found in "
            f"{', '.join(str(d) for d in _fashion_dirs(path))} and the Keras download failed "
            f"({type(err).__name__}); install it with 'sudo apt-get install dataset-fashion-mnist' "
            "or set data.path to a folder holding the four *-ubyte.gz files"
        ) from None
    return Source(
        "fashion_mnist", x_train[..., None], y_train.astype(np.int64), x_test[..., None],
        y_test.astype(np.int64), list(FASHION_MNIST_CLASSES), "keras download", (28, 28, 1),
    )  # fmt: skip


def split_off(x, y, fraction: float, seed: int):
    """Deterministically split ``fraction`` of each class of (x, y) off: (kept, split_off).

    Stratified (every class loses the same share), and both parts come out in a seeded
    random order, never in the order of the source: an image folder lists its files class
    by class, and that order must not reach the batches.
    """
    order = np.random.default_rng(seed).permutation(len(x))
    off = np.zeros(len(x), bool)
    y_ordered = np.asarray(y)[order]
    for c in np.unique(y_ordered):
        members = order[y_ordered == c]
        off[members[: int(round(len(members) * fraction))]] = True
    keep, gone = order[~off[order]], order[off[order]]
    return (x[keep], y[keep]), (x[gone], y[gone])


def shuffled(x, y, seed: int):
    """(x, y) in a seeded random order (the whole index, before any split or limit)."""
    order = np.random.default_rng(seed).permutation(len(x))
    return x[order], y[order]


def balanced_limit(x, y, limit: int, seed: int):
    """At most ``limit`` samples with each class's share of (x, y) kept, in random order.

    Each class gets ``floor(limit * share)`` samples, the remainder goes to the classes
    with the largest fractional parts; the result is shuffled (seeded).
    """
    if limit >= len(x):
        return x, y
    classes, counts = np.unique(y, return_counts=True)
    exact = limit * counts / counts.sum()
    take = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - take))[: limit - int(take.sum())]:
        take[i] += 1
    keep = np.concatenate([np.flatnonzero(y == c)[:n] for c, n in zip(classes, take)])
    keep = keep[np.random.default_rng(seed).permutation(len(keep))]
    return x[keep], y[keep]


def load_digits(test_split: float, seed: int) -> Source:
    """scikit-learn's 8×8 digits, scaled from 0..16 to uint8 0..255."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    (x_train, y_train), (x_test, y_test) = split_off(
        images, bunch.target.astype(np.int64), test_split, seed
    )
    return Source(
        "digits", x_train, y_train, x_test, y_test, [str(c) for c in bunch.target_names],
        "sklearn.datasets.load_digits", (8, 8, 1),
    )  # fmt: skip


def load_synthetic(cfg: DataConfig) -> Source:
    """Random uint8 images and labels of ``synthetic_shape`` (shapes only, for speed work)."""
    rng = np.random.default_rng(cfg.split_seed)
    shape = tuple(cfg.synthetic_shape)
    n = cfg.synthetic_samples
    x = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    y = rng.integers(0, cfg.synthetic_classes, size=n).astype(np.int64)
    n_test = max(1, n // 5)
    return Source(
        "synthetic", x[n_test:], y[n_test:], x[:n_test], y[:n_test],
        [f"class_{i}" for i in range(cfg.synthetic_classes)], "random", shape,
    )  # fmt: skip


SPLIT_FOLDERS = {
    "train": ("train", "training"),
    "val": ("val", "validation", "valid"),
    "test": ("test", "testing"),
}


IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")


def _is_image(path: Path) -> bool:
    """True when the file starts like a PNG, JPEG, GIF or BMP (what TensorFlow decodes)
    and its header gives a size (a JPEG with no frame header cannot be decoded)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return False
    return any(head.startswith(magic) for magic in IMAGE_MAGIC) and image_size(path) is not None


def _drop_unreadable(files: dict[str, list[str]], what: str, root: Path, skip: bool):
    """Find files that are not images before training starts: an error, or skipped."""
    bad = [f for names in files.values() for f in names if not _is_image(Path(f))]
    if not bad:
        return files
    if not skip:
        raise LiteconvError(
            f"{what} {root}: {len(bad)} file(s) are not PNG/JPEG/GIF/BMP images despite their "
            f"extension, e.g. {bad[0]}; remove them or set data.skip_bad_images: true"
        )
    bad_set = set(bad)
    print(f"note: skipping {len(bad)} unreadable image file(s) under {root}, e.g. {bad[0]}")
    return {name: [f for f in names if f not in bad_set] for name, names in files.items()}


def _class_files(root: Path, what: str) -> dict[str, list[str]]:
    """``{class name: sorted image files}`` of a folder holding one sub-folder per class."""
    if not root.is_dir():
        raise LiteconvError(f"{what} {root}: not a folder; expected one sub-folder per class")
    out, other = {}, []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = sorted(folder.rglob("*"))
        out[folder.name] = [str(f) for f in found if f.suffix.lower() in IMAGE_EXTENSIONS]
        other += [f for f in found if f.suffix.lower() in OTHER_IMAGE_EXTENSIONS]
    if other:  # photos TensorFlow cannot decode: left out, but never silently
        kinds = ", ".join(sorted({f.suffix.lower() for f in other}))
        print(f"note: leaving out {len(other)} {kinds} file(s) under {root} (TensorFlow decodes "
              f"{', '.join(sorted(IMAGE_EXTENSIONS))} only), e.g. {other[0]}; convert them to "
              "use them")  # fmt: skip
    files = sum(len(v) for v in out.values())
    if len(out) < 2 or not files:
        raise LiteconvError(
            f"{what} {root}: found {len(out)} class folder(s) and {files} image(s); "
            f"need at least 2 class folders holding {', '.join(sorted(IMAGE_EXTENSIONS))} files"
        )
    return out


def split_folders(root: Path) -> dict[str, Path]:
    """The ``train/``, ``val/`` and ``test/`` folders under ``root`` (Keras/torchvision layout).

    Returns ``{}`` unless ``root`` holds a training folder and a test or validation folder.
    """
    if not root.is_dir():
        return {}
    names = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    found = {}
    for split, aliases in SPLIT_FOLDERS.items():
        for alias in aliases:
            if alias in names:
                found[split] = names[alias]
                break
    if "train" not in found or not ({"val", "test"} & set(found)):
        return {}
    return found


def _arrays(files: dict[str, list[str]], classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    paths = [f for name in classes for f in files.get(name, [])]
    labels = [i for i, name in enumerate(classes) for _ in files.get(name, [])]
    return np.array(paths, dtype=str), np.array(labels, np.int64)


def native_size(files: dict[str, dict[str, list[str]]], keys: dict[str, str]) -> list[int]:
    """The one ``[height, width]`` of every image (``data.image_size: null``); a one-line
    error naming two files when sizes differ or a header cannot be read."""
    seen: dict[tuple[int, int], str] = {}
    for split, by_class in files.items():
        for names in by_class.values():
            for name in names:
                size = image_size(name)
                if size is None:
                    raise LiteconvError(
                        f"{keys[split]}: cannot read the size of {name} from its header; set "
                        "data.image_size: [height, width] to resize every image"
                    )
                seen.setdefault(size, name)
                if len(seen) > 1:
                    (a, fa), (b, fb) = list(seen.items())[:2]
                    raise LiteconvError(
                        f"{keys[split]}: images differ in size ({fa}: {a[0]}×{a[1]}, {fb}: "
                        f"{b[0]}×{b[1]}); set data.image_size: [height, width] to resize them all"
                    )
    return list(next(iter(seen)))


def load_image_folder(cfg: DataConfig) -> Source:
    """Image files in class sub-folders: one root that is split here, or given splits.

    Layouts: ``path/<class>/`` (test and validation drawn per file, seeded);
    ``path/train/<class>/`` with ``path/test/<class>/`` and/or ``path/val/<class>/`` used as
    given; or ``train_path``/``test_path``/``val_path`` set explicitly. Every split must
    hold the same classes. Files: ``.png .jpg .jpeg .bmp .gif`` (any case), decoded as RGB
    unless ``data.channels: 1``; ``data.image_size: null`` keeps the native size, which
    every image must share.
    """
    if cfg.train_path:
        roots = {"train": Path(cfg.train_path)}
        roots.update({k: Path(v) for k, v in (("test", cfg.test_path), ("val", cfg.val_path)) if v})
        keys = {"train": "data.train_path", "test": "data.test_path", "val": "data.val_path"}
    else:
        root = Path(cfg.path)
        roots = split_folders(root) or {"all": root}
        keys = {k: f"data.path ({p.name}/)" for k, p in roots.items()}
        keys["all"] = "data.path"
    files = {
        split: _drop_unreadable(_class_files(folder, keys[split]), keys[split], folder,
                                cfg.skip_bad_images)
        for split, folder in roots.items()
    }  # fmt: skip
    classes = sorted(next(iter(files.values())))
    for split, by_class in files.items():
        for other, other_classes in files.items():
            missing = sorted(set(other_classes) - set(by_class))
            if missing:
                raise LiteconvError(
                    f"{keys[split]} {roots[split]}: no class folder {missing[0]!r}, which "
                    f"{keys[other]} {roots[other]} has; every split needs the same classes"
                )
    first = "all" if "all" in files else "train"
    empty = [name for name in classes if not files[first][name]]
    if empty:  # a class the model could never learn, with an output of its own
        raise LiteconvError(
            f"{keys[first]} {roots[first]}: class folder {empty[0]!r} holds no image to train "
            f"on ({len(empty)} such folder(s)); add images or remove the folder"
        )
    x_train, y_train = _arrays(files[first], classes)
    if "test" in files:
        x_test, y_test = _arrays(files["test"], classes)
    else:
        (x_train, y_train), (x_test, y_test) = split_off(
            x_train, y_train, cfg.test_split, cfg.split_seed
        )
    x_val = y_val = None
    if "val" in files:
        x_val, y_val = _arrays(files["val"], classes)
    channels = cfg.channels or 3  # decoded as RGB unless data.channels: 1
    size = cfg.image_size or native_size(files, keys)
    location = ", ".join(f"{k}: {v}" for k, v in roots.items()) if first == "train" else str(root)
    return Source(
        "image_folder", x_train, y_train, x_test, y_test, classes, location,
        (size[0], size[1], channels), from_files=True, x_val=x_val, y_val=y_val,
    )  # fmt: skip


def load_tfds(cfg: DataConfig) -> Source:
    """Any TFDS image-classification dataset that is installed and reachable."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise LiteconvError(
            "data.name tfds needs tensorflow-datasets: pip install tensorflow-datasets"
        ) from None
    try:
        builder = tfds.builder(cfg.tfds_name, data_dir=cfg.path)
        builder.download_and_prepare()
        splits = builder.info.splits
        train = tfds.as_numpy(builder.as_dataset("train", as_supervised=True, batch_size=-1))
        test = (
            tfds.as_numpy(builder.as_dataset("test", as_supervised=True, batch_size=-1))
            if "test" in splits
            else None
        )
        names = builder.info.features["label"].names
    except Exception as err:
        raise LiteconvError(
            f"tfds {cfg.tfds_name!r}: cannot load ({str(err).splitlines()[0]})"
        ) from None
    x, y = train
    if test is None:
        (x, y), test = split_off(x, y, cfg.test_split, cfg.split_seed)
    return Source(
        "tfds", x, y.astype(np.int64), test[0], test[1].astype(np.int64), list(names),
        f"tfds:{cfg.tfds_name}", tuple(x.shape[1:]),
    )  # fmt: skip


def load_source(cfg: DataConfig) -> Source:
    """Load the raw data the config names."""
    if cfg.name == "fashion_mnist":
        return load_fashion_mnist(cfg.path)
    if cfg.name == "digits":
        return load_digits(cfg.test_split, cfg.split_seed)
    if cfg.name == "synthetic":
        return load_synthetic(cfg)
    if cfg.name == "image_folder":
        return load_image_folder(cfg)
    return load_tfds(cfg)
