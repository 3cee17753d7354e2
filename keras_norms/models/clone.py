"""Model surgery shared by `fold.py`, `convert.py` and `freeze.py` (not public).

`clone` rebuilds a built Functional or Sequential model with
`keras.models.clone_model(..., recursive=True)` and records which new layer
replaces which old one, so that the caller can move weights pair by pair
(nested models included). `producers` reads the layer graph: which layer
feeds each layer.
"""

import inspect

import keras


def _is_functional(layer):
    return isinstance(layer, keras.Model) and hasattr(layer, "_nodes_by_depth")


def check_model(model, owner):
    """Raises a `ValueError` unless `model` is a built Functional or Sequential model."""
    if not (isinstance(model, keras.Sequential) or _is_functional(model)) or not model.built:
        raise ValueError(
            f"{owner}: `model` must be a built Functional or Sequential "
            f"keras.Model, received {type(model).__name__}"
            f"{'' if getattr(model, 'built', True) else ' (not built)'}. Build "
            "it first, e.g. by calling it on data or starting it with keras.Input."
        )


def functional_inputs(model):
    """Fresh `keras.Input`s shaped like `model.input`, keeping the input layers' names.

    (`clone_model` names a cloned Functional model's inputs after its input
    tensors, `keras_tensor*`, which would change the model's input names.)
    """
    names = {id(layer.output): layer.name for layer in model.layers if isinstance(layer, keras.layers.InputLayer)}
    return keras.tree.map_structure(
        lambda t: keras.Input(batch_shape=t.shape, dtype=t.dtype, name=names.get(id(t))), model.input
    )


def clone(model, replace):
    """Clones `model`, each layer by `replace(layer)`, nested models recursively.

    Returns:
        `(new_model, pairs)`: `pairs` lists `(old_layer, new_layer)` for every
        layer that `replace` was called on (each layer once, nested models'
        layers included, the nested models themselves not), so that the
        caller can copy weights; the new layers are built.
    """
    pairs = []

    def clone_function(layer):
        if not isinstance(layer, keras.layers.Layer):
            # A `keras.ops` operation in the graph (ConvNeXt's `x + y`): no
            # weights, nothing to replace; a fresh copy shares nothing.
            return layer.__class__.from_config(layer.get_config())
        new = replace(layer)
        pairs.append((layer, new))
        return new

    if isinstance(model, keras.Sequential):  # its layers take no call arguments
        new_model = keras.models.clone_model(model, clone_function=clone_function, recursive=True)
    else:
        new_model = keras.models.clone_model(
            model,
            input_tensors=functional_inputs(model),
            clone_function=clone_function,
            call_function=_call,
            recursive=True,
        )
    return new_model, pairs


def _call(layer, *args, **kwargs):
    """Calls a new layer as its predecessor was called, less a `mask` it does not take.

    (Keras records `mask=None` in the graph for a layer whose `call` takes a
    mask, e.g. BatchNormalization; a replacement such as GroupNormalization
    does not take one, and Keras still propagates masks on its own.)
    """
    if "mask" in kwargs:
        parameters = inspect.signature(layer.call).parameters
        if "mask" not in parameters and not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            kwargs.pop("mask")
    return layer(*args, **kwargs)


def submodels(model):
    """`model` and every Functional or Sequential model nested in it, depth first."""
    yield model
    for layer in model.layers:
        if isinstance(layer, keras.Sequential) or _is_functional(layer):
            yield from submodels(layer)


def producers(model):
    """`{id(layer): (layer, producer, exclusive)}` for the layers of `model` (not nested).

    `producer` is the layer whose output is `layer`'s only input, or None
    (several inputs, a model input, or a layer called more than once);
    `exclusive` says whether `layer` is the only consumer of that output (and
    the output is not a model output), so that changing the producer's output
    affects nothing else.
    """
    if isinstance(model, keras.Sequential):
        layers = model.layers
        result = {id(layer): (layer, None, False) for layer in layers}
        for before, after in zip(layers, layers[1:]):
            if layers.count(before) == 1 and layers.count(after) == 1:
                result[id(after)] = (after, before, True)
        return result
    nodes = [node for depth in model._nodes_by_depth.values() for node in depth]
    calls, consumers = {}, {}
    for node in nodes:
        calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
        for parent in node.parent_nodes:
            consumers[id(parent)] = consumers.get(id(parent), 0) + 1
    for tensor in keras.tree.flatten(model.outputs):
        operation, index, _ = tensor._keras_history
        parent = operation._inbound_nodes[index]
        consumers[id(parent)] = consumers.get(id(parent), 0) + 1
    result = {}
    for node in nodes:
        layer = node.operation
        parents = node.parent_nodes
        producer, exclusive = None, False
        if calls[id(layer)] == 1 and len(node.input_tensors) == 1 and len(parents) == 1:
            parent = parents[0]
            if calls.get(id(parent.operation)) == 1 and len(parent.outputs) == 1 and not parent.is_input:
                producer = parent.operation
                exclusive = consumers.get(id(parent)) == 1
        result[id(layer)] = (layer, producer, exclusive)
    return result
