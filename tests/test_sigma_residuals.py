"""Normal noise with estimated sigmas as a least-squares problem ("sigma residuals",
FitProblem.sigma_residuals and kinetics.fitting.local.sigma_residual_fit): the sum of squares is
2 nll up to a constant, the Jacobian is exact, and fits on it reach L-BFGS-B's optimum."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import DECAY_MODEL

K_TRUE, SIGMA_A_TRUE, SIGMA_B_TRUE = 0.5, 0.05, 2.0


def _write_case(tmp_path, observables, parameters="", extra_free="", n_times=8, seed=1):
    """Decay data: A log10-normal (sigma 0.05 on log10), B normal (sigma 2), at n_times times."""
    (tmp_path / "model.toml").write_text(DECAY_MODEL)
    rng = np.random.default_rng(seed)
    times = np.linspace(0.25, 6.0, n_times)
    a = 100 * np.exp(-K_TRUE * times)
    rows = [(t, "A", v * 10 ** (SIGMA_A_TRUE * rng.standard_normal())) for t, v in zip(times, a)]
    rows += [(t, "B", 100 - v + SIGMA_B_TRUE * rng.standard_normal()) for t, v in zip(times, a)]
    (tmp_path / "data.csv").write_text("time,observable,value\n" + "".join(f"{float(t)!r},{o},{float(v)!r}\n" for t, o, v in rows))
    (tmp_path / "fit.toml").write_text(f"""\
