"""A Keras model's graph as it runs: every call of every layer (a layer the model applies
twice has two), in an order each call's inputs exist, and nested models inlined.

Keras lists a layer once in ``model.layers`` however often the model calls it, and a nested
model (a transfer-learning backbone) as one layer; what the TFLite converter runs, and what
costs time and MACs, is every call of every leaf layer.

Example:
    >>> for layer, node in ordered_calls(model): ...
    >>> flat = inline_nested(model)   # a backbone's layers called in its place
"""

from __future__ import annotations

from collections.abc import Callable

from liteconv.compat import keras, tf


def layer_calls(layer, model) -> list:
    """The calls (Keras nodes) of ``layer`` inside ``model``'s graph, in call order: a layer
    the model shares (one ``Conv2D`` applied twice) has several, each with its own tensors
    and shapes, and each costs its MACs. ``[None]`` where the model keeps no graph (a
    subclassed model): the layer's own ``input`` / ``output`` then."""
    keys = getattr(model, "_network_nodes", None)
    nodes = getattr(layer, "inbound_nodes", None) or []
    if not keys or not nodes:
        return [None]
    own = [n for i, n in enumerate(nodes) if f"{layer.name}_ib-{i}" in keys and not n.is_input]
    return own or [None]


def ordered_calls(model) -> list[tuple]:
    """``(layer, node)`` for every call of a layer in ``model``'s graph, in ``model.layers``
    order except where a call's inputs come later (a shared layer's second call, listed
    with its first): each call after the calls that give its inputs.

    Raises:
        ValueError: the model keeps no graph (subclassed), or its graph cannot be ordered.
    """
    pending = [(layer, node) for layer in model.layers
               if not isinstance(layer, keras.layers.InputLayer)
               for node in layer_calls(layer, model)]  # fmt: skip
    if any(node is None for _, node in pending):
        raise ValueError(f"{model.name}: keeps no graph of its calls (a subclassed model, or "
                         "a Sequential never built on an Input)")  # fmt: skip
    return dependency_order(pending, lambda call: [id(t) for t in call[1].keras_inputs],
                            lambda call: [id(t) for t in tf.nest.flatten(call[1].outputs)],
                            {id(t) for t in model.inputs}, model.name)  # fmt: skip


def dependency_order(pending: list, needs: Callable, gives: Callable, have: set, name: str) -> list:
    """``pending`` in their order except where an item ``needs`` what a later one
    ``gives``: each after the items giving what it needs (``have``: what exists first).

    Raises:
        ValueError: no order exists (an item needs what nothing gives).
    """
    pending, have, order = list(pending), set(have), []
    while pending:
        ready = next((i for i, item in enumerate(pending)
                      if all(k in have for k in needs(item))), None)  # fmt: skip
        if ready is None:
            raise ValueError(f"{name}: its graph's calls cannot be ordered")
        order.append(pending.pop(ready))
        have.update(gives(order[-1]))
    return order


def inline_nested(model):
    """A copy of ``model`` with each nested functional model (a transfer-learning backbone)
    replaced by copies of its own layers, called in its place with the same weights and
    trainable flags: the graph the converter inlines, which tfmot (it refuses or skips a
    model in a model), profile's blocks and flatten's choice of layers can walk. A layer
    shared by several calls stays shared. ``model`` itself where nothing is nested; the
    model given is not changed (its layers are not called again).

    Raises:
        ValueError: a nested model without a graph (subclassed), or two layers of one name.
    """
    if not any(isinstance(layer, keras.Model) for layer in model.layers):
        return model
    tensors = {id(t): t for t in model.inputs}
    copies: dict[int, object] = {}
    replay(model, tensors, copies)
    outputs = [tensors[id(t)] for t in model.outputs]
    flat = keras.Model(model.inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name)
    for layer, copy in copies.values():
        copy.set_weights(layer.get_weights())
        copy.trainable = layer.trainable
    return flat


def replay(
    model,
    tensors: dict,
    copies: dict,
    training: bool | None = None,
    *,
    replace: Callable | None = None,
    inline: bool = True,
) -> None:
    """Call a copy of every layer of ``model``'s graph on ``tensors`` (id of a tensor of
    the old graph -> its tensor in the new one), a nested model's layers in its place
    (``inline``; else the nested model is copied as one layer); ``copies``: id of a layer ->
    (layer, its copy), one copy per layer however often called (the copies are fresh: the
    caller sets their weights). ``training``: what the call of the model around them fixed
    (a backbone called with ``training=False`` runs its BatchNormalization in inference
    mode even while the outer model trains), passed on to every layer that takes it.
    ``replace(layer, x)``: an output tensor for a call of ``layer`` on ``x`` (its first
    input) to use instead of a copy's, or None to keep the copy."""
    for layer, node in ordered_calls(model):
        if inline and isinstance(layer, keras.Model):
            for inner, outer in zip(layer.inputs, node.keras_inputs):
                tensors[id(inner)] = tensors[id(outer)]
            fixed = node.call_kwargs.get("training", training)
            replay(layer, tensors, copies, training if fixed is None else fixed,
                   replace=replace)  # fmt: skip
            out = [tensors[id(t)] for t in layer.outputs]
        else:
            args, kwargs = tf.nest.map_structure(lambda t: tensors.get(id(t), t),
                                                 (node.call_args, node.call_kwargs))  # fmt: skip
            out = replace(layer, args[0]) if replace is not None else None
            if out is None:
                if id(layer) not in copies:
                    copies[id(layer)] = (layer, type(layer).from_config(layer.get_config()))
                if training is not None and getattr(layer, "_expects_training_arg", False):
                    kwargs = {**kwargs, "training": training}
                out = copies[id(layer)][1](*args, **kwargs)
        for old, new in zip(tf.nest.flatten(node.outputs), tf.nest.flatten(out)):
            tensors[id(old)] = new
