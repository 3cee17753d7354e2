"""Choosing the inference example weight (alpha) of a trained model.

Summers & Dinneen (2020) choose one alpha for the whole network after
training, on held-out data. `tune_inference_example_weight` evaluates a grid
of candidates, sets the best one on every layer that has an
`inference_example_weight`, and returns every candidate's score.
"""

import dataclasses
import math

import keras
import numpy as np

_MULTIPLES = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)


def supporting_layers(model):
    """The layers of `model` (nested ones included) with an example weight."""
    return [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if hasattr(layer, "inference_example_weight")
    ]


def set_inference_example_weight(model, value):
    """Sets `inference_example_weight` on every supporting layer of `model`.

    Compiled test and predict functions captured the old value when they were
    traced, so this also forces them to re-trace on their next use.

    Args:
        model: a Keras model (or layer) containing keras_norms layers.
        value: float in [0, 1].

    Returns:
        The number of layers changed.

    Raises:
        ValueError: if `value` is not in [0, 1] or no layer supports it.

    Reference:
        - [Summers & Dinneen, 2020](https://arxiv.org/abs/1906.03548), §3
          (one example weight for the whole network, chosen after training).
    """
    number = float(value)
    if not 0.0 <= number <= 1.0 or math.isnan(number):
        raise ValueError(
            f"set_inference_example_weight: `value`={value!r} must be a float in [0, 1]."
        )
    layers = supporting_layers(model)
    if not layers:
        raise ValueError(
            "set_inference_example_weight: the model has no layer with an "
            "`inference_example_weight` (e.g. keras_norms.BatchNormalization)."
        )
    for layer in layers:
        layer.inference_example_weight = number
    _force_retrace(model)
    return len(layers)


def _force_retrace(model):
    for name in ("make_test_function", "make_predict_function"):
        if hasattr(model, name) and getattr(model, "compiled", False):
            getattr(model, name)(force=True)
    # Functions traced before compile() are dropped so the next use re-traces.
    for attribute in ("test_function", "predict_function"):
        if hasattr(model, attribute):
            setattr(model, attribute, None)


def default_candidates(ghost_batch_size):
    """The grid `{0} ∪ {c / B'}` for c in 0.25..2, clipped to [0, 1], sorted."""
    values = {0.0} | {min(1.0, c / ghost_batch_size) for c in _MULTIPLES}
    return sorted(values)


def _ghost_batch_size(layers, training_batch_size):
    sizes = [
        getattr(layer, "virtual_batch_size", None) or getattr(layer, "examples_per_group", None)
        for layer in layers
    ]
    sizes = [s for s in sizes if s]
    if sizes:
        return min(sizes)
    if training_batch_size is None:
        raise ValueError(
            "tune_inference_example_weight: no layer has a virtual_batch_size, "
            "so the default grid needs `training_batch_size` (the batch size "
            "the model was trained with). Pass it, or pass `candidates`."
        )
    return training_batch_size


@dataclasses.dataclass
class ExampleWeightSearch:
    """Result of `tune_inference_example_weight`.

    Attributes:
        best: the chosen alpha, now set on the model.
        scores: dict alpha -> score, in the order evaluated.
        mode: `"min"` or `"max"`, how scores were compared.
    """

    best: float
    scores: dict
    mode: str

    def table(self):
        """The scores as text, one `alpha  score` line each, best marked."""
        lines = ["alpha      score"]
        for alpha, score in self.scores.items():
            mark = "  <- best" if alpha == self.best else ""
            lines.append(f"{alpha:<10.4g} {score:.6g}{mark}")
        return "\n".join(lines)