model = "model.toml"
data = "data.csv"
[fit]
free = ["k"{extra_free}]
[parameters]
{parameters}
[observables]
{observables}
""")
    return tmp_path / "fit.toml"


TWO_SIGMAS = 'A = { noise = "constant", transformation = "log10" }\nB = { noise = "constant" }\n'
#: B's sigma a formula of two parameters, one of them a rate of the model
FORMULA = ('A = { noise = "constant", transformation = "log10" }\n'
           'B = { sigma = "s_B * sqrt(1 + k) + 0.5 * s_C" }\n')
FORMULA_PARAMETERS = ("s_B = { value = 1.0, min = 1e-3, max = 100 }\n"
                      "s_C = { value = 0.3, min = 1e-2, max = 10 }\n")


def _problem(tmp_path, observables=TWO_SIGMAS, parameters="", extra_free="", **kw):
    from kinetics.fitting.problem import load_fit_spec
    return load_fit_spec(_write_case(tmp_path, observables, parameters, extra_free, **kw))


def _random_points(problem, n, seed=0):
    lo, hi = problem.internal_bounds()
    rng = np.random.default_rng(seed)
    centre = problem.start()
    return [np.clip(centre + rng.uniform(-1, 1, len(centre)), lo, hi) for _ in range(n)]


@pytest.mark.parametrize("case", ["two sigmas", "formula", "gaussian priors", "one sigma fixed"])
def test_sum_of_squares_is_twice_the_negative_loglik(tmp_path, case):
    observables, parameters, extra = TWO_SIGMAS, "", ""
    if case == "one sigma fixed":    # B's rows: e_i / 1.5 only, their log 1.5 in the offset
        observables = 'A = { noise = "constant", transformation = "log10" }\nB = { sigma = "1.5" }\n'
    if case == "formula":
        observables, parameters, extra = FORMULA, FORMULA_PARAMETERS, ', "s_B", "s_C"'
    if case == "gaussian priors":
        parameters = ('k = { value = 0.5, min = 1e-3, max = 10, prior = "normal(0.4, 0.2)" }\n'
                      'sigma_B = { value = 1.0, min = 1e-3, max = 100, prior = "parameterScaleNormal(0.2, 0.5)" }\n'
                      'sigma_A = { value = 0.1, min = 1e-4, max = 10, scale = "log", '
                      'prior = "parameterScaleNormal(-2.5, 1.0)" }\n')
    problem = _problem(tmp_path, observables, parameters, extra)
    assert problem.scalar_objective and problem.has_sigma_residuals and problem.profiled_scale is None
    if case == "gaussian priors":
        assert len(problem.priors) == 3
    if case == "one sigma fixed":
        assert len(problem.sigma_residual_rows) == problem.n_data // 2
    for x in _random_points(problem, 5):
        r, _ = problem.sigma_residuals(x)
        nll, _ = problem.negative_loglik(x)
        assert float(r @ r) + problem.sigma_residual_offset == pytest.approx(2 * nll, rel=1e-12, abs=1e-10)
        # every radicand is at least 1 inside the bounds (C_i = 1 - 2 log sigma_lo,i)
        n, m = problem.n_data, len(problem.sigma_residual_rows)
        assert np.all(r[n:n + m] >= 1.0)


@pytest.mark.parametrize("case", ["two sigmas", "formula"])
def test_jacobian_matches_central_differences(tmp_path, case):
    observables, parameters, extra = (FORMULA, FORMULA_PARAMETERS, ', "s_B", "s_C"') if case == "formula" \
        else (TWO_SIGMAS, "", "")
    problem = _problem(tmp_path, observables, parameters, extra)
    h = 1e-6
    for x in _random_points(problem, 3, seed=1):
        _, J = problem.sigma_residuals(x, jacobian=True)
        fd = np.empty_like(J)
        for k in range(len(x)):
            step = np.zeros(len(x))
            step[k] = h
            fd[:, k] = (problem.sigma_residuals(x + step)[0] - problem.sigma_residuals(x - step)[0]) / (2 * h)
        np.testing.assert_allclose(J, fd, rtol=1e-6, atol=1e-7)
        # and J^T r is the gradient of nll
        r, _ = problem.sigma_residuals(x)
        assert J.T @ r == pytest.approx(problem.negative_loglik(x, gradient=True)[1], rel=1e-9, abs=1e-9)


def test_two_estimated_sigmas_reach_the_lbfgsb_optimum_with_fewer_evaluations(tmp_path):
    from kinetics.fitting.optimize import fit
    problem = _problem(tmp_path, n_times=12)
    assert problem.free == ["k", "sigma_A", "sigma_B"]
    residuals = fit(problem, multistart=4, seed=3, profiles=False, progress=False, executor=None)
    lbfgsb = fit(problem, multistart=4, seed=3, profiles=False, progress=False, executor=None, engine="lmfit")
    assert residuals.method == "least_squares (sigma residuals)" and lbfgsb.method == "L-BFGS-B"
    assert -residuals.loglik == pytest.approx(-lbfgsb.loglik, abs=1e-6)
    assert residuals.nfev < lbfgsb.nfev
    # the rss convention of scalar objectives: 2 nll
    assert residuals.loglik == pytest.approx(-problem.negative_loglik(residuals.x)[0], rel=1e-12)
    for name in problem.free:
        assert residuals.best_values[name] == pytest.approx(lbfgsb.best_values[name], rel=1e-3)
    # at the joint optimum each sigma is the root mean square of its rows' residuals
    e, _ = problem.scale_residuals(residuals.x)
    observable = np.concatenate([plan["rows"]["observable"].to_numpy() for plan in problem.plans])
    for name in ("A", "B"):
        assert residuals.best_values[f"sigma_{name}"] == pytest.approx(
            math.sqrt(np.mean(e[observable == name] ** 2)), rel=1e-6)
    assert "compiled trust-region steps" in residuals.fit_report()


def test_recovers_the_rate_and_both_sigmas(tmp_path):
    from kinetics.fitting.optimize import fit
    problem = _problem(tmp_path, n_times=60, seed=5)
    result = fit(problem, multistart=3, seed=0, profiles=False, progress=False, executor=None)
    assert result.method == "least_squares (sigma residuals)"
    # 60 points per observable: sigma has a standard error of about 1 / sqrt(120) = 9 %
    assert result.best_values["k"] == pytest.approx(K_TRUE, rel=0.02)
    assert result.best_values["sigma_A"] == pytest.approx(SIGMA_A_TRUE, rel=0.3)
    assert result.best_values["sigma_B"] == pytest.approx(SIGMA_B_TRUE, rel=0.3)


def test_curvature_rows_change_the_steps_not_the_optimum(tmp_path):
    from kinetics.fitting.local import sigma_residual_fit
    problem = _problem(tmp_path, n_times=12)
    x0 = problem.start() + np.array([0.5, 1.0, -1.0])
    problem.nfev = 0
    x1, rss1, _ = sigma_residual_fit(problem, x0)
    with_rows = problem.nfev
    problem.nfev = 0
    x2, rss2, _ = sigma_residual_fit(problem, x0, curvature=False)
    assert rss1 == pytest.approx(rss2, abs=2e-6)
    np.testing.assert_allclose(x1, x2, atol=1e-4)
    assert with_rows < problem.nfev


def test_profiles_on_the_sigma_residual_path(tmp_path):
    from kinetics.fitting.optimize import fit
    result = fit(_problem(tmp_path), multistart=2, profiles=False, progress=False, executor=None)
    assert result.method == "least_squares (sigma residuals)"
    result.compute_profiles(["k", "sigma_B"])
    for name in ("k", "sigma_B"):
        lower, upper = result.ci95[name]
        assert lower < result.best_values[name] < upper
        assert min(result.profiles[name]["delta"]) > -1e-6     # no profile point beats the optimum


@pytest.mark.parametrize("observables, parameters, why", [
    ('A = { noise = "constant", transformation = "log10" }\nB = { noise = "constant", distribution = "laplace" }\n',
     "", "Laplace noise"),
    (TWO_SIGMAS, 'k = { value = 0.5, min = 1e-3, max = 10, prior = "logNormal(-0.5, 0.3)" }', "a log-normal prior"),
    (TWO_SIGMAS, 'sigma_B = { value = 1.0, min = 0, max = 100, scale = "lin" }', "sigma may reach 0"),
    ('A = { noise = "constant", transformation = "log10" }\nB = { sigma = "s_B - 1" }\n',
     "s_B = { value = 3.0, min = 1e-3, max = 100 }", "the formula's interval reaches below 0"),
])
def test_falls_back_to_lbfgsb_where_no_exact_square_form_is_known(tmp_path, observables, parameters, why):
    from kinetics.fitting.optimize import fit
    extra = ', "s_B"' if "s_B" in observables else ""
    problem = _problem(tmp_path, observables, parameters, extra)
    assert problem.scalar_objective and not problem.has_sigma_residuals, why
    with pytest.raises(ValueError, match="no sigma-residual form"):
        problem.sigma_residuals(problem.start())
    result = fit(problem, multistart=1, profiles=False, progress=False, executor=None)
    assert result.method == "L-BFGS-B"
