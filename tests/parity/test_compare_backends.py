"""Compares the outputs the three backend runs saved, pairwise.

Fails on any mismatch beyond `tests.tolerances.CROSS_BACKEND` and prints the
worst case of the whole comparison either way.
"""

import itertools

import numpy as np
import pytest

from tests.cases import CASES
from tests.parity_io import BACKENDS
from tests.parity_io import case_files
from tests.parity_io import load_outputs
from tests.tolerances import CROSS_BACKEND
from tests.tolerances import GRADIENT

_worst = {"excess": -np.inf}


def _tolerance(quantity):
    return GRADIENT if quantity.startswith("d_") else CROSS_BACKEND


@pytest.mark.parametrize("pair", list(itertools.combinations(BACKENDS, 2)), ids="-vs-".join)
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_backends_agree(case, pair):
    for backend in pair:
        assert case_files(backend, case.name)[0].exists(), f"no outputs from the {backend} run for {case.name}"
    a, b = (load_outputs(backend, case.name) for backend in pair)
    assert set(a) == set(b), f"{pair}: different quantities saved"
    np.testing.assert_array_equal(a["input"], b["input"])
    for quantity in sorted(set(a) - {"input"}):
        tol = _tolerance(quantity)
        diff = np.abs(a[quantity].astype("float64") - b[quantity].astype("float64"))
        allowed = tol["atol"] + tol["rtol"] * np.abs(b[quantity].astype("float64"))
        excess = float(np.max(diff / allowed))
        if excess > _worst["excess"]:
            _worst.update(excess=excess, case=case.name, pair=pair, quantity=quantity, diff=float(diff.max()))
        np.testing.assert_allclose(a[quantity], b[quantity], err_msg=f"{case.name} {quantity} {pair}", **tol)


def test_report_worst_case():
    """Runs last (file order) and prints the largest difference found."""
    assert np.isfinite(_worst["excess"]), "no comparison ran"
    print(
        f"\nworst cross-backend difference: {_worst['diff']:.3g} in {_worst['case']} / {_worst['quantity']} "
        f"({' vs '.join(_worst['pair'])}), {_worst['excess']:.2f} of the tolerance"
    )
