"""A ``.keras`` file saved by Keras 3 (TensorFlow ≥ 2.16's default), rebuilt in Keras 2.

liteconv runs on tf_keras (Keras 2: what tensorflow-model-optimization needs), and tf_keras
cannot read a Keras 3 model's config ("Could not deserialize class 'Functional'"). A user
who trained with today's default ``import keras`` still has a model liteconv can take: the
file is loaded by Keras 3 (safe mode, no compile), and its graph is called again node by
node with tf_keras layers of the same class and config; every weight is copied, and both
models must answer the same on a random batch before the rebuild is used.

What has no tf_keras twin is a one-line error naming the layer: Keras 3-only layers, a
Keras 3 option set to a non-default value, custom layers. Keras 3 operations in the graph
(``x + 3.0``, ``ops.multiply``: MobileNetV3's hard-sigmoid) become the TensorFlow op,
which tf_keras records as a ``TFOpLambda`` layer, as its own MobileNetV3 does. Activations
whose names mean something else in tf_keras (Keras 3's ``hard_sigmoid`` is relu6(x+3)/6,
tf_keras' is 0.2x+0.5 clipped) are applied as the ops of Keras 3's definition.

Example:
    >>> model = load_keras3("model_saved_by_keras3.keras")   # a tf_keras Model
"""

from __future__ import annotations

import inspect
import json
import zipfile
from pathlib import Path

import numpy as np

from liteconv.compat import keras, keras3, tf
from liteconv.device.errors import LiteconvError, first_line
from liteconv.keras_layers.graph import dependency_order

HOW_TO_RESAVE = (
    "re-save it from tf_keras (TF_USE_LEGACY_KERAS=1, import tf_keras) or with stock layers"
)

# Keras 3 activation names tf_keras has with the same function.
SAME_ACTIVATIONS = {
    "linear", "relu", "sigmoid", "tanh", "softmax", "softplus", "softsign", "elu", "selu",
    "exponential", "swish", "mish", "gelu",
}  # fmt: skip
SAME_ACTIVATIONS_RENAMED = {"silu": "swish"}


def _hard_sigmoid(x):  # Keras 3: relu6(x + 3) / 6
    return tf.math.multiply(tf.nn.relu6(tf.math.add(x, 3.0)), 1.0 / 6.0)


def _hard_silu(x):
    return tf.math.multiply(x, _hard_sigmoid(x))


def _leaky_relu(x):  # Keras 3's default negative slope
    return tf.nn.leaky_relu(x, alpha=0.2)


# Keras 3 activations rebuilt from TensorFlow ops (tf_keras lacks them or means another function).
OP_ACTIVATIONS = {
    "relu6": tf.nn.relu6,
    "hard_sigmoid": _hard_sigmoid,
    "hard_silu": _hard_silu,
    "hard_swish": _hard_silu,
    "leaky_relu": _leaky_relu,
}

# Keras 3 operations (keras.ops, or Python operators on symbolic tensors) with no arguments
# of their own: the TensorFlow function that computes the same.
OPS = {
    "Add": tf.math.add,
    "Subtract": tf.math.subtract,
    "Multiply": tf.math.multiply,
    "Divide": tf.math.divide,
    "TrueDivide": tf.math.truediv,
    "Negative": tf.math.negative,
    "Maximum": tf.math.maximum,
    "Minimum": tf.math.minimum,
    "Abs": tf.math.abs,
    "Square": tf.math.square,
    "Sqrt": tf.math.sqrt,
    "Exp": tf.math.exp,
    "Log": tf.math.log,
    "Relu": tf.nn.relu,
    "Relu6": tf.nn.relu6,
    "Sigmoid": tf.math.sigmoid,
    "Tanh": tf.math.tanh,
    "HardSigmoid": _hard_sigmoid,
    "HardSilu": _hard_silu,
}

# Keyword arguments every tf_keras layer takes through ``Layer.__init__``.
BASE_LAYER_KEYS = {"name", "trainable", "dtype", "dynamic", "input_shape", "batch_input_shape"}
# Keras 3 config keys renamed in tf_keras, per layer class.
RENAMED_KEYS = {"LeakyReLU": {"negative_slope": "alpha"}}


def is_keras3(metadata: dict) -> bool:
    """Whether a ``.keras`` file's ``metadata.json`` says Keras 3 saved it."""
    return str(metadata.get("keras_version", "")).split(".")[0] == "3"


