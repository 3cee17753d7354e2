"""Training callbacks: the Batch Renormalization schedule."""

import keras


def renorm_layers(model):
    """The layers of `model` (nested ones included) with `renorm=True`."""
    return [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if getattr(layer, "renorm", False) is True and hasattr(layer, "renorm_clipping")
    ]


def _positive_int(owner, name, value, minimum=0):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}: `{name}`={value!r} must be an int >= {minimum}.")
    return value


@keras.saving.register_keras_serializable(package="keras_norms")
class BatchRenormSchedule(keras.callbacks.Callback):
    """Relaxes Batch Renormalization's clipping bounds during training.

    Batch Renorm starts as plain batch normalization ($r_{max}=1$,
    $d_{max}=0$) and its bounds are then relaxed. At global step $t$:

    $$r_{max}(t)=1+(r^*_{max}-1)\\,\\rho_r(t),\\quad
      d_{max}(t)=d^*_{max}\\,\\rho_d(t),\\quad r_{min}(t)=1/r_{max}(t)$$

    with linear ramps $\\rho_r(t)=\\operatorname{clip}\\big(\\frac{t-t_0}{t_r-t_0},0,1\\big)$
    and $\\rho_d$ likewise with $t_d$, where $t_0$ = `warmup_steps`,
    $t_r$ = `rmax_steps`, $t_d$ = `dmax_steps`. The values are written into
    every layer with `renorm=True` (nested models included) as its
    `renorm_clipping`.

    The bounds are Python floats that compiled train functions capture when
    they are traced, so each change forces a re-trace
    (`model.make_train_function(force=True)`). Because re-tracing costs a
    compilation, the schedule is applied piecewise-constant: it is evaluated
    every `update_every` steps (and at the start of training).

    The paper's example (plain BN for 5k steps, then $r_{max}\\to3$ by 40k
    steps and $d_{max}\\to5$ by 25k steps) comes from a secondary source and
    is not confirmed in the paper; it is an example, not a default (see the
    Design notes page of the documentation, section Batch Renormalization
    schedule):
    `BatchRenormSchedule(rmax=3, dmax=5, warmup_steps=5000,
    rmax_steps=40000, dmax_steps=25000)`.

    Args:
        rmax: float >= 1, the final $r_{max}$.
        dmax: float >= 0, the final $d_{max}$.
        warmup_steps: int >= 0, steps of plain BN before the ramps start.
            Defaults to 0.
        rmax_steps: int, the step at which $r_{max}$ reaches `rmax`
            (>= `warmup_steps`).
        dmax_steps: int, the step at which $d_{max}$ reaches `dmax`
            (>= `warmup_steps`).
        update_every: int >= 1, apply the schedule every this many steps.
            Defaults to 100.
        verbose: int, 1 prints each change of the bounds. Defaults to 0.

    Returns:
        A Keras callback for `model.fit(..., callbacks=[...])`. After each
        epoch it adds `renorm_rmax` and `renorm_dmax` to the logs.

    Raises:
        ValueError: for an invalid argument, or (at the start of training) a
            model without any layer using `renorm=True`.

    Example:

    ```python
    schedule = keras_norms.BatchRenormSchedule(
        rmax=3.0, dmax=5.0, warmup_steps=500, rmax_steps=4000, dmax_steps=2500,
        update_every=100,
    )
    model.fit(x, y, epochs=10, callbacks=[schedule])
    ```

    Reference:
        - [Ioffe, 2017](https://arxiv.org/abs/1702.03275)
    """

    def __init__(
        self,
        rmax,
        dmax,
        warmup_steps=0,
        rmax_steps=None,
        dmax_steps=None,
        update_every=100,
        verbose=0,
    ):
        super().__init__()
        owner = "BatchRenormSchedule"
        if not float(rmax) >= 1.0:
            raise ValueError(f"{owner}: `rmax`={rmax!r} must be a float >= 1.")
        if not float(dmax) >= 0.0:
            raise ValueError(f"{owner}: `dmax`={dmax!r} must be a float >= 0.")
        self.rmax = float(rmax)
        self.dmax = float(dmax)
        self.warmup_steps = _positive_int(owner, "warmup_steps", warmup_steps)
        rmax_steps = self.warmup_steps if rmax_steps is None else rmax_steps
        dmax_steps = self.warmup_steps if dmax_steps is None else dmax_steps
        self.rmax_steps = _positive_int(owner, "rmax_steps", rmax_steps, self.warmup_steps)
        self.dmax_steps = _positive_int(owner, "dmax_steps", dmax_steps, self.warmup_steps)
        self.update_every = _positive_int(owner, "update_every", update_every, 1)
        self.verbose = verbose
        self._step = 0
        self._applied = None

    def bounds(self, step):
        """`(rmax, dmax)` of the schedule at global step `step`."""

        def ramp(end):
            if step < self.warmup_steps:
                return 0.0
            if end == self.warmup_steps:
                return 1.0
            return min(1.0, (step - self.warmup_steps) / (end - self.warmup_steps))

        return 1.0 + (self.rmax - 1.0) * ramp(self.rmax_steps), self.dmax * ramp(self.dmax_steps)

    def _apply(self, step):
        rmax, dmax = self.bounds(step - step % self.update_every)
        if (rmax, dmax) == self._applied:
            return
        clipping = {"rmax": rmax, "rmin": 1.0 / rmax, "dmax": dmax}
        for layer in self._layers:
            layer.renorm_clipping = dict(clipping)
        self._applied = (rmax, dmax)
        self.model.make_train_function(force=True)
        if self.verbose:
            print(f"BatchRenormSchedule: step {step}: rmax={rmax:.4g}, dmax={dmax:.4g}")

    def on_train_begin(self, logs=None):
        self._layers = renorm_layers(self.model)
        if not self._layers:
            raise ValueError(
                "BatchRenormSchedule: the model has no layer with renorm=True "
                "(e.g. keras_norms.BatchNormalization(renorm=True)); remove the "
                "callback or enable renorm."
            )
        self._step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        self._applied = None
        self._apply(self._step)

    def on_train_batch_begin(self, batch, logs=None):
        if self._step % self.update_every == 0:
            self._apply(self._step)

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._applied is not None:
            logs["renorm_rmax"], logs["renorm_dmax"] = self._applied

    def get_config(self):
        return {
            "rmax": self.rmax,
            "dmax": self.dmax,
            "warmup_steps": self.warmup_steps,
            "rmax_steps": self.rmax_steps,
            "dmax_steps": self.dmax_steps,
            "update_every": self.update_every,
            "verbose": self.verbose,
        }
