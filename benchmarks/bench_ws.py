"""Thin entry point: the weight-standardized (and NormProp) convolutions against the Keras ones, on one shape.

    python benchmarks/bench_ws.py --backend torch [--shape 32,32,32,64] [--quick] [--output-dir DIR]

Runs `suite.py` with `--shapes` set to the given shape and `--layers` set to the catalog's convolution rows
(3x3 'same', 64 filters; Conv1D on (N*H, W, C), Conv3D on (N, 2, H/2, W, C); the dense rows need a rank-2
shape such as 256,1024). Target: each train step <= 1.05x the Keras layer's. Any other option is passed on to
`suite.py`; see benchmarks/README.md.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import suite  # noqa: E402

if __name__ == "__main__":
    sys.exit(suite.run_one_shape(__doc__.splitlines()[0], lambda row_family: row_family == "conv",
                                 reference_rows=False))
