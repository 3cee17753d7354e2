"""`Case`: one registry entry of the conformance suite (see `tests/cases.py`)."""

import dataclasses
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Fresh:
    """A constructor argument made anew for each layer a case builds (a wrapper's inner layer): `cls(**kwargs)`."""

    cls: type
    kwargs: dict

    def __call__(self):
        return self.cls(**self.kwargs)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    layer: type
    kwargs: dict
    input_shape: tuple
    oracle: Callable
    channel_kwarg: str = "axis"
    bad_arguments: tuple = ()
    normalized: bool = True
    batch_independent: bool = False

    def build(self, **overrides):
        arguments = {**self.kwargs, **overrides}
        return self.layer(**{k: v() if isinstance(v, Fresh) else v for k, v in arguments.items()})

    def channels_first_kwargs(self):
        """Constructor overrides that make the layer read channels-first inputs."""
        return {self.channel_kwarg: _CHANNEL_KWARGS[self.channel_kwarg][0]}

    def bad_channel_kwargs(self):
        """Overrides naming an invalid channel axis or format, and the regex of the error."""
        _, bad, message = _CHANNEL_KWARGS[self.channel_kwarg]
        return {self.channel_kwarg: bad(len(self.input_shape))}, message

    def __repr__(self):  # pytest ids
        return self.name


# channel_kwarg -> (channels-first value, invalid value for an input of the given rank, error regex)
_CHANNEL_KWARGS = {
    "axis": (1, lambda rank: rank + 2, r"axis"),
    "data_format": ("channels_first", lambda rank: "channels_middle", r"data_format"),
}
