"""Decompose a trained model's convolutions: flattened (LVH) or CP form, weights included.

One LVH stage is exactly a convolution whose kernel is rank one per output filter,
``K[h, w, i, o] = y[h, o] · x[w, o] · z[i, o]`` (Jin et al., arXiv:1412.5474): ``lvh``
finds the best such kernel for each filter (HOSVD start, then alternating least squares
until the error stops falling) and builds ``flattened_conv`` with it, the bias on the last
1-D step. ``stages=2`` adds a second stage initialised as the identity (lateral = I,
vertical and horizontal = a unit impulse, zero biases), so the model starts exactly at the
one-stage approximation. ``cp`` (Lebedev et al., arXiv:1412.6553) is a rank-R CP
decomposition of the whole kernel (``tensorly.decomposition.parafac``), built as
``1×1 (C_in→R) → k×1 depthwise → 1×k depthwise → 1×1 (R→C_out)`` from stock layers.
Every other layer keeps its weights; pure Keras and numpy, no file I/O.

Example:
    >>> flat, report = flatten_model(model, method="lvh", stages=2)
    >>> [r["rel_error"] for r in report]
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from liteconv.compat import keras
from liteconv.keras_layers.cost import layer_macs
from liteconv.keras_layers.flattened import flattened_conv, lvh_names, vertical_horizontal
from liteconv.keras_layers.graph import inline_nested, layer_calls, replay

METHODS = ("lvh", "cp")


@dataclass
class Decomposition:
    """The factors of one kernel and what they cost."""

    layer: str
    method: str
    rank: int
    rel_error: float
    weights: dict  # new layer name -> list of arrays
    macs_before: int = 0
    macs_after: int = 0
    params_before: int = 0
    params_after: int = 0

    def row(self) -> dict:
        """A flat record for reports and the manifest."""
        return {
            "layer": self.layer, "method": self.method, "rank": self.rank,
            "rel_error": round(self.rel_error, 6), "macs_before": self.macs_before,
            "macs_after": self.macs_after, "params_before": self.params_before,
            "params_after": self.params_after,
        }  # fmt: skip


# --------------------------------------------------------------------------- the math


_MEMO: OrderedDict = OrderedDict()
_MEMO_SIZE = 32


def _memoised(fn):
    """Remember the last ``_MEMO_SIZE`` results of a decomposition by the kernel's bytes
    and the other arguments (both are deterministic: seeded starts), so the ALS that
    ``flatten --budget-ms`` ran for a candidate is not run again when the chosen plan is
    applied; callers get copies."""

    @functools.wraps(fn)
    def wrapper(kernel, *args, **kwargs):
        k = np.ascontiguousarray(kernel)
        key = (fn.__name__, hashlib.sha256(k.tobytes()).hexdigest(), k.shape, str(k.dtype),
               args, tuple(sorted(kwargs.items())))  # fmt: skip
        if key not in _MEMO:
            _MEMO[key] = fn(kernel, *args, **kwargs)
            if len(_MEMO) > _MEMO_SIZE:
                _MEMO.popitem(last=False)
        _MEMO.move_to_end(key)
        return tuple(v.copy() if isinstance(v, np.ndarray) else v for v in _MEMO[key])

    return wrapper


@_memoised
def rank1_per_filter(kernel: np.ndarray, *, max_iter: int = 500, tol: float = 1e-9):
    """Best rank-1 approximation of each output filter of a ``(kh, kw, C_in, C_out)`` kernel.

    Returns ``(y (kh, C_out), x (kw, C_out), z (C_in, C_out), rel_error)`` with the three
    factors of each filter scaled to the same norm; ``rel_error`` is
    ``‖K − K̂‖ / ‖K‖`` over the whole kernel. HOSVD start, then ALS (all filters at once)
    until the squared error falls by less than ``tol`` (relative) in one sweep.
    """
    t = np.transpose(np.asarray(kernel, np.float64), (3, 0, 1, 2))  # (O, H, W, C)
    o, h, w, c = t.shape
    y = np.linalg.svd(t.reshape(o, h, w * c), full_matrices=False)[0][:, :, 0]
    x = np.linalg.svd(np.transpose(t, (0, 2, 1, 3)).reshape(o, w, h * c), full_matrices=False)[0][
        :, :, 0
    ]
    z = np.linalg.svd(np.transpose(t, (0, 3, 1, 2)).reshape(o, c, h * w), full_matrices=False)[0][
        :, :, 0
    ]
    total = float((t**2).sum()) or 1.0
    previous = np.inf
    for _ in range(max_iter):
        y = np.einsum("ohwc,ow,oc->oh", t, x, z) / ((x**2).sum(1) * (z**2).sum(1))[:, None]
        x = np.einsum("ohwc,oh,oc->ow", t, y, z) / ((y**2).sum(1) * (z**2).sum(1))[:, None]
        z = np.einsum("ohwc,oh,ow->oc", t, y, x) / ((y**2).sum(1) * (x**2).sum(1))[:, None]
        approx = np.einsum("oh,ow,oc->ohwc", y, x, z)
        error = float(((t - approx) ** 2).sum())
        if previous - error <= tol * total:
            break
        previous = error
    norms = [np.linalg.norm(v, axis=1) + 1e-30 for v in (y, x, z)]
    scale = np.cbrt(norms[0] * norms[1] * norms[2])  # balanced: good for int8 ranges
    y, x, z = (v / n[:, None] * scale[:, None] for v, n in zip((y, x, z), norms))
    return y.T, x.T, z.T, float(np.sqrt(error / total))


@_memoised
def cp_kernel(kernel: np.ndarray, rank: int, *, max_iter: int = 500, tol: float = 1e-9):
    """Rank-``rank`` CP decomposition of a ``(kh, kw, C_in, C_out)`` kernel (tensorly).

    Returns ``(a (kh, R), b (kw, R), c (C_in, R), d (R, C_out), rel_error)``; the CP
    weights are folded into ``d`` after balancing the other factors' norms.
    """
    import tensorly as tl
    from tensorly.decomposition import parafac

    tl.set_backend("numpy")
    k = np.asarray(kernel, np.float64)
    # The SVD start needs rank <= every mode's size (a 3×3×1 first layer has 1 and 3);
    # above that, a seeded random start.
    init = "svd" if rank <= min(k.shape) else "random"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tensorly's notes on SVD sizes
        try:
            cp = parafac(tl.tensor(k), rank=rank, init=init, n_iter_max=max_iter, tol=tol,
                         normalize_factors=True, random_state=0)  # fmt: skip
        except np.linalg.LinAlgError:
            # A rank above a mode's size (a 3×3×1 first layer at R = 16) makes ALS's normal
            # equations singular: a tiny ridge (1e-9 of the kernel's energy) solves them.
            cp = parafac(tl.tensor(k), rank=rank, init=init, n_iter_max=max_iter, tol=tol,
                         normalize_factors=True, random_state=0,
                         l2_reg=1e-9 * float((k**2).sum()))  # fmt: skip
    weights, (a, b, c, d) = cp
    approx = tl.cp_to_tensor(cp)
    error = float(np.linalg.norm(k - approx) / (np.linalg.norm(k) or 1.0))
    scale = np.cbrt(np.abs(weights) + 1e-30)  # spread |w| over a, b, c; its sign and rest to d
    a, b, c = a * scale, b * scale, c * scale
    d = (d * (weights / scale**3)).T
    return a, b, c, d, error


# ------------------------------------------------------------------ eligibility and cost


def eligible(layer) -> bool:
    """A stock ``Conv2D`` with a k_h×k_w kernel (both ≥ 2), no groups, no dilation."""
    return (
        type(layer) is keras.layers.Conv2D
        and min(layer.kernel_size) >= 2
        and getattr(layer, "groups", 1) == 1
        and tuple(layer.dilation_rate) == (1, 1)
        and layer.data_format == "channels_last"
    )


def _block_cost(layers: list) -> tuple[int, int]:
    return sum(layer_macs(lyr) for lyr in layers), sum(lyr.count_params() for lyr in layers)


# ----------------------------------------------------------------------- graph rebuild


def rebuild_graph(model, build_block: Callable, select: Callable = eligible):
    """Rebuild ``model``'s graph from copies of its layers; for the layers ``select`` picks,
    ``build_block(layer, x)`` returns a replacement output tensor (or ``None`` to keep a
    copy of the layer)."""
    if not (isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)):
        raise ValueError(
            f"{model.name}: a subclassed model ({type(model).__name__}); only functional and "
            "sequential models can be decomposed"
        )
    inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name.split(":")[0])
              for t in model.inputs]  # fmt: skip
    tensors = {id(old): new for old, new in zip(model.inputs, inputs)}
    # a fresh copy of every kept layer (shared ones stay shared), a nested model as one
    replay(model, tensors, {}, inline=False,
           replace=lambda layer, x: build_block(layer, x) if select(layer) else None)  # fmt: skip
    outputs = [tensors[id(t)] for t in model.outputs]
    return keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name)


def _activation(layer, x):
    act = keras.activations.serialize(layer.activation)
    if act in ("linear", None):
        return x
    return keras.layers.Activation(layer.activation, name=f"{layer.name}_act")(x)


def _lvh_block(layer, x, stages: int):
    return flattened_conv(x, layer.filters, layer.kernel_size, stages=stages,
                          strides=layer.strides, padding=layer.padding, later_padding="same",
                          use_bias=layer.use_bias, name=layer.name)  # fmt: skip


def cp_names(name: str) -> dict[str, str]:
    """The layer names of a CP-decomposed ``name``: ``in`` (1×1 to R), ``vertical`` and
    ``horizontal`` (R 1-D filters), ``out`` (1×1 back, with the bias)."""
    return {"in": f"{name}_cp_in", "vertical": f"{name}_cp_vertical",
            "horizontal": f"{name}_cp_horizontal", "out": f"{name}_cp_out"}  # fmt: skip


def _cp_block(layer, x, rank: int):
    names = cp_names(layer.name)
    x = keras.layers.Conv2D(rank, 1, use_bias=False, name=names["in"])(x)
    # unit-gain 1-D filters as in flattened_conv (the decomposition overwrites them; a
    # re-initialised copy then still trains); strides as flattened_conv runs them
    x = vertical_horizontal(x, layer.kernel_size, strides=layer.strides, padding=layer.padding,
                            use_bias=False, name=f"{layer.name}_cp")  # fmt: skip
    return keras.layers.Conv2D(layer.filters, 1, use_bias=layer.use_bias,
                               name=names["out"])(x)  # fmt: skip


def _lvh_weights(layer, stages: int, max_iter: int) -> tuple[dict, float]:
    kernel = layer.kernel.numpy()
    y, x, z, err = rank1_per_filter(kernel, max_iter=max_iter)
    kh, kw, _, cout = kernel.shape
    zeros = np.zeros(cout, np.float32)
    bias = layer.bias.numpy().astype(np.float32) if layer.use_bias else zeros

    def with_bias(kernel_value, bias_value=zeros):  # biases only where the conv had one
        return [kernel_value.astype(np.float32)] + ([bias_value] if layer.use_bias else [])

    one = lvh_names(layer.name, 1)
    weights = {
        one["lateral"]: with_bias(z[None, None]),
        one["vertical"]: with_bias(y[:, None, :, None]),
        one["horizontal"]: with_bias(x[None, :, :, None], bias if stages == 1 else zeros),
    }
    if stages == 2:
        vertical = np.zeros((kh, 1, cout, 1), np.float32)
        vertical[(kh - 1) // 2] = 1.0  # SAME padding puts (k-1)//2 rows before: identity
        horizontal = np.zeros((1, kw, cout, 1), np.float32)
        horizontal[0, (kw - 1) // 2] = 1.0
        two = lvh_names(layer.name, 2)
        weights.update({
            two["lateral"]: with_bias(np.eye(cout)[None, None]),
            two["vertical"]: with_bias(vertical),
            two["horizontal"]: with_bias(horizontal, bias),
        })  # fmt: skip
    return weights, err


def _cp_weights(layer, rank: int, max_iter: int) -> tuple[dict, float]:
    a, b, c, d, err = cp_kernel(layer.kernel.numpy(), rank, max_iter=max_iter)
    names = cp_names(layer.name)
    out = [d[None, None].astype(np.float32)]
    if layer.use_bias:
        out.append(layer.bias.numpy().astype(np.float32))
    return {
        names["in"]: [c[None, None].astype(np.float32)],
        names["vertical"]: [a[:, None, :, None].astype(np.float32)],
        names["horizontal"]: [b[None, :, :, None].astype(np.float32)],
        names["out"]: out,
    }, err


def choose_layers(model, layers: list[str] | None = None, min_macs: int = 0) -> list:
    """The eligible convolutions to decompose: those named (each must exist and be
    eligible), else every eligible one with at least ``min_macs`` MACs."""
    by_name = {lyr.name: lyr for lyr in model.layers}
    if layers:
        missing = [n for n in layers if n not in by_name]
        if missing:
            raise ValueError(
                f"no layer named {missing[0]!r} in {model.name}; eligible: "
                f"{', '.join(lyr.name for lyr in model.layers if eligible(lyr)) or 'none'}"
            )
        bad = [n for n in layers if not eligible(by_name[n])]
        if bad:
            raise ValueError(
                f"layer {bad[0]!r} ({type(by_name[bad[0]]).__name__}) cannot be decomposed: "
                "only stock Conv2D with a k×k kernel (k ≥ 2), no groups, no dilation"
            )
        shared = [n for n in layers if len(layer_calls(by_name[n], model)) > 1]
        if shared:
            raise ValueError(
                f"layer {shared[0]!r} is applied {len(layer_calls(by_name[shared[0]], model))} "
                f"times in {model.name}: only a convolution applied once can be decomposed"
            )
        return [by_name[n] for n in layers]
    # a layer the model applies more than once is kept (its calls share one set of weights)
    chosen = [lyr for lyr in model.layers if eligible(lyr) and len(layer_calls(lyr, model)) == 1
              and layer_macs(lyr) >= min_macs]  # fmt: skip
    if not chosen:
        raise ValueError(
            f"{model.name}: nothing to decompose (no stock Conv2D with a k×k kernel, k ≥ 2"
            f"{f', and at least {min_macs:,} MACs' if min_macs else ''}, applied once)"
        )
    return chosen


def parse_choice(choice: str) -> tuple[str, int | None]:
    """``keep`` / ``lvh1`` / ``lvh2`` / ``cp:R`` as ``(method, stages or rank)``."""
    if choice == "keep":
        return "keep", None
    if choice in ("lvh1", "lvh2"):
        return "lvh", int(choice[-1])
    if choice.startswith("cp:") and choice[3:].isdigit() and int(choice[3:]) >= 1:
        return "cp", int(choice[3:])
    raise ValueError(f"Unknown choice {choice!r}; expected keep, lvh1, lvh2 or cp:R")


def flatten_model(
    model,
    *,
    method: str = "lvh",
    stages: int = 1,
    rank: int | None = None,
    rank_ratio: float | None = None,
    layers: list[str] | None = None,
    min_macs: int = 0,
    max_iter: int = 500,
    progress: Callable[[int, int, str, float], None] | None = None,
    plan: dict[str, str] | None = None,
):
    """Decompose the eligible ``Conv2D`` layers of ``model``; returns ``(model, report)``.

    Args:
        model: a built functional or sequential Keras model (not changed).
        method: ``lvh`` (rank 1 per output filter, as flattened_conv) or ``cp`` (rank R).
        stages: LVH stages (1 or 2; the second starts as the identity).
        rank: CP rank; or ``rank_ratio``: R = round(ratio × C_out) (default 0.5).
        layers: names of the convolutions to decompose (default: every eligible one).
        min_macs: skip convolutions with fewer MACs than this.
        max_iter: ALS iterations at most.
        progress: called ``progress(done, total, layer_name, rel_error)`` after each layer.
        plan: a choice per layer instead of one method for all: ``{name: "keep" | "lvh1" |
            "lvh2" | "cp:R"}`` (``flatten --budget-ms`` makes one); layers not named are
            kept. ``method``, ``stages``, ``rank``, ``layers`` and ``min_macs`` are then
            not used.

    Returns:
        The new model (other layers keep their weights) and one ``Decomposition.row()``
        per decomposed layer.

    Raises:
        ValueError: unknown method, bad rank, subclassed model, nothing to decompose, or a
            named layer that does not exist or cannot be decomposed.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method={method!r}; choose one of {', '.join(METHODS)}")
    if stages not in (1, 2):
        raise ValueError(f"Expected stages 1 or 2, received stages={stages!r}")
    if rank is not None and rank < 1:
        raise ValueError(f"Expected a positive rank, received rank={rank!r}")
    if rank_ratio is not None and not 0 < rank_ratio <= 4:
        raise ValueError(f"Expected 0 < rank_ratio <= 4, received rank_ratio={rank_ratio!r}")
    # a backbone nested as one layer (a transfer model): its convolutions are the model's
    model = inline_nested(model)
    if plan is not None:
        choices = {name: parse_choice(choice) for name, choice in plan.items()}
        choices = {name: c for name, c in choices.items() if c[0] != "keep"}
        choose_layers(model, list(choices) or None)  # every named layer exists, is eligible
    else:
        choices = {lyr.name: (method, stages if method == "lvh" else rank)
                   for lyr in choose_layers(model, layers, min_macs)}  # fmt: skip
    chosen = set(choices)
    found: dict[str, Decomposition] = {}

    def build_block(layer, x):
        if layer.name not in chosen:
            return None
        how, arg = choices[layer.name]
        if how == "lvh":
            weights, err = _lvh_weights(layer, arg, max_iter)
            out, r = _lvh_block(layer, x, arg), 1
        else:
            r = arg or max(1, round((rank_ratio or 0.5) * layer.filters))
            weights, err = _cp_weights(layer, r, max_iter)
            out = _cp_block(layer, x, r)
        found[layer.name] = Decomposition(layer.name, "cp" if how == "cp" else f"lvh{arg}",
                                          r, err, weights)  # fmt: skip
        if progress:
            progress(len(found), len(chosen), layer.name, err)
        return _activation(layer, out)

    new = rebuild_graph(model, build_block)
    new_layers = {lyr.name: lyr for lyr in new.layers}
    old_layers = {lyr.name: lyr for lyr in model.layers}
    for name, layer in new_layers.items():
        if name in old_layers and layer.weights:
            layer.set_weights(old_layers[name].get_weights())
    for dec in found.values():
        parts = [new_layers[n] for n in dec.weights]
        for name, values in dec.weights.items():
            new_layers[name].set_weights(values)
        old = old_layers[dec.layer]
        dec.macs_before, dec.params_before = layer_macs(old), old.count_params()
        dec.macs_after, dec.params_after = _block_cost(parts)
    return new, [found[n].row() for n in found]