V3_MEMBERS = ("config.json", "metadata.json")


def check_keras_v3(path: str | Path) -> dict:
    """The ``metadata.json`` of a Keras v3 ``.keras`` zip; a one-line error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise LiteconvError(f"{path}: no such model file")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            head = fh.read(8)
        kind = "an HDF5 file" if head.startswith(b"\x89HDF") else "not a zip archive"
        raise LiteconvError(
            f"{path}: {kind}, not a Keras v3 .keras file; re-save the model with "
            "model.save('model.keras') (legacy formats can run code while loading)"
        )
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            missing = [m for m in V3_MEMBERS if m not in names]
            if missing:
                raise LiteconvError(f"{path}: not a Keras v3 .keras file (no {missing[0]})")
            metadata = json.loads(zf.read("metadata.json"))
    except (zipfile.BadZipFile, ValueError, RecursionError) as err:
        raise LiteconvError(f"{path}: corrupt .keras file ({err})") from None
    if not isinstance(metadata, dict):
        raise LiteconvError(f"{path}: corrupt .keras file (metadata.json is not a mapping)")
    return metadata


def load_keras3(path: str | Path, custom_objects: dict | None = None):
    """The tf_keras twin of the Keras 3 model in ``path`` (weights copied, outputs checked)."""
    path = Path(path)
    k3 = keras3()
    try:
        source = k3.models.load_model(
            path, compile=False, safe_mode=True, custom_objects=custom_objects or None
        )
    except Exception as err:  # unknown layer, refused lambda, corrupt weights
        first = first_line(err)
        raise LiteconvError(f"{path}: Keras 3 cannot load the model ({first[:300]})") from None
    model = _Rebuild(path, k3).model(source)
    check_same_outputs(path, source, model)
    return model


def check_same_outputs(path: Path, source, model, seed: int = 0) -> float:
    """Max |difference| of the two models' outputs on one random batch; an error if they differ."""
    rng = np.random.default_rng(seed)
    feeds = []
    for tensor in source.inputs:
        shape = [2 if d is None else int(d) for d in tensor.shape]
        dtype = np.dtype(str(getattr(tensor.dtype, "name", tensor.dtype)))
        if np.issubdtype(dtype, np.integer):
            feeds.append(rng.integers(0, 8, size=shape).astype(dtype))
        else:
            feeds.append(rng.uniform(0.0, 1.0, size=shape).astype(dtype))
    feed = feeds[0] if len(feeds) == 1 else feeds
    want = [np.asarray(a) for a in tf.nest.flatten(source(feed, training=False))]
    got = [np.asarray(a) for a in tf.nest.flatten(model(feed, training=False))]
    worst = 0.0
    for w, g in zip(want, got, strict=True):
        if w.shape != g.shape:
            raise LiteconvError(
                f"{path}: the Keras 2 rebuild gives an output of shape {g.shape}, Keras 3 "
                f"{w.shape}; {HOW_TO_RESAVE}"
            )
        if not w.size:
            continue
        diff = float(np.max(np.abs(w.astype(np.float64) - g)))
        worst = max(worst, diff)
        # the same TensorFlow kernels run both: measured 0 to 1e-7 of the output's scale
        if diff > 1e-5 * (1.0 + float(np.max(np.abs(w)))):
            raise LiteconvError(
                f"{path}: the Keras 2 rebuild of this Keras 3 model answers differently "
                f"(max |diff| {diff:.3g}); {HOW_TO_RESAVE}"
            )
    return worst


# Keras 3 options tf_keras lacks, at the values that mean what tf_keras does anyway.
KERAS3_DEFAULTS = {"data_format": ("channels_last",)}


def _neutral(key: str, value) -> bool:
    return (
        value is None
        or value is False
        or value in ([], {})
        or (value in KERAS3_DEFAULTS.get(key, ()))
    )


def _references(node: dict) -> list[tuple[str, int]]:
    """``(layer name, call index)`` of every tensor a config's call takes."""
    found, todo = [], [node.get("args", []), node.get("kwargs", {})]
    while todo:
        value = todo.pop()
        if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
            name, call, _ = value["config"]["keras_history"]
            found.append((name, call))
        elif isinstance(value, dict):
            todo.extend(value.values())
        elif isinstance(value, (list, tuple)):
            todo.extend(value)
    return found


