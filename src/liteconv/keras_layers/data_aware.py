"""Data-aware decomposition: a decomposed layer's factors fitted to the parent layer's outputs.

``flatten_model`` fits each kernel alone (least ``‖K − K̂‖``). Real inputs are not white:
some input directions carry most of the energy and some none, so the factors that best
reproduce the *outputs* on real activations differ from those that best reproduce the
kernel (Jaderberg et al. 2014, arXiv:1405.3866; Zhang et al. 2016, arXiv:1505.06798).
``fit_to_outputs`` refits every decomposed layer, in graph order, to minimise

    ‖ patches(X_student) · K̂ + b̂  −  (patches(X_parent) · K + b) ‖²

over a few thousand image positions: ``X_student`` is the layer's input in the decomposed
model (every layer below already refitted) and ``X_parent`` the parent's, so each layer
also corrects the error accumulated below it (Zhang et al.'s asymmetric reconstruction).
The target is the layer's linear response (before its activation, which in this
project's networks follows a BatchNorm anyway).

Only second moments of the patches enter, so each fit is an alternating least-squares
on a ``D × D`` Gram matrix (``D = k_h·k_w·C_in``), whatever the number of positions:

- LVH (rank 1 per output filter, ``K[:, o] = y_o ⊗ x_o ⊗ z_o``): filters decouple; each
  sweep solves every filter's ``y``, ``x`` and ``z`` exactly given the other two.
- CP (``K = Σ_r (a_r ⊗ b_r ⊗ c_r) d_rᵀ``): one component's ``a_r``, ``b_r`` or ``c_r`` at a
  time given the rest (hierarchical ALS), then all of ``d`` jointly.

Both start from the kernel fit and never increase the fitted error. A second LVH stage
is fitted the same way on the first stage's real output. The relative output error
(``‖Ŷ − Y‖ / ‖Y‖`` on held-out images, whole maps) is reported for the kernel fit and for
the data fit. Pure Keras and numpy, no file I/O.

Example:
    >>> flat, report = flatten_model(model, method="cp", rank_ratio=0.5)
    >>> report = fit_to_outputs(model, flat, train_images, report)
    >>> [(r["layer"], r["kernel_fit_output_error"], r["output_error"]) for r in report]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from liteconv.compat import keras, tf
from liteconv.keras_layers.decompose import cp_names
from liteconv.keras_layers.flattened import lvh_names
from liteconv.keras_layers.graph import inline_nested

ROWS = 20000  # image positions per fit (Zhang et al.: 3,000 images x 10 positions)
HELD_OUT = 0.125  # share of the images kept out of the fit, for the reported errors
SWEEPS = 60
TOL = 1e-6  # stop when a sweep lowers the fitted error by less than this (relative)
RIDGE = 1e-7  # of the Gram matrix's mean diagonal: dead input channels make it singular


@dataclass
class Moments:
    """Second moments of patches ``P`` (rows × D) and targets ``T`` (rows × O), centred
    when the layer has a bias (the bias then absorbs the means)."""

    gram: np.ndarray  # D × D
    cross: np.ndarray  # D × O
    energy: float  # Σ ‖T‖² / rows, uncentred: the denominator of the relative error
    mean_p: np.ndarray | None
    mean_t: np.ndarray | None

    @classmethod
    def of(cls, p: np.ndarray, t: np.ndarray, *, bias: bool) -> Moments:
        p, t = np.asarray(p, np.float64), np.asarray(t, np.float64)
        n = len(p)
        energy = float((t**2).sum() / n)
        mean_p = mean_t = None
        if bias:
            mean_p, mean_t = p.mean(0), t.mean(0)
            p, t = p - mean_p, t - mean_t
        gram = p.T @ p / n
        gram[np.diag_indices_from(gram)] += RIDGE * (np.trace(gram) / len(gram) or 1.0)
        return cls(gram, p.T @ t / n, energy, mean_p, mean_t)

    def objective(self, kernel: np.ndarray) -> float:
        """The fitted squared error per row (up to the constant ``Σ‖T − T̄‖²``)."""
        gk = self.gram @ kernel
        return float((kernel * gk).sum() - 2 * (kernel * self.cross).sum())

    def bias(self, kernel: np.ndarray) -> np.ndarray | None:
        return None if self.mean_p is None else self.mean_t - self.mean_p @ kernel


def _mode_layouts(gram: np.ndarray, shape: tuple[int, int, int]) -> list[np.ndarray]:
    """The Gram matrix as ``(n_m, M, n_m, M)`` for each mode m of ``(k_h, k_w, C)``: mode m
    first, the other two (in order) flattened into M."""
    g6 = gram.reshape(*shape, *shape)
    out = []
    for m in range(3):
        others = [a for a in range(3) if a != m]
        n, big = shape[m], shape[others[0]] * shape[others[1]]
        out.append(
            g6.transpose(m, *others, 3 + m, *(3 + a for a in others)).reshape(n, big, n, big)
        )
    return out


def _cross_layout(cross: np.ndarray, shape, m: int) -> np.ndarray:
    others = [a for a in range(3) if a != m]
    c4 = cross.reshape(*shape, cross.shape[-1])
    return c4.transpose(m, *others, 3).reshape(shape[m], -1, cross.shape[-1])


def _others(factors: list[np.ndarray], m: int) -> np.ndarray:
    """Per column: the outer product of the two factors other than mode m, flattened
    (columns × M)."""
    a, b = (factors[i] for i in range(3) if i != m)
    return np.einsum("pr,qr->rpq", a, b).reshape(a.shape[1], -1)


def _khatri_rao(factors: list[np.ndarray]) -> np.ndarray:
    y, x, z = factors
    return np.einsum("hr,wr,cr->hwcr", y, x, z).reshape(-1, y.shape[1])


def _balance(factors: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """Equal norms for the three factors of each column, same product (good for int8
    ranges, and keeps ALS well conditioned); also how much each column's product of
    norms changed (1 up to the 1e-30 guard), to rescale what was derived from them."""
    norms = [np.linalg.norm(f, axis=0) + 1e-30 for f in factors]
    scale = np.cbrt(norms[0] * norms[1] * norms[2])
    ratio = scale**3 / (norms[0] * norms[1] * norms[2])
    return [f / n * scale for f, n in zip(factors, norms)], ratio


def fit_rank1(moments: Moments, factors: list[np.ndarray], shape, *, sweeps: int = SWEEPS,
              tol: float = TOL) -> tuple[list[np.ndarray], np.ndarray, int]:  # fmt: skip
    """Rank-1-per-filter factors ``[y (k_h, O), x (k_w, O), z (C, O)]`` minimising the
    output error, from ``factors``; returns ``(factors, kernel (D, O), sweeps run)``."""
    factors = [np.array(f, np.float64) for f in factors]
    layouts = _mode_layouts(moments.gram, shape)
    crosses = [_cross_layout(moments.cross, shape, m) for m in range(3)]
    outputs = factors[0].shape[1]
    scale = moments.energy or 1.0
    previous, done = moments.objective(_khatri_rao(factors)), 0
    while done < sweeps:
        done += 1
        for m in range(3):
            n = shape[m]
            f = _others(factors, m)  # (O, M)
            big = f.shape[1]
            g = layouts[m].transpose(1, 3, 0, 2).reshape(big * big, n * n)
            h = np.empty((outputs, n, n))
            chunk = max(1, 4_000_000 // (big * big))
            for s in range(0, outputs, chunk):
                ff = np.einsum("op,oq->opq", f[s : s + chunk], f[s : s + chunk]).reshape(
                    -1, big * big
                )
                h[s : s + chunk] = (ff @ g).reshape(-1, n, n)
            rhs = np.einsum("op,apo->oa", f, crosses[m])
            h[:, np.arange(n), np.arange(n)] += 1e-12 * (
                np.trace(h, axis1=1, axis2=2)[:, None] + 1e-30
            )
            factors[m] = np.linalg.solve(h, rhs[..., None])[..., 0].T
        factors, _ = _balance(factors)
        current = moments.objective(_khatri_rao(factors))
        if previous - current <= tol * scale:
            break
        previous = current
    return factors, _khatri_rao(factors), done


def fit_cp(moments: Moments, factors: list[np.ndarray], d: np.ndarray, shape, *,
           sweeps: int = SWEEPS, tol: float = TOL):  # fmt: skip
    """CP factors ``[a (k_h, R), b (k_w, R), c (C, R)]`` and ``d (R, O)`` minimising the
    output error, from the given ones; returns ``(factors, d, kernel (D, O), sweeps)``."""
    factors = [np.array(f, np.float64) for f in factors]
    d = np.array(d, np.float64)
    gram, cross = moments.gram, moments.cross
    layouts = _mode_layouts(gram, shape)
    rank = d.shape[0]
    u = _khatri_rao(factors)
    gu = gram @ u
    scale = moments.energy or 1.0
    previous, done = moments.objective(u @ d), 0
    while done < sweeps:
        done += 1
        for m in range(3):
            n = shape[m]
            others = [a for a in range(3) if a != m]
            for r in range(rank):
                w = d[r]
                omega = float(w @ w)
                if omega <= 0:
                    continue
                f = np.einsum("p,q->pq", factors[others[0]][:, r], factors[others[1]][:, r]).ravel()
                t = layouts[m].reshape(-1, f.size) @ f  # (n, M, n)
                h = omega * np.einsum("apb,p->ab", t.reshape(n, f.size, n), f)
                s = cross @ w - gu @ (d @ w) + omega * gu[:, r]
                rhs = _cross_layout(s[:, None], shape, m)[:, :, 0] @ f
                h[np.diag_indices(n)] += 1e-12 * (np.trace(h) + 1e-30)
                factors[m][:, r] = np.linalg.solve(h, rhs)
                u[:, r] = _khatri_rao([f_[:, r : r + 1] for f_ in factors])[:, 0]
                gu[:, r] = gram @ u[:, r]
        # all of d given U: (UᵀGU) d = UᵀC
        factors, ratio = _balance(factors)
        u, gu = u * ratio, gu * ratio
        utgu = u.T @ gu
        utgu[np.diag_indices(rank)] += 1e-10 * (np.trace(utgu) / rank + 1e-30)
        d = np.linalg.solve(utgu, u.T @ cross)
        current = moments.objective(u @ d)
        if previous - current <= tol * scale:
            break
        previous = current
    return factors, d, u @ d, done


# ------------------------------------------------------------------- the model's layers


def conv_patches(x, kernel_size, strides, padding: str) -> np.ndarray:
    """Every output position's input patch, ``(N, H_out, W_out, k_h·k_w·C)`` in the order
    of a ``(k_h, k_w, C)`` kernel: ``patches @ kernel.reshape(-1, O)`` is the convolution
    (TensorFlow's SAME/VALID padding)."""
    (kh, kw), (sh, sw) = kernel_size, strides
    return tf.image.extract_patches(tf.convert_to_tensor(x, tf.float32), [1, kh, kw, 1],
                                    [1, sh, sw, 1], [1, 1, 1, 1], padding.upper()).numpy()  # fmt: skip


def _predict(model, tensors, images, batch_size: int = 256) -> list[np.ndarray]:
    sub = keras.Model(model.inputs, tensors)
    fixed = model.inputs[0].shape[0]
    out = sub.predict(images, batch_size=fixed or batch_size, verbose=0)
    return out if isinstance(out, list) else [out]


@dataclass
class _Geometry:
    kernel_size: tuple[int, int]
    strides: tuple[int, int]
    padding: str


def _rows(inputs: np.ndarray, geometry: _Geometry, index: np.ndarray, batch: int = 64):
    """The patches at flat output positions ``index`` (image-major), ``(len(index), D)``."""
    first = conv_patches(inputs[:1], geometry.kernel_size, geometry.strides, geometry.padding)
    per_image = first.shape[1] * first.shape[2]
    out = np.empty((len(index), first.shape[-1]), np.float32)
    image = index // per_image
    for s in range(0, len(inputs), batch):
        pick = np.nonzero((image >= s) & (image < s + batch))[0]
        if len(pick) == 0:
            continue
        p = conv_patches(inputs[s:s + batch], geometry.kernel_size, geometry.strides,
                         geometry.padding).reshape(-1, first.shape[-1])  # fmt: skip
        out[pick] = p[index[pick] - s * per_image]
    return out


def _linear_output(layer, inputs: np.ndarray) -> np.ndarray:
    """The parent convolution's response before its activation, whole maps."""
    y = tf.nn.conv2d(tf.convert_to_tensor(inputs, tf.float32), layer.kernel,
                     strides=layer.strides, padding=layer.padding.upper())  # fmt: skip
    if layer.use_bias:
        y = y + layer.bias
    return y.numpy()


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / (np.linalg.norm(b) or 1.0))


