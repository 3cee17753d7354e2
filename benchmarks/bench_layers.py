"""Thin entry point: the suite's normalization layers (every family but the convolutions) on one shape.

    python benchmarks/bench_layers.py --backend torch [--shape 32,32,32,64] [--quick] [--output-dir DIR]

Runs `suite.py` with `--shapes` set to the given shape and `--layers` set to every catalog row that is not a
convolution, each also with the fast paths off (`--reference-rows`). Any other option is passed on to
`suite.py` (e.g. `--repeats`, `--threads`, `--clock`, `--no-memory`); see benchmarks/README.md.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import catalog  # noqa: E402
import suite  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", required=True, choices=["tensorflow", "jax", "torch"])
    p.add_argument("--shape", default="32,32,32,64", help="NHWC input shape (default 32,32,32,64)")
    p.add_argument("--quick", action="store_true", help="5 rounds")
    args, rest = p.parse_known_args(argv)
    layers = ",".join(row.name for row in catalog.LAYERS if row.family != "conv")
    return suite.main(["--backend", args.backend, "--shapes", args.shape.replace(",", "x"), "--layers", layers,
                       "--reference-rows"] + (["--repeats", "5"] if args.quick else []) + rest)


if __name__ == "__main__":
    sys.exit(main())
