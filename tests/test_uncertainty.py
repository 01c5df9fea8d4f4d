"""Prediction uncertainty: delta method against the hand-derived variance, sampling against
the delta method, and the steady-state / PK wrappers."""

import math

import numpy as np
import pytest

from kinetics import KineticsError, Model
from kinetics.analysis.uncertainty import FitSummary, predict_with_uncertainty, steady_state_uncertainty


def production_model():
    m = Model("production")
    m.add_compartment("medium", 0.0)
    m.add_parameter("release", 200.0, min=1, max=1e4)
    m.add_parameter("loss", 0.5, min=1e-3, max=10)
    m.add_flow("secretion", "release", target="medium")
    m.add_flow("decay", "loss * medium", source="medium")
    return m


def summary(sd_release=10.0, sd_loss=0.02, rho=0.3, log_scale=(True, True)):
    cov = np.array([[sd_release ** 2, rho * sd_release * sd_loss], [rho * sd_release * sd_loss, sd_loss ** 2]])
    return FitSummary("production", {"release": 200.0, "loss": 0.5}, ["release", "loss"], cov, log_scale)


def test_delta_method_matches_hand_derived_variance():
    s = summary()
    table = steady_state_uncertainty(production_model(), s, n_samples=50).set_index("quantity")
    # x = release / loss: grad = (1/loss, -release/loss^2)
    g = np.array([1 / 0.5, -200 / 0.25])
    expected_sd = math.sqrt(g @ s.covariance @ g)
    assert table.loc["medium", "estimate"] == pytest.approx(400.0)
    assert table.loc["medium", "stderr"] == pytest.approx(expected_sd, rel=1e-5)
    # the log-scale interval is exp(+-1.96 sd/x) around the estimate
    assert table.loc["medium", "delta_lo"] == pytest.approx(400 * math.exp(-1.96 * expected_sd / 400), rel=1e-5)


def test_sampling_agrees_with_delta_method_for_small_uncertainty():
    s = summary(sd_release=2.0, sd_loss=0.005)
    table = steady_state_uncertainty(production_model(), s, n_samples=2000, seed=3).set_index("quantity")
    row = table.loc["medium"]
    assert row["sample_lo"] == pytest.approx(row["delta_lo"], rel=0.01)
    assert row["sample_hi"] == pytest.approx(row["delta_hi"], rel=0.01)


def test_log_scale_draws_stay_positive():
    s = summary(sd_release=150.0, sd_loss=0.4)
    draws = s.draws(500, seed=1)
    assert min(d["loss"] for d in draws) > 0 and min(d["release"] for d in draws) > 0


def test_generic_quantities_and_failed_draws_are_counted():
    s = summary(sd_release=150.0, sd_loss=0.4, log_scale=(False, False))

    def quantities(values):
        if values["loss"] <= 0:
            raise ValueError("no steady state")
        return {"ratio": values["release"] / values["loss"]}

    table = predict_with_uncertainty(quantities, s, n_samples=400, seed=0)
    assert table.attrs["failed_samples"] > 0
    assert table.loc[0, "n_samples"] + table.attrs["failed_samples"] == 400


def test_model_mismatch_is_refused():
    s = FitSummary("other_model", {"release": 1.0, "loss": 1.0}, ["loss"], np.eye(1), [True])
    with pytest.raises(KineticsError, match="not 'production'"):
        steady_state_uncertainty(production_model(), s)


def test_mcmc_samples_and_corner_plot(tmp_path):
    pytest.importorskip("emcee")
    import pandas as pd

    from kinetics import simulate
    from kinetics.fitting.optimize import fit
    from kinetics.fitting.problem import Condition, FitProblem
    from kinetics.analysis.uncertainty import load_fit_summary

    m = production_model()
    times = np.linspace(0.5, 12, 12)
    truth = simulate(m, times)["medium"]
    rng = np.random.default_rng(0)
    data = pd.DataFrame({"time": times, "observable": "medium", "value": truth * (1 + 0.05 * rng.standard_normal(12))})
    result = fit(FitProblem(m, data, ["release", "loss"], noise="proportional"), profiles=False, progress=False,
                 mcmc={"steps": 400, "walkers": 16, "burn": 100})
    samples = result.mcmc["samples"]
    assert samples.shape[1] == 2 and len(samples) > 1000
    medians = np.median(samples, axis=0)
    np.testing.assert_allclose(medians, result.values, rtol=0.1)
    assert "[[MCMC]]" in result.fit_report()
    written = result.save(tmp_path)
    assert (tmp_path / "corner.png").exists() and tmp_path / "corner.png" in written
    # prediction intervals then draw from the posterior samples
    assert load_fit_summary(result).samples is samples