def _steps(flat, row: dict) -> list[dict]:
    """The fitted steps of one decomposed layer: weight layer names and the input tensor."""
    name = row["layer"]
    if row["method"] == "cp":
        cp = cp_names(name)
        return [{"kind": "cp", "input": cp["in"],
                 "layers": [cp["vertical"], cp["horizontal"], cp["in"], cp["out"]],
                 "output": cp["out"]}]  # fmt: skip
    stages = int(row["method"][-1])
    out = []
    for s in range(1, stages + 1):
        lvh = lvh_names(name, s)
        out.append({"kind": "lvh", "stage": s, "input": lvh["lateral"],
                    "layers": [lvh["vertical"], lvh["horizontal"], lvh["lateral"]],
                    "output": lvh["horizontal"]})  # fmt: skip
    return out


def _read(flat, step) -> tuple[list[np.ndarray], np.ndarray | None]:
    """The step's current factors as ``[(k_h, R), (k_w, R), (C, R)]`` and CP's ``d``."""
    v, h, lat = (flat.get_layer(n) for n in step["layers"][:3])
    factors = [v.depthwise_kernel.numpy()[:, 0, :, 0], h.depthwise_kernel.numpy()[0, :, :, 0],
               lat.kernel.numpy()[0, 0]]  # fmt: skip
    d = flat.get_layer(step["layers"][3]).kernel.numpy()[0, 0] if step["kind"] == "cp" else None
    return factors, d


