"""Shared fixtures: a clean Keras session per test and numpy reference convolutions."""

from __future__ import annotations

import numpy as np
import pytest

from liteconv.compat import keras


@pytest.fixture(autouse=True)
def _clear_keras_session():
    keras.backend.clear_session()
    yield


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME padding (extra row/column at the end), as (before, after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def np_conv2d(x, kernel, strides=(1, 1), padding="valid", bias=None):
    """Reference 2-D convolution in plain numpy: x (N,H,W,C), kernel (kh,kw,C,M)."""
    kh, kw, _, m = kernel.shape
    sh, sw = strides
    if padding == "same":
        ph, pw = same_padding(x.shape[1], kh, sh), same_padding(x.shape[2], kw, sw)
        x = np.pad(x, ((0, 0), ph, pw, (0, 0)))
    n, h, w, _ = x.shape
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    out = np.zeros((n, oh, ow, m), dtype=np.float64)
    for i in range(oh):
        for j in range(ow):
            patch = x[:, i * sh : i * sh + kh, j * sw : j * sw + kw, :]
            out[:, i, j, :] = np.tensordot(patch, kernel, axes=([1, 2, 3], [0, 1, 2]))
    return out if bias is None else out + bias


def np_depthwise2d(x, kernel, strides=(1, 1), padding="valid", bias=None):
    """Reference depthwise convolution: kernel (kh,kw,C,dm); output channel c*dm+d."""
    kh, kw, c, dm = kernel.shape
    full = np.zeros((kh, kw, c, c * dm))
    for ch in range(c):
        for d in range(dm):
            full[:, :, ch, ch * dm + d] = kernel[:, :, ch, d]
    return np_conv2d(x, full, strides, padding, bias)
