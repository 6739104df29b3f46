"""Datasets: IDX reader, deterministic splits, image folders, the real Fashion-MNIST."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from liteconv.compat import tf
from liteconv.config import AugmentConfig, DataConfig
from liteconv.device.errors import LiteconvError
from liteconv.pipeline.data import load_dataset
from liteconv.pipeline.idx import read_idx
from liteconv.pipeline.sources import DEBIAN_FASHION_MNIST


def _write_idx(path, array, compress=True):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip(tmp_path, compress):
    arr = np.random.default_rng(0).integers(0, 256, size=(5, 4, 3)).astype(np.uint8)
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    _write_idx(path, arr, compress)
    np.testing.assert_array_equal(read_idx(path), arr)


def test_idx_truncated_and_bad_magic_are_one_line_errors(tmp_path):
    arr = np.zeros((4, 3), np.uint8)
    path = tmp_path / "t.idx"
    _write_idx(path, arr, compress=False)
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(LiteconvError, match="header promises 12"):
        read_idx(path)
    path.write_bytes(b"\x01\x02\x03")
    with pytest.raises(LiteconvError, match="not an IDX file"):
        read_idx(path)


def test_digits_split_is_deterministic_disjoint_and_seed_independent():
    cfg = DataConfig(name="digits", validation_split=0.1, test_split=0.2)
    a = load_dataset(cfg, batch_size=32, seed=1)
    b = load_dataset(cfg, batch_size=32, seed=2)  # training seed does not move the split
    assert a.sizes == {"train": 1295, "val": 143, "test": 359}  # stratified per class
    assert a.fingerprint == b.fingerprint
    xa, ya = a.arrays("test")
    xb, yb = b.arrays("test")
    np.testing.assert_array_equal(xa, xb)
    assert a.class_names == [str(i) for i in range(10)]
    assert xa.dtype == np.float32 and 0.0 <= xa.min() and xa.max() <= 1.0
    train = {x.tobytes() for x in a.arrays("train")[0]}
    assert not any(x.tobytes() in train for x in a.arrays("val")[0])
    batch = next(iter(a.train))
    assert batch[0].shape == (32, 8, 8, 1)


def test_resize_channels_and_augmentation_shapes():
    cfg = DataConfig(name="synthetic", synthetic_shape=[20, 20, 1], image_size=[32, 32], channels=3)
    splits = load_dataset(
        cfg, batch_size=8, seed=0, augmentation=AugmentConfig(flip=True, translate=2)
    )
    assert splits.input_shape == (32, 32, 3)
    x, _ = next(iter(splits.train))
    assert x.shape == (8, 32, 32, 3)
    assert splits.arrays("test", limit=3)[0].shape == (3, 32, 32, 3)


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog", "owl"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            img = rng.integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
            (tmp_path / cls / f"{i}.png").write_bytes(tf.io.encode_png(img).numpy())
    cfg = DataConfig(name="image_folder", path=str(tmp_path), image_size=[16, 16], test_split=0.2)
    splits = load_dataset(cfg, batch_size=4, seed=0)
    assert splits.class_names == ["cat", "dog", "owl"]
    assert sum(splits.sizes.values()) == 15
    x, y = splits.arrays("test")
    assert x.shape == (3, 16, 16, 3) and set(y) <= {0, 1, 2}


def test_image_folder_keeps_the_native_size_or_says_why_not(tmp_path):
    rng = np.random.default_rng(1)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(4):
            img = rng.integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
            (tmp_path / cls / f"{i}.png").write_bytes(tf.io.encode_png(img).numpy())
    splits = load_dataset(DataConfig(name="image_folder", path=str(tmp_path)), batch_size=4, seed=0)
    assert splits.input_shape == (12, 10, 3)  # native, not a silent 224×224
    assert splits.arrays("train")[0].shape[1:] == (12, 10, 3)
    odd = rng.integers(0, 256, size=(9, 10, 3), dtype=np.uint8)
    (tmp_path / "dog" / "odd.jpg").write_bytes(tf.io.encode_jpeg(odd).numpy())
    with pytest.raises(LiteconvError, match=r"images differ in size .*9×10.*data.image_size"):
        load_dataset(DataConfig(name="image_folder", path=str(tmp_path)), batch_size=4, seed=0)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP"])
def test_image_header_sizes_match_the_decoded_image(tmp_path, fmt):
    from PIL import Image

    from liteconv.pipeline.image_header import image_size

    path = tmp_path / f"x.{fmt.lower()}"
    pixels = np.random.default_rng(2).integers(0, 256, size=(13, 7, 3), dtype=np.uint8)
    options = {"progressive": True} if fmt == "JPEG" else {}
    Image.fromarray(pixels).save(path, fmt, **options)
    decoded = tf.io.decode_image(path.read_bytes(), expand_animations=False).shape[:2]
    assert image_size(path) == tuple(decoded) == (13, 7)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    assert image_size(tmp_path / "junk.png") is None


def test_image_folder_errors(tmp_path):
    with pytest.raises(LiteconvError, match="not a folder"):
        load_dataset(
            DataConfig(name="image_folder", path=str(tmp_path / "x")), batch_size=4, seed=0
        )
    (tmp_path / "only").mkdir()
    with pytest.raises(LiteconvError, match="found 1 class folder"):
        load_dataset(DataConfig(name="image_folder", path=str(tmp_path)), batch_size=4, seed=0)


def test_missing_fashion_files_explain_how_to_get_them(tmp_path):
    with pytest.raises(LiteconvError, match="missing Fashion-MNIST file"):
        load_dataset(DataConfig(path=str(tmp_path)), batch_size=4, seed=0)


@pytest.mark.large
def test_real_fashion_mnist():
    assert (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists(), (
        "install it: apt-get install dataset-fashion-mnist (make data)"
    )
    splits = load_dataset(DataConfig(), batch_size=256, seed=0)
    assert splits.sizes == {"train": 54000, "val": 6000, "test": 10000}
    assert splits.class_names[0] == "T-shirt/top" and splits.num_classes == 10
    x, y = splits.arrays("test")
    assert x.shape == (10000, 28, 28, 1)
    assert np.bincount(y).tolist() == [1000] * 10  # the official test split is balanced
    assert 0.25 < x.mean() < 0.35  # Fashion-MNIST's mean pixel is ~0.286


def _png_tree(root, classes, per_class, shape=(6, 6, 3), seed=0):
    """Write ``per_class`` random PNGs into ``root/<class>/`` (listed class by class)."""
    rng = np.random.default_rng(seed)
    for cls in classes:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 256, size=shape, dtype=np.uint8)
            (root / cls / f"{i:03d}.png").write_bytes(tf.io.encode_png(img).numpy())


def test_class_sorted_image_folder_gives_mixed_batches(tmp_path):
    classes = ["a", "b", "c", "d"]
    _png_tree(tmp_path, classes, 60)
    # A shuffle buffer far smaller than the data: only the whole-index shuffle mixes classes.
    cfg = DataConfig(name="image_folder", path=str(tmp_path), image_size=[6, 6],
                     shuffle_buffer=4, validation_split=0.1, test_split=0.2)  # fmt: skip
    splits = load_dataset(cfg, batch_size=32, seed=0)
    batches = [np.bincount(y.numpy(), minlength=4) for _, y in splits.train]
    full = [b for b in batches if b.sum() == 32]
    assert len(full) >= 4
    for counts in full:
        assert counts.max() <= 16, counts  # no batch has more than half from one class
    # every class is in training, validation and test, in proportions close to 1/4
    for split, counts in splits.class_counts().items():
        assert min(counts) > 0, (split, counts)
    _, y_test = splits.arrays("test")
    assert len(set(y_test[:8].tolist())) > 1  # the first test images are not one class


def test_limit_keeps_the_class_balance(tmp_path):
    _png_tree(tmp_path, ["a", "b", "c", "d"], 30)
    cfg = DataConfig(name="image_folder", path=str(tmp_path), image_size=[6, 6], limit=40,
                     validation_split=0.0, test_split=0.2)  # fmt: skip
    counts = load_dataset(cfg, batch_size=8, seed=0).class_counts()["train"]
    assert sum(counts) == 40 and max(counts) - min(counts) <= 1, counts


def test_image_folder_with_train_and_test_folders_keeps_the_given_test_split(tmp_path):
    classes = ["ant", "bee", "cow"]
    _png_tree(tmp_path / "train", classes, 12, seed=1)
    _png_tree(tmp_path / "test", classes, 4, seed=2)
    cfg = DataConfig(name="image_folder", path=str(tmp_path), image_size=[6, 6],
                     validation_split=0.25)  # fmt: skip
    splits = load_dataset(cfg, batch_size=4, seed=0)
    assert splits.class_names == classes
    assert splits.sizes == {"train": 27, "val": 9, "test": 12}
    test_files = sorted(str(p) for p in (tmp_path / "test").rglob("*.png"))
    x_raw, y_raw = splits._raw["test"]
    assert sorted(x_raw.tolist()) == test_files  # exactly the files of test/
    for path, label in zip(x_raw, y_raw):
        assert f"/test/{classes[label]}/" in path
    train_files = set(splits._raw["train"][0].tolist()) | set(splits._raw["val"][0].tolist())
    assert train_files == {str(p) for p in (tmp_path / "train").rglob("*.png")}
    # a val/ folder is used as the validation split
    _png_tree(tmp_path / "val", classes, 2, seed=3)
    splits = load_dataset(cfg, batch_size=4, seed=0)
    assert splits.sizes == {"train": 36, "val": 6, "test": 12}
    # explicit paths work the same way
    explicit = DataConfig(name="image_folder", train_path=str(tmp_path / "train"),
                          test_path=str(tmp_path / "test"), image_size=[6, 6])  # fmt: skip
    assert load_dataset(explicit, batch_size=4, seed=0).sizes["test"] == 12


def test_image_folder_splits_must_share_their_classes(tmp_path):
    _png_tree(tmp_path / "train", ["ant", "bee", "cow"], 3)
    _png_tree(tmp_path / "test", ["ant", "bee"], 3)
    cfg = DataConfig(name="image_folder", path=str(tmp_path), image_size=[6, 6])
    with pytest.raises(LiteconvError, match="no class folder 'cow'"):
        load_dataset(cfg, batch_size=4, seed=0)