def _write(flat, step, factors, d, bias) -> None:
    v, h, lat = (flat.get_layer(n) for n in step["layers"][:3])
    y, x, z = (f.astype(np.float32) for f in factors)

    def put(layer, kernel, last=False):
        values = [kernel]
        if layer.use_bias:  # only the step's last bias is fitted; the others stay zero
            last_bias = last and bias is not None
            values.append(
                bias.astype(np.float32) if last_bias else np.zeros_like(layer.bias.numpy())
            )
        layer.set_weights(values)

    put(v, y[:, None, :, None])
    put(lat, z[None, None])
    if step["kind"] == "cp":
        put(h, x[None, :, :, None])
        put(flat.get_layer(step["layers"][3]), d.astype(np.float32)[None, None], last=True)
    else:
        put(h, x[None, :, :, None], last=True)


def fit_to_outputs(
    parent,
    flat,
    images: np.ndarray,
    report: list[dict],
    *,
    refit: bool = True,
    rows: int = ROWS,
    sweeps: int = SWEEPS,
    seed: int = 0,
    progress: Callable[[int, int, str, float, float], None] | None = None,
) -> list[dict]:
    """Refit ``flat``'s decomposed layers (``report`` of ``flatten_model``) to ``parent``'s
    outputs on ``images``, in place, layer after layer; returns the report with, per
    layer, ``kernel_fit_output_error`` and ``output_error`` (relative, held-out images,
    whole maps, before the activation; both with the layers below as they are then, so
    already refitted), ``kernel_fit_rel_error`` and ``rel_error`` (the
    refitted kernel's distance to the parent's), ``fit_sweeps`` and ``fit_rows``.

    ``refit=False`` only measures the output errors of the factors as they are.
    ``progress(done, total, layer, kernel_fit_output_error, output_error)`` after each.

    Raises:
        ValueError: fewer than 2 images, or a decomposed layer used more than once.
    """
    parent = inline_nested(parent)  # a backbone's layers are the parent's own (flatten's)
    images = np.asarray(images)
    if len(images) < 2:
        raise ValueError(f"data-aware fit: expected at least 2 images, received {len(images)}")
    held = max(1, int(round(len(images) * HELD_OUT)))
    fit_images, check_images = images[:-held], images[-held:]
    rng = np.random.default_rng(seed)
    out = []
    for done, row in enumerate(report, 1):
        name = row["layer"]
        layer = parent.get_layer(name)
        if len(layer._inbound_nodes) != 1:  # noqa: SLF001
            raise ValueError(f"{name}: called more than once in {parent.name}; the data-aware "
                             "fit needs one input per layer (use --no-data-aware)")  # fmt: skip
        steps = _steps(flat, row)
        names = {lyr.name for lyr in flat.layers}
        last = steps[-1]["output"]
        subsample = last.replace("_horizontal", "_subsample")
        final = flat.get_layer(subsample if subsample in names else last).output

        check_parent = _predict(parent, layer.input, check_images)[0]
        check_target = _linear_output(layer, check_parent)
        del check_parent

        def block_error(final=final, check_target=check_target):
            return _rel(_predict(flat, final, check_images)[0], check_target)

        before = block_error()
        new = dict(row, kernel_fit_output_error=round(before, 6),
                   kernel_fit_rel_error=row["rel_error"])  # fmt: skip
        if refit:
            parent_in = _predict(parent, layer.input, fit_images)[0]
            target_maps = _linear_output(layer, parent_in)
            per_image = target_maps.shape[1] * target_maps.shape[2]
            total = len(fit_images) * per_image
            index = np.sort(rng.choice(total, size=min(rows, total), replace=False))
            target = target_maps.reshape(-1, target_maps.shape[-1])[index]
            del target_maps
            saved = {n: flat.get_layer(n).get_weights() for st in steps for n in st["layers"]}
            sweeps_run, first_kernel = 0, None
            for step in steps:
                if step["kind"] == "cp" or step["stage"] == 1:
                    geometry = _Geometry(tuple(layer.kernel_size), tuple(layer.strides),
                                         layer.padding)  # fmt: skip
                else:
                    geometry = _Geometry(tuple(layer.kernel_size), (1, 1), "same")
                inputs = _predict(flat, flat.get_layer(step["input"]).input, fit_images)[0]
                patches = _rows(inputs, geometry, index)
                del inputs
                bias = flat.get_layer(step["layers"][3 if step["kind"] == "cp" else 1]).use_bias
                moments = Moments.of(patches, target, bias=bias)
                del patches
                shape = (
                    *geometry.kernel_size,
                    moments.gram.shape[0] // int(np.prod(geometry.kernel_size)),
                )
                factors, d = _read(flat, step)
                if step["kind"] == "cp":
                    factors, d, kernel, n = fit_cp(moments, factors, d, shape, sweeps=sweeps)
                else:
                    factors, kernel, n = fit_rank1(moments, factors, shape, sweeps=sweeps)
                sweeps_run += n
                first_kernel = kernel if first_kernel is None else first_kernel
                _write(flat, step, factors, d, moments.bias(kernel))
            after = block_error()
            parent_kernel = layer.kernel.numpy().reshape(-1, layer.filters).astype(np.float64)
            rel = _rel(first_kernel, parent_kernel)  # LVH-2: the first stage's kernel
            if after > before:  # worse on the held-out images: keep the kernel fit
                for n, values in saved.items():
                    flat.get_layer(n).set_weights(values)
                after, rel = before, row["rel_error"]
            new.update(output_error=round(after, 6), fit_sweeps=sweeps_run, fit_rows=len(index),
                       rel_error=round(rel, 6))  # fmt: skip
        else:
            new.update(output_error=round(before, 6))
        out.append(new)
        if progress:
            progress(done, len(report), name, new["kernel_fit_output_error"], new["output_error"])
    return out
