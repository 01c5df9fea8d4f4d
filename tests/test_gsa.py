"""Global sensitivity (kinetics.analysis.gsa): Sobol' and Morris indices against analytic
values for outputs of a small model whose value at t = 1 is a known function of two inflows."""

from __future__ import annotations

import numpy as np
import pytest

from kinetics import KineticsError, Model

pytest.importorskip("SALib", reason="SALib is not installed (the optional extra kinetics[gsa])")

from kinetics.analysis import gsa  # noqa: E402


def inflow_model():
    """X1(t) = s1 t and X2(t) = s2 t (constant inflows from 0): at t = 1, ``sum`` = 2 s1 + s2
    (additive) and ``product`` = s1 s2 (pure interaction on top of main effects)."""
    m = Model("two_inflows")
    m.add_compartment("X1", 0.0)
    m.add_compartment("X2", 0.0)
    m.add_parameter("s1", 0.5, min=0, max=10)
    m.add_parameter("s2", 0.5, min=0, max=10)
    m.add_flow("in1", "s1", target="X1")
    m.add_flow("in2", "s2", target="X2")
    m.add_observable("sum", "2 * X1 + X2")
    m.add_observable("product", "X1 * s2")
    return m


RANGES = {"s1": (0.0, 1.0), "s2": (0.0, 1.0)}


def test_sobol_indices_of_an_additive_output():
    """y = 2 s1 + s2, s uniform on (0, 1): S1 = ST = 4/5 and 1/5."""
    table = gsa.sobol(inflow_model(), "sum@1", RANGES, n=1024, seed=1, log=False)
    np.testing.assert_allclose(table["S1"], [0.8, 0.2], atol=0.03)
    np.testing.assert_allclose(table["ST"], [0.8, 0.2], atol=0.03)
    assert table.attrs["n_simulations"] == 1024 * 4


def test_sobol_indices_of_a_product():
    """y = s1 s2: V = 7/144, V_i = 3/144, so S1 = 3/7 and ST = 4/7 for each."""
    table = gsa.sobol(inflow_model(), "product@1", RANGES, n=2048, seed=2, log=False)
    np.testing.assert_allclose(table["S1"], [3 / 7, 3 / 7], atol=0.04)
    np.testing.assert_allclose(table["ST"], [4 / 7, 4 / 7], atol=0.04)


def test_morris_effects_of_a_linear_output_are_its_slopes():
    table = gsa.morris(inflow_model(), "sum@1", RANGES, n=20, seed=3, log=False)
    np.testing.assert_allclose(table["mu_star"], [2.0, 1.0], rtol=1e-9)
    np.testing.assert_allclose(table["sigma"], [0.0, 0.0], atol=1e-9)


def test_callable_and_pk_outputs_and_plot():
    """AUC over [0, 1] of X1 = s1 t is s1 / 2: a callable giving the same numbers gives the same indices."""
    times = np.linspace(0, 1, 11)
    by_name = gsa.sobol(inflow_model(), "auc:X1", RANGES, n=256, seed=4, log=False, times=times)
    by_callable = gsa.sobol(inflow_model(), lambda e: np.trapezoid(e["X1"], e.times, axis=1), RANGES, n=256, seed=4,
                            log=False, times=times)
    np.testing.assert_allclose(by_name.to_numpy(), by_callable.to_numpy())
    np.testing.assert_allclose(by_name["ST"], [1.0, 0.0], atol=0.02)
    import matplotlib.pyplot as plt
    ax = by_name.plot()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["s1", "s2"]
    plt.close(ax.figure)


@pytest.mark.parametrize("output, ranges, match", [
    ("sum@2", RANGES, "not among times"),
    ("total@1", RANGES, "total.*not a compartment"),
    ("auc:X1", RANGES, "needs times"),
    ("sum@1", {"s3": (0, 1)}, "s3"),
    ("sum@1", {"s1": (1, 0)}, "low < high"),
])
def test_bad_specs_are_explained(output, ranges, match):
    with pytest.raises(KineticsError, match=match):
        gsa.sobol(inflow_model(), output, ranges, n=8, log=False, times=[0, 1] if output == "sum@2" else None)