def tune_inference_example_weight(
    model,
    x,
    y=None,
    *,
    candidates=None,
    training_batch_size=None,
    metric=None,
    mode="min",
    batch_size=None,
    verbose=1,
):
    """Chooses one inference example weight for the whole model on held-out data.

    For each candidate $\\alpha$ it sets $\\alpha$ on every layer with an
    `inference_example_weight` (inference then mixes each example's own
    moments with the population moments, see `keras_norms.BatchNormalization`),
    evaluates the model, and finally keeps the best candidate set on the
    model. Ties go to the smaller $\\alpha$; $\\alpha=0$ (plain population
    statistics) is always a candidate of the default grid

    $$\\{0\\}\\cup\\{c/B' : c\\in\\{0.25,0.5,0.75,1,1.25,1.5,2\\}\\}\\cap[0,1]$$

    where $B'$ is the smallest `virtual_batch_size` (or `examples_per_group`)
    among the layers, else `training_batch_size`. The grid is this package's
    choice, centred on $1/B'$ (the paper's search procedure is not
    confirmed); see the Design notes page of the documentation, section
    Inference example weighing.

    **State after the call**: the best $\\alpha$ is set on every supporting
    layer, and the model's test and predict functions are re-traced on their
    next use. Nothing else changes: weights and moving statistics are only
    read (the evaluation runs in inference mode).

    Args:
        model: a trained Keras model. Compiled, unless `metric` is given.
        x: held-out inputs, or a dataset of `(inputs, targets)` as accepted by
            `model.evaluate`.
        y: held-out targets, when `x` holds only inputs.
        candidates: optional iterable of floats in [0, 1], evaluated in the
            given order; overrides the default grid.
        training_batch_size: int, the batch size behind the training
            statistics; needed for the default grid only when no layer has a
            `virtual_batch_size`.
        metric: optional callable `metric(y_true, y_pred) -> float` on the
            model's predictions (NumPy arrays; needs `y`). Defaults to the
            model's compiled loss via `model.evaluate`.
        mode: `"min"` (default) if lower scores are better, `"max"` otherwise.
        batch_size: batch size of the evaluation.
        verbose: 1 shows a progress bar over the candidates, 0 is silent.

    Returns:
        An `ExampleWeightSearch` with `.best`, `.scores` and `.table()`.

    Raises:
        ValueError: for a model without supporting layers, an invalid `mode`,
            candidate or missing `training_batch_size`, an uncompiled model
            without `metric`, or `metric` without `y`.

    Example:

    ```python
    result = keras_norms.tune_inference_example_weight(model, x_val, y_val)
    print(result.table())  # alpha -> validation loss; result.best is now set
    ```

    Reference:
        - [Summers & Dinneen, 2020](https://arxiv.org/abs/1906.03548), §3.
    """
    owner = "tune_inference_example_weight"
    layers = supporting_layers(model)
    if not layers:
        raise ValueError(
            f"{owner}: the model has no layer with an `inference_example_weight` "
            "(e.g. keras_norms.BatchNormalization); nothing to tune."
        )
    if mode not in ("min", "max"):
        raise ValueError(f"{owner}: `mode`={mode!r} must be 'min' or 'max'.")
    if metric is None and not getattr(model, "compiled", False):
        raise ValueError(f"{owner}: compile the model first, or pass `metric`.")
    if metric is not None and y is None:
        raise ValueError(f"{owner}: a `metric` needs the held-out targets `y`.")
    if candidates is None:
        candidates = default_candidates(_ghost_batch_size(layers, training_batch_size))
    candidates = [float(c) for c in candidates]
    bad = [c for c in candidates if not 0.0 <= c <= 1.0]
    if not candidates or bad:
        raise ValueError(
            f"{owner}: `candidates` must be a non-empty list of floats in [0, 1]; "
            f"received {bad or 'an empty list'}."
        )

    progress = (
        keras.utils.Progbar(len(candidates), unit_name="alpha", stateful_metrics=["alpha", "score"])
        if verbose
        else None
    )
    scores = {}
    for i, alpha in enumerate(candidates):
        set_inference_example_weight(model, alpha)
        if metric is None:
            logs = model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)
            score = float(logs["loss"])
        else:
            prediction = model.predict(x, batch_size=batch_size, verbose=0)
            score = float(metric(np.asarray(y), np.asarray(prediction)))
        scores[alpha] = score
        if progress is not None:
            progress.update(i + 1, values=[("alpha", alpha), ("score", score)])

    sign = 1.0 if mode == "min" else -1.0
    best = min(scores, key=lambda a: (sign * scores[a], a))
    set_inference_example_weight(model, best)
    return ExampleWeightSearch(best=best, scores=scores, mode=mode)