class _Rebuild:
    """Calls a Keras 3 model's graph again with tf_keras layers; remembers the layer pairs."""

    def __init__(self, path: Path, k3):
        self.path = path
        self.k3 = k3
        self.layers: dict[int, object] = {}  # id(Keras 3 layer or model) -> tf_keras twin
        self.pairs: list[tuple[object, object]] = []  # layers
        self.models: list[tuple[object, object]] = []

    def fail(self, what: str) -> LiteconvError:
        return LiteconvError(f"{self.path}: Keras 3 model, {what}; {HOW_TO_RESAVE}")

    # models ------------------------------------------------------------------------------

    def model(self, source):
        twin = self._graph(source)
        for old, new in self.pairs:
            weights = old.get_weights()
            shapes = [tuple(w.shape) for w in weights]
            want = [tuple(w.shape) for w in new.get_weights()]
            if shapes != want:
                raise self.fail(f"layer {old.name!r} has weights {shapes}, its rebuild {want}")
            new.set_weights(weights)
        # a frozen backbone stays frozen: models outermost first (tf_keras passes a model's
        # flag down to its layers), then each layer's own, as Keras 3 loaded them
        for old, new in [*reversed(self.models), *self.pairs]:
            new.trainable = old.trainable
        return twin

    def _graph(self, source):
        if id(source) in self.layers:
            return self.layers[id(source)]
        if isinstance(source, self.k3.Sequential):
            twin = self._sequential(source)
        elif isinstance(source, self.k3.Model) and hasattr(source, "operations"):
            try:
                config = source.get_config()
            except Exception as err:  # a subclassed model has no graph to walk
                what = f"{source.name!r} is not a Functional model ({first_line(err)[:200]})"
                raise self.fail(what) from None
            if "layers" not in config or "output_layers" not in config:
                raise self.fail(f"{source.name!r} is a subclassed model (no layer graph)")
            twin = self._functional(source, config)
        else:
            raise self.fail(f"{type(source).__name__} {source.name!r} is not a model")
        self.layers[id(source)] = twin
        self.models.append((source, twin))
        return twin

    def _sequential(self, source):
        try:
            inputs = source.inputs
        except (AttributeError, ValueError):
            inputs = None
        if not inputs:
            raise self.fail(f"Sequential {source.name!r} has no input shape (never built)")
        spec = inputs[0]
        x = keras.Input(batch_shape=tuple(spec.shape), dtype=str(spec.dtype), name="input")
        inp = x
        for layer in source.layers:
            x = self._call(layer, [x], {})
        return keras.Model(inp, x, name=source.name)

    def _functional(self, source, config):
        operations = {op.name: op for op in source.operations}
        outputs: dict[tuple[str, int], object] = {}
        pending: list[tuple] = []
        for entry in config["layers"]:
            name = entry.get("name") or entry["config"]["name"]
            if entry["class_name"] == "InputLayer":
                cfg = entry["config"]
                shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
                outputs[(name, 0)] = keras.Input(
                    batch_shape=tuple(shape), dtype=_dtype_name(cfg.get("dtype")), name=name,
                    sparse=bool(cfg.get("sparse")),
                )  # fmt: skip
                continue
            op = operations.get(name)
            if op is None:
                raise self.fail(f"layer {name!r} of its config is not in the model")
            pending += [(name, index, op, node)
                        for index, node in enumerate(entry.get("inbound_nodes", []))]  # fmt: skip
        # each call once the calls giving its inputs ran (the config lists a layer once, with
        # all its calls: a shared layer's second call may need layers listed after it)
        try:
            pending = dependency_order(pending, lambda call: _references(call[3]),
                                       lambda call: [call[:2]], set(outputs), source.name)  # fmt: skip
        except ValueError:
            raise self.fail(f"the calls of {source.name!r} cannot be ordered") from None
        for name, index, op, node in pending:
            args = self._resolve(node.get("args", []), outputs)
            kwargs = self._resolve(node.get("kwargs", {}), outputs)
            outputs[(name, index)] = self._call(op, args, kwargs)
        ins = self._pick(config["input_layers"], outputs)
        outs = self._pick(config["output_layers"], outputs)
        return keras.Model(ins, outs, name=source.name)

    def _resolve(self, value, outputs):
        if isinstance(value, dict):
            if value.get("class_name") == "__keras_tensor__":
                name, node, index = value["config"]["keras_history"]
                return tf.nest.flatten(outputs[(name, node)])[index]
            return {k: self._resolve(v, outputs) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self._resolve(v, outputs) for v in value)
        return value

    def _pick(self, refs, outputs):
        if isinstance(refs, dict):
            return {k: self._pick(v, outputs) for k, v in refs.items()}
        if len(refs) == 3 and isinstance(refs[0], str) and isinstance(refs[1], int):
            name, node, index = refs
            return tf.nest.flatten(outputs[(name, node)])[index]
        return [self._pick(r, outputs) for r in refs]

    # nodes -------------------------------------------------------------------------------

    def _call(self, op, args, kwargs):
        kwargs = {k: v for k, v in kwargs.items() if k != "training"}
        if isinstance(op, self.k3.Model):
            return self._graph(op)(*args, **kwargs)
        if isinstance(op, self.k3.layers.Layer):
            layer, after = self._layer(op)
            out = layer(*args, **kwargs)
            return after(out) if after else out
        return self._operation(op, args, kwargs)

    def _operation(self, op, args, kwargs):
        kind = type(op).__name__
        fn = OPS.get(kind)
        own = {k: v for k, v in _op_config(op).items() if k != "name"}
        if fn is None or own or kwargs:
            extra = f" with {own or kwargs}" if (own or kwargs) else ""
            raise self.fail(f"operation {op.name!r} ({kind}{extra}) has no Keras 2 rebuild here")
        return fn(*args)

    def _layer(self, source):
        if id(source) in self.layers:
            return self.layers[id(source)]
        kind = type(source).__name__
        cls = getattr(keras.layers, kind, None)
        stock = type(source).__module__.startswith("keras.")
        if cls is None or not stock:
            what = "custom layer" if not stock else "layer with no tf_keras twin"
            raise self.fail(f"{what} {source.name!r} ({kind})")
        config = dict(source.get_config())
        after = None
        if isinstance(config.get("activation"), (str, dict)):
            config["activation"], after = self._activation(source, config["activation"])
        config = self._translate(source, kind, cls, config)
        try:
            layer = cls.from_config(config)
        except Exception as err:
            raise self.fail(f"layer {source.name!r} ({kind}): {first_line(err)[:200]}") from None
        self.layers[id(source)] = (layer, after)
        self.pairs.append((source, layer))
        return layer, after

    def _activation(self, source, activation):
        name = activation
        if isinstance(activation, dict):  # a serialized function
            name = activation.get("config") if isinstance(activation.get("config"), str) else None
        if name in SAME_ACTIVATIONS:
            return name, None
        if name in SAME_ACTIVATIONS_RENAMED:
            return SAME_ACTIVATIONS_RENAMED[name], None
        if name in OP_ACTIVATIONS:
            return "linear", OP_ACTIVATIONS[name]
        raise self.fail(f"layer {source.name!r}: activation {activation!r} has no Keras 2 twin")

    def _translate(self, source, kind, cls, config):
        out = {}
        renamed = RENAMED_KEYS.get(kind, {})
        accepted = set(BASE_LAYER_KEYS)
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is not None:
                accepted |= {p for p in inspect.signature(init).parameters if p != "self"}
        for key, value in config.items():
            key = renamed.get(key, key)
            if key == "dtype":
                out[key] = _dtype_name(value)
            elif key.endswith("_initializer"):
                continue  # the weights are copied
            elif key.endswith(("_regularizer", "_constraint")) and value is not None:
                out[key] = self._serialized(source, key, value)
            elif key in accepted:
                out[key] = value
            elif not _neutral(key, value):
                raise self.fail(
                    f"layer {source.name!r} ({kind}) sets {key}={value!r}, which tf_keras lacks"
                )
        return out

    def _serialized(self, source, key, value):
        kind = value.get("class_name") if isinstance(value, dict) else None
        getter = keras.regularizers if key.endswith("_regularizer") else keras.constraints
        try:
            return getter.get({"class_name": kind, "config": value.get("config", {})})
        except Exception:
            raise self.fail(f"layer {source.name!r}: {key} {kind!r} has no Keras 2 twin") from None


def _dtype_name(value) -> str | None:
    if isinstance(value, dict):  # a serialized DTypePolicy
        config = value.get("config", {})
        return config.get("name") if isinstance(config, dict) else None
    return None if value is None else str(getattr(value, "name", value))


def _op_config(op) -> dict:
    try:
        return dict(op.get_config())
    except Exception:  # an operation that cannot say its arguments
        return {"?": "unknown arguments"}
