"""Thin entry point: the suite's normalization layers (every family but the convolutions) on one shape.

    python benchmarks/bench_layers.py --backend torch [--shape 32,32,32,64] [--quick] [--output-dir DIR]

Runs `suite.py` with `--shapes` set to the given shape and `--layers` set to every catalog row that is not a
convolution, each also with the fast paths off (`--reference-rows`). Any other option is passed on to
`suite.py` (e.g. `--repeats`, `--threads`, `--clock`, `--no-memory`); see benchmarks/README.md.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import suite  # noqa: E402

if __name__ == "__main__":
    sys.exit(suite.run_one_shape(__doc__.splitlines()[0], lambda row_family: row_family != "conv",
                                 reference_rows=True))
