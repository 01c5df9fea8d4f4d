"""Posterior-predictive ensembles of a fit (FitResult.predict_ensemble, kinetics predict):
parameter bands against the delta method, noise realisations against the noise model,
conditions with overrides, sources, and the CLI."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from kinetics.cli import main
from kinetics.errors import FitError
from kinetics.fitting.optimize import fit
from kinetics.fitting.problem import load_fit_spec

from fitting_helpers import write_clearance_case


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    folder = write_clearance_case(tmp_path_factory.mktemp("predict") / "case")
    result = fit(load_fit_spec(folder), multistart=1, executor=None, progress=False, profiles=False)
    result.save(folder / "results")
    return folder, result


TIMES = np.array([0.5, 1.0, 2.0, 4.0])


def test_parameter_band_matches_the_delta_method(fitted):
    """Without noise, the 95 % band of log(conc) from covariance draws is +-1.96 sd of the
    delta method (gradient of log conc along the internal parameters, through the covariance)."""
    _, result = fitted
    ensemble = result.predict_ensemble(TIMES, 4000, condition="knockdown", noise=False, seed=1)
    q = ensemble.quantiles([0.025, 0.5, 0.975], ["conc"])
    lo, med, hi = (q[q["quantile"] == v]["value"].to_numpy() for v in (0.025, 0.5, 0.975))
    p = result.problem
    base = np.log(result.predict(TIMES, "knockdown")["conc"])
    grad = np.empty((len(TIMES), p.n_free))
    for k in range(p.n_free):
        x = result.x.copy()
        h = 1e-6
        x[k] += h
        grad[:, k] = (np.log(p.curves(p.phi(x), TIMES, "knockdown")["conc"]) - base) / h
    sd = np.sqrt(np.einsum("tk,kl,tl->t", grad, result.covariance_internal, grad))
    np.testing.assert_allclose(np.log(med), base, atol=0.1 * sd.max())
    np.testing.assert_allclose((np.log(hi) - np.log(lo)) / 2, 1.96 * sd, rtol=0.1)


def test_noise_realisations_follow_the_noise_model(fitted):
    """Same seed, same parameter draws: noisy minus noise-free values are sigma_rel * |f| * z
    with z standard normal (proportional noise)."""
    _, result = fitted
    clean = result.predict_ensemble(TIMES, 2000, noise=False, seed=3)
    noisy = result.predict_ensemble(TIMES, 2000, noise=True, seed=3)
    np.testing.assert_array_equal(clean.parameters.to_numpy(), noisy.parameters.to_numpy())
    z = (noisy["conc"] - clean["conc"]) / (result.noise_params["sigma_rel"] * np.abs(clean["conc"]))
    assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05
    np.testing.assert_array_equal(noisy["P"], clean["P"])      # P is not measured: no noise


def test_sources(fitted):
    _, result = fitted
    with pytest.raises(FitError, match="no MCMC samples"):
        result.predict_ensemble(TIMES, 10, source="mcmc")
    with pytest.raises(FitError, match="source"):
        result.predict_ensemble(TIMES, 10, source="profile")
    with pytest.raises(FitError, match="condition"):
        result.predict_ensemble(TIMES, 10, condition="nope")


def test_mcmc_source_draws_the_samples(fitted):
    _, result = fitted
    saved = result.mcmc
    try:
        samples = np.array([[0.5, 2.0, 0.5], [0.9, 2.5, 0.4]])
        result.mcmc = {"samples": samples, "names": list(result.problem.free)}
        ensemble = result.predict_ensemble(TIMES, 50, noise=False)
        drawn = ensemble.parameters[["k_cl", "V"]].to_numpy()
        assert {tuple(row) for row in drawn} <= {tuple(row) for row in samples[:, :2]}
    finally:
        result.mcmc = saved


def test_cli_predict_writes_bands_and_plot(fitted, tmp_path, capsys):
    folder, result = fitted
    out, plot = tmp_path / "bands.csv", tmp_path / "bands.png"
    assert main(["predict", "--fit", str(folder / "results"), "--samples", "300", "--no-noise", "--times", "0.5,1,2",
                 "--out", str(out), "--plot", str(plot)]) == 0
    bands = pd.read_csv(out)
    assert list(bands.columns) == ["condition", "name", "time", "lower", "median", "upper"]
    assert set(bands["condition"]) == {"control", "knockdown"}
    assert (bands["lower"] < bands["median"]).all() and (bands["median"] < bands["upper"]).all()
    control = bands[bands["condition"] == "control"]
    np.testing.assert_allclose(control["median"], result.predict([0.5, 1, 2], "control")["conc"], rtol=0.05)
    assert plot.stat().st_size > 1000


def test_cli_predict_without_a_case_says_how(fitted, tmp_path, capsys):
    folder, _ = fitted
    import shutil
    lone = tmp_path / "lone"
    shutil.copytree(folder / "results", lone)
    assert main(["predict", "--fit", str(lone), "--samples", "10"]) != 0
    assert "--case" in capsys.readouterr().err


def test_report_mcmc_band_equals_the_loop_over_draws(fitted):
    """The fit plot's MCMC band (now one simulate_many call) equals percentiles over draws
    simulated one by one, as the report computed it before."""
    from kinetics.report.plots import _band
    _, result = fitted
    p = result.problem
    saved = result.mcmc
    rng = np.random.default_rng(5)
    try:
        samples = p.to_natural(result.x + 0.02 * rng.standard_normal((300, p.n_free)))
        result.mcmc = {"samples": samples, "names": list(p.free)}
        grid = np.linspace(0, 6, 13)
        band = _band(result, grid, "knockdown", ["conc"])
        draws = samples[np.random.default_rng(0).integers(0, len(samples), 100)]
        curves = [p.curves(p.phi(x), grid, "knockdown")["conc"] for x in p.to_internal(draws)]
        np.testing.assert_allclose(band["conc"], np.percentile(np.array(curves), [2.5, 97.5], axis=0), rtol=1e-12)
    finally:
        result.mcmc = saved
