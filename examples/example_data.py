"""The mock data of the examples' `--smoke` mode: `tfds.testing.mock_data`, quiet, and what it really yields.

Shared by the example scripts, which import it from their own folder. Two things about the mock that the scripts
must not trip over:

* it ignores split slices: `split="train[:32]"` yields every mock example (`num_examples` of them), so a script
  takes what it needs (`dataset.take(n)`) and counts steps on the arrays that arrive;
* tfds and tf.data log, while the mock runs, that the (non-existent) mock data folder has no dataset_info.json and
  that some of their own internals are deprecated. Harmless, but a user reads them as errors: they are muted here,
  for the duration of the mock only; real runs keep every message.
"""

import contextlib
import logging
import math
import warnings

import tensorflow_datasets as tfds

_NOISY_LOGGERS = ("absl", "tensorflow")  # tfds logs through absl; tf.data's deprecation notices through "tensorflow"


@contextlib.contextmanager
def mock_data(num_examples):
    """`tfds.testing.mock_data` (random examples from each dataset's feature spec), its log noise muted.

    Args:
        num_examples: examples in every split (slices are ignored by the mock).
    """
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            with tfds.testing.mock_data(num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_CODE):
                yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def steps_per_epoch(wanted, num_examples, batch_size):
    """`wanted` steps, or fewer if the data holds fewer batches (Keras warns "Your input ran out of data")."""
    return min(wanted, math.ceil(num_examples / batch_size))
