"""Per-observable likelihoods (transformations, normal and Laplace noise, estimated noise
parameters, priors, parameter scales, pre-equilibration) and PEtab v1 import, evaluation and
export, checked against hand-computed likelihoods, finite differences, the PEtab test suite
and the benchmark problems' reference values."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import DECAY_MODEL
from kinetics.errors import DataError

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "conformance"
if not SHARED.is_dir():
    SHARED = Path("/work/shared/conformance")
SUITE = SHARED / "petab-suite-v1"
BENCHMARK = SHARED / "petab-benchmark"

TIMES = np.array([0.5, 1.0, 2.0, 3.0, 4.0, 6.0])


def _exact(k, t):
    a = 100 * np.exp(-k * t)
    return a, 100 - a


def _write_case(tmp_path, observables: str, extra_fit="", parameters="", rows=None):
    (tmp_path / "model.toml").write_text(DECAY_MODEL)
    rng = np.random.default_rng(1)
    if rows is None:
        a, b = _exact(0.5, TIMES)
        rows = [(t, "A", v * 10 ** (0.05 * rng.standard_normal())) for t, v in zip(TIMES, a)]
        rows += [(t, "B", v + rng.laplace(0, 1.0)) for t, v in zip(TIMES, b)]
    (tmp_path / "data.csv").write_text("time,observable,value\n" + "".join(f"{float(t)!r},{o},{float(v)!r}\n" for t, o, v in rows))
    (tmp_path / "fit.toml").write_text(f"""\
model = "model.toml"
data = "data.csv"
[fit]
free = ["k"{extra_fit}]
[parameters]
{parameters}
[observables]
{observables}
""")
    return tmp_path / "fit.toml", rows


def _fd_gradient(problem, x, h=1e-6):
    out = np.zeros(len(x))
    for k in range(len(x)):
        e = np.zeros(len(x))
        e[k] = h
        out[k] = (problem.negative_loglik(x + e)[0] - problem.negative_loglik(x - e)[0]) / (2 * h)
    return out


# ---------------------------------------------------------------- per-observable likelihood
def test_per_observable_likelihood_matches_hand_computation(tmp_path):
    from kinetics.fitting.problem import load_fit_spec
    spec, rows = _write_case(tmp_path, """\
A = { noise = "constant", transformation = "log10" }
B = { sigma = "2 * s_B", distribution = "laplace" }
""", extra_fit=', "s_B"', parameters="s_B = { value = 0.7, min = 1e-3, max = 100 }")
    problem = load_fit_spec(spec)
    assert problem.noise == "per-observable" and problem.scalar_objective
    assert problem.free == ["k", "s_B", "sigma_A"]
    k, s_b, sigma_a = 0.8, 0.7, 0.2
    x = problem.to_internal([k, s_b, sigma_a])
    nll = 0.0
    for t, obs, y in rows:      # PEtab's densities, written out independently
        a, b = _exact(k, t)
        if obs == "A":
            z = (math.log10(y) - math.log10(a)) / sigma_a
            nll += 0.5 * z * z + math.log(sigma_a) + 0.5 * math.log(2 * math.pi) + math.log(y * math.log(10))
        else:
            nll += abs(y - b) / (2 * s_b) + math.log(2 * 2 * s_b)
    value, grad = problem.negative_loglik(x, gradient=True)
    assert value == pytest.approx(nll, rel=1e-9)
    np.testing.assert_allclose(grad, _fd_gradient(problem, x), rtol=1e-5, atol=1e-6)


def test_estimated_sigma_fit_reaches_the_likelihood_optimum(tmp_path):
    from kinetics.fitting.optimize import fit
    from kinetics.fitting.problem import load_fit_spec
    spec, _ = _write_case(tmp_path, 'A = { noise = "constant", transformation = "log10" }\n'
                                    'B = { noise = "constant" }\n')
    problem = load_fit_spec(spec)
    result = fit(problem, multistart=3, profiles=False, progress=False, executor=None)
    assert result.method == "least_squares (sigma residuals)"      # tests/test_sigma_residuals.py
    report = result.fit_report()
    assert "(sigma residuals)  (compiled trust-region steps" in report and "(lmfit)" not in report
    assert result.best_values["k"] == pytest.approx(0.5, rel=0.05)
    # at the optimum of a smooth likelihood the gradient vanishes, and the noise estimates are
    # the root mean squares of the (transformed) residuals, in closed form
    _, grad = problem.negative_loglik(result.x, gradient=True)
    assert np.max(np.abs(grad)) < 1e-3
    e, _, sigma, _ = problem._likelihood_terms(result.x, False)
    for name in ("A", "B"):
        rows = np.concatenate([plan["rows"]["observable"].to_numpy() for plan in problem.plans]) == name
        assert result.best_values[f"sigma_{name}"] == pytest.approx(math.sqrt(np.mean(e[rows] ** 2)), rel=1e-3)
    assert result.loglik == pytest.approx(-problem.negative_loglik(result.x)[0], rel=1e-12)


def test_fixed_varying_and_proportional_sigmas_and_the_first_invalid_one(tmp_path):
    """Row sigmas of three kinds: proportional (sigma_rel_A |f|), an expression of a fixed
    parameter (2 s_B, evaluated once per problem) and of a free one: the likelihood against the
    densities written out, its gradient against finite differences; a sigma that is not
    positive is a SolverError naming it, the first in observable order."""
    from kinetics.errors import SolverError
    from kinetics.fitting.problem import load_fit_spec
    spec, rows = _write_case(tmp_path, 'A = { noise = "proportional" }\nB = { sigma = "2 * s_B" }\n',
                             parameters="s_B = { value = 0.7, min = -1, max = 100 }")
    problem = load_fit_spec(spec)
    assert problem.free == ["k", "sigma_rel_A"] and problem.scalar_objective
    k, rel = 0.8, 0.05
    x = problem.to_internal([k, rel])
    nll = 0.0
    for t, obs, y in rows:
        a, b = _exact(k, t)
        f, sigma = (a, rel * a) if obs == "A" else (b, 1.4)
        nll += 0.5 * ((y - f) / sigma) ** 2 + math.log(sigma) + 0.5 * math.log(2 * math.pi)
    value, grad = problem.negative_loglik(x, gradient=True)
    assert value == pytest.approx(nll, rel=1e-9)
    np.testing.assert_allclose(grad, _fd_gradient(problem, x), rtol=1e-5, atol=1e-6)

    spec, _ = _write_case(tmp_path, 'A = { sigma = "s_A" }\nB = { sigma = "s_B" }\n', extra_fit=', "s_A"',
                          parameters='s_A = { value = 1, min = -1, max = 10, scale = "lin" }\n'
                                     "s_B = { value = -0.5, min = -1, max = 100 }")
    problem = load_fit_spec(spec)
    assert problem.free == ["k", "s_A"]
    with pytest.raises(SolverError, match=r"noise sigma of .* is -0.5, not positive"):     # B's, fixed
        problem.negative_loglik(problem.to_internal([0.5, 0.3]))
    with pytest.raises(SolverError, match=r"noise sigma of .* is -0.25, not positive"):    # A's comes first
        problem.negative_loglik(problem.to_internal([0.5, -0.25]), gradient=True)


def test_noise_parameters_cost_no_sensitivity_directions(tmp_path):
    """Estimated noise parameters do not enter the model: it runs with the rates' directions only
    (each direction costs as much as the states), and the Jacobian is the full one, with zero
    columns for the noise parameters and the same values as with every direction."""
    from kinetics.fitting.problem import load_fit_spec
    spec, _ = _write_case(tmp_path, 'A = { noise = "constant", transformation = "log10" }\n'
                                    'B = { noise = "constant" }\n')
    problem = load_fit_spec(spec)
    assert problem.free == ["k", "sigma_A", "sigma_B"]
    directions = []
    for plan in problem.plans:
        evaluate_rows = plan["row_evaluator"]

        def spy(p, D, evaluate_rows=evaluate_rows):
            directions.append(D.shape[1])
            return evaluate_rows(p, D)
        plan["row_evaluator"] = spy
    x = problem.start() + np.array([0.1, -0.2, 0.3])
    f, J = problem.predict(x, jacobian=True)
    assert directions and set(directions) == {1}
    assert J.shape == (problem.n_data, 3) and not J[:, 1:].any()
    problem._live = None                      # every direction, as before
    f_all, J_all = problem.predict(x, jacobian=True)
    assert set(directions) == {1, 3}
    np.testing.assert_array_equal(f, f_all)
    np.testing.assert_allclose(J, J_all, rtol=1e-13, atol=0)


def test_one_noise_scale_for_every_row_is_profiled_exactly(tmp_path):
    """sigma shared by all rows: the rates are a least-squares problem and sigma is in closed
    form; the result is the joint optimum L-BFGS-B finds over (rates, sigma) together."""
    from kinetics.fitting.optimize import fit
    from kinetics.fitting.problem import load_fit_spec
    spec, rows = _write_case(tmp_path, 'A = { noise = "constant", transformation = "log10" }\n')
    lines = (tmp_path / "data.csv").read_text().splitlines()
    (tmp_path / "data.csv").write_text("\n".join(line for line in lines if ",B," not in line) + "\n")
    problem = load_fit_spec(spec)
    assert problem.profiled_scale == problem.free.index("sigma_A")
    profiled = fit(problem, multistart=3, profiles=False, progress=False, executor=None)
    joint = fit(problem, multistart=3, profiles=False, progress=False, executor=None, engine="lmfit")
    assert profiled.method.startswith("least_squares") and joint.method == "L-BFGS-B"
    assert profiled.loglik == pytest.approx(joint.loglik, rel=1e-8)
    assert profiled.best_values["k"] == pytest.approx(joint.best_values["k"], rel=1e-4)
    e, _ = problem.scale_residuals(profiled.x)
    assert profiled.best_values["sigma_A"] == pytest.approx(math.sqrt(np.mean(e ** 2)), rel=1e-10)
    assert problem.negative_loglik(profiled.x, gradient=True)[1] == pytest.approx([0, 0], abs=1e-4)


def test_fixed_sigma_is_least_squares_on_the_trust_region_path(tmp_path):
    from kinetics.fitting.optimize import fit
    from kinetics.fitting.problem import load_fit_spec
    spec, _ = _write_case(tmp_path, 'A = { sigma = 0.05, transformation = "log" }\nB = { sigma = "1.5" }\n')
    problem = load_fit_spec(spec)
    assert not problem.scalar_objective
    result = fit(problem, multistart=2, profiles=False, progress=False, executor=None)
    assert result.method == "least_squares"
    assert result.loglik == pytest.approx(-problem.negative_loglik(result.x)[0], rel=1e-10)
    assert result.chisqr == pytest.approx(problem.chi2(result.x), rel=1e-12)


def test_priors_and_scales(tmp_path):
    from kinetics.fitting.problem import load_fit_spec
    spec, _ = _write_case(tmp_path, 'A = { sigma = 0.05, transformation = "log10" }\nB = { sigma = 1 }\n',
                          parameters='k = { value = 0.5, min = 1e-3, max = 10, scale = "lin", '
                                     'prior = "logNormal(-0.5, 0.3)" }')
    problem = load_fit_spec(spec)
    assert problem.scalar_objective and not problem.log_mask[0]
    x = problem.to_internal([0.8])
    with_prior = problem.negative_loglik(x)[0]
    without = problem.negative_loglik(x, priors=False)[0]
    u = math.log(0.8)
    assert with_prior - without == pytest.approx(0.5 * ((u + 0.5) / 0.3) ** 2 + math.log(0.3 * math.sqrt(2 * math.pi)) + u)
    np.testing.assert_allclose(problem.negative_loglik(x, gradient=True)[1], _fd_gradient(problem, x), rtol=1e-5)


def test_per_observable_refusals_name_the_entry(tmp_path):
    from kinetics.fitting.problem import load_fit_spec
    spec, _ = _write_case(tmp_path, 'A = { transformation = "logit" }\n')
    with pytest.raises(DataError, match=r"\[observables.A\] transformation = 'logit'"):
        load_fit_spec(spec)
    spec, _ = _write_case(tmp_path, 'B = { transformation = "log" }\n', rows=[(1.0, "B", 0.0), (2.0, "B", 1.0)])
    with pytest.raises(DataError, match=r"\[observables.B\].*positive measurements.*row 2 is 0"):
        load_fit_spec(spec)


def test_fit_spec_preequilibration_starts_from_the_steady_state(tmp_path):
    from kinetics.errors import SolverError
    from kinetics.fitting.problem import load_fit_spec
    model = DECAY_MODEL.replace('[flows]', '[flows]\nsource = { to = "B", rate = "s" }').replace(
        'k = { value', 's = { value = 0, min = 0, max = 10 }\nk = { value')
    (tmp_path / "model.toml").write_text(model)
    rows = [(t, "B", 200 - 100 * math.exp(-0.5 * t) + 0.3 * (-1) ** i) for i, t in enumerate(TIMES)]
    (tmp_path / "data.csv").write_text("time,observable,value,condition\n"
                                       + "".join(f"{float(t)!r},{o},{float(v)!r},main\n" for t, o, v in rows))
    spec = """model = "model.toml"\ndata = "data.csv"\n[fit]\nfree = ["k"]\n
[observables.B]\nsigma = 0.5\n[conditions.pre]\n[conditions.main]\npreequilibration = "pre"\ninitial = { A = 100 }\n"""
    (tmp_path / "fit.toml").write_text(spec)
    problem = load_fit_spec(tmp_path / "fit.toml")
    k = 0.7                       # pre-equilibrated: A = 0, B = 100; then A = 100 again
    x = problem.to_internal([k])
    expected = sum(0.5 * ((y - (200 - 100 * math.exp(-k * t))) / 0.5) ** 2 + math.log(0.5)
                   + 0.5 * math.log(2 * math.pi) for t, _, y in rows)
    assert problem.negative_loglik(x)[0] == pytest.approx(expected, rel=1e-7)
    np.testing.assert_allclose(problem.likelihood_residuals(x, jacobian=True)[1][:, 0] * 0.5,
                               [-(100 * t * math.exp(-k * t)) * k * math.log(10) for t in TIMES], rtol=1e-6)
    # a source that never stops: no steady state, and the message says so
    (tmp_path / "fit.toml").write_text(spec.replace("[conditions.pre]", "[conditions.pre]\noverrides = { s = 1 }"))
    with pytest.raises(SolverError, match="pre-equilibration pre of condition main: no steady state"):
        load_fit_spec(tmp_path / "fit.toml").negative_loglik(x)


def test_preequilibration_of_a_model_with_triggered_events(tmp_path):
    """The pre-equilibrated state starts the triggers: B starts at 100 (the steady state), rises
    towards 200 and loses 50 when it crosses 150, at t* = ln 2 / k."""
    from kinetics.fitting.problem import load_fit_spec
    model = DECAY_MODEL + '\n[events]\nharvest = { trigger = "B > 150", assign = { B = "B - 50" } }\n'
    (tmp_path / "model.toml").write_text(model)

    def b(t, k):
        return 200 - 100 * math.exp(-k * t) - (50 if t > math.log(2) / k else 0)

    rows = [(t, "B", b(t, 0.5) + 0.3 * (-1) ** i) for i, t in enumerate(TIMES)]
    (tmp_path / "data.csv").write_text("time,observable,value,condition\n"
                                       + "".join(f"{float(t)!r},{o},{float(v)!r},main\n" for t, o, v in rows))
    (tmp_path / "fit.toml").write_text("""model = "model.toml"\ndata = "data.csv"\n[fit]\nfree = ["k"]\n
[observables.B]\nsigma = 0.5\n[conditions.pre]\n[conditions.main]\npreequilibration = "pre"\ninitial = { A = 100 }\n""")
    problem = load_fit_spec(tmp_path / "fit.toml")
    k = 0.7
    x = problem.to_internal([k])
    expected = sum(0.5 * ((y - b(t, k)) / 0.5) ** 2 + math.log(0.5) + 0.5 * math.log(2 * math.pi) for t, _, y in rows)
    value, gradient = problem.negative_loglik(x, gradient=True)
    assert value == pytest.approx(expected, rel=1e-8)
    np.testing.assert_allclose(gradient, _fd_gradient(problem, x, 1e-6), rtol=1e-5)


def test_profiles_of_an_estimated_sigma_fit(tmp_path):
    from kinetics.fitting.optimize import fit
    from kinetics.fitting.problem import load_fit_spec
    spec, _ = _write_case(tmp_path, 'A = { noise = "constant", transformation = "log10" }\n'
                                    'B = { noise = "constant", distribution = "laplace" }\n')
    result = fit(load_fit_spec(spec), multistart=2, profiles=False, progress=False, executor=None)
    result.compute_profiles(["k"])
    lower, upper = result.ci95["k"]
    assert lower < result.best_values["k"] < upper
    assert min(result.profiles["k"]["delta"]) > -1e-6     # no profile point beats the optimum


# ------------------------------------------------------------------------------ PEtab
def _petab_from_case(tmp_path):
    """A PEtab problem written by kinetics' exporter from a small fit spec."""
    from kinetics.fitting.problem import load_fit_spec
    from kinetics.io.petab import write_petab
    spec, _ = _write_case(tmp_path, 'A = { noise = "constant", transformation = "log10" }\n'
                                    'B = { sigma = "s_B", distribution = "laplace" }\n',
                          extra_fit=', "s_B"', parameters="s_B = { value = 0.7, min = 1e-3, max = 100 }")
    problem = load_fit_spec(spec)
    return problem, write_petab(problem, tmp_path / "petab")


def test_export_and_import_keep_the_likelihood_and_its_gradient(tmp_path):
    from kinetics.fitting.problem import load_petab
    from kinetics.io.petab import evaluate
    problem, path = _petab_from_case(tmp_path)
    imported = load_petab(path)
    x = problem.start()
    assert evaluate(imported)["llh"] == pytest.approx(-problem.negative_loglik(x)[0], rel=1e-10)
    assert evaluate(imported)["chi2"] == pytest.approx(problem.chi2(x), rel=1e-10)
    xi = imported.start()
    np.testing.assert_allclose(imported.negative_loglik(xi, gradient=True)[1], _fd_gradient(imported, xi),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("column, value, message", [
    ("time", "inf", r"measurement table row 2, column time: steady-state measurements"),
    ("noiseDistribution", "lognormal", r"observable table row 2 \(obs_A\), column noiseDistribution"),
])
def test_petab_refusals_name_table_row_and_column(tmp_path, column, value, message):
    import pandas as pd
    from kinetics.fitting.problem import load_petab
    _, path = _petab_from_case(tmp_path)
    table = "measurements.tsv" if column == "time" else "observables.tsv"
    frame = pd.read_csv(path.parent / table, sep="\t", dtype=str, keep_default_na=False)
    frame.loc[0, column] = value
    frame.to_csv(path.parent / table, sep="\t", index=False)
    with pytest.raises(DataError, match=message):
        load_petab(path)


def test_every_fit_case_exports_and_reimports_to_the_same_likelihood(tmp_path):
    import warnings
    from kinetics.errors import KineticsWarning
    from kinetics.fitting.problem import load_fit_spec, load_petab
    from kinetics.io.petab import evaluate, write_petab
    cases = sorted(p.parent for p in (REPO / "fits").rglob("fit.toml"))
    assert len(cases) >= 6
    for case in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", KineticsWarning)
            problem = load_fit_spec(case)
        r, _ = problem.likelihood_residuals(problem.start())
        expected = problem.objective_loglik(float(r @ r))
        path = write_petab(problem, tmp_path / case.name)
        assert evaluate(load_petab(path))["llh"] == pytest.approx(expected, rel=1e-10), case


def _exported_parameters(path):
    import pandas as pd
    return pd.read_csv(path.parent / "parameters.tsv", sep="\t").set_index("parameterId")


@pytest.mark.parametrize("noise", ["constant", "proportional"])
def test_exported_noise_scale_bounds_in_closed_form(tmp_path, noise):
    """The profiled noise scale exports as noise_sigma: nominal its closed-form optimum at the
    exported point; upper bound 10 x the largest scale of a fit at least as good (constant: s0;
    proportional: s0 G0 / floor, G0 the geometric mean of |f|), at least 10 x the data scale;
    lower bound 1e-16 x the data scale (RMS of y for constant noise, 1 for relative noise)."""
    from kinetics.fitting.problem import load_fit_spec
    from kinetics.io.petab import write_petab
    (tmp_path / "model.toml").write_text(DECAY_MODEL)
    y = _exact(0.5, TIMES)[0] * (1 + 0.1 * np.array([1, -1, 0.5, -0.5, 2, -2]))
    (tmp_path / "data.csv").write_text("time,observable,value\n" + "".join(f"{float(t)!r},A,{float(v)!r}\n" for t, v in zip(TIMES, y)))
    (tmp_path / "fit.toml").write_text(f'model = "model.toml"\ndata = "data.csv"\n[fit]\nfree = ["k"]\nnoise = "{noise}"\n'
                                       '[parameters]\nk = { value = 3, min = 1e-3, max = 10 }\n')
    problem = load_fit_spec(tmp_path / "fit.toml")
    f = _exact(3.0, TIMES)[0]              # far from the data, as a case's start values are
    if noise == "constant":
        s0 = math.sqrt(np.mean((y - f) ** 2))
        data_scale = math.sqrt(np.mean(y ** 2))
        reach = s0
    else:
        s0 = math.sqrt(np.mean(((y - f) / f) ** 2))
        data_scale = 1.0
        reach = s0 * math.exp(np.mean(np.log(f))) / (1e-9 * np.max(y))
    row = _exported_parameters(write_petab(problem, tmp_path / "petab")).loc["noise_sigma"]
    assert row["nominalValue"] == pytest.approx(s0, rel=1e-9)
    assert row["lowerBound"] == pytest.approx(1e-16 * data_scale, rel=1e-12)
    assert row["upperBound"] == pytest.approx(10 * max(reach, data_scale), rel=1e-9)
    assert row["parameterScale"] == "log10" and row["estimate"] == 1
    # the optimum (k near 0.5) is a far better fit than the exported point: inside the bounds
    f = _exact(0.5, TIMES)[0]
    best = math.sqrt(np.mean(((y - f) / (1 if noise == "constant" else f)) ** 2))
    assert row["lowerBound"] < best < row["upperBound"]


def test_export_keeps_infinite_bounds_and_says_so(tmp_path):
    """An unbounded free parameter stays unbounded (the same problem); the warning says that
    tools drawing starts between the bounds need finite ones."""
    from kinetics.errors import KineticsWarning
    from kinetics.fitting.problem import load_fit_spec, load_petab
    from kinetics.io.petab import write_petab
    spec, _ = _write_case(tmp_path, 'A = { sigma = 2 }\n', parameters="k = { value = 0.5, min = -inf, max = inf }")
    problem = load_fit_spec(spec)
    with pytest.warns(KineticsWarning, match=r"k has infinite bounds.*give min and max"):
        path = write_petab(problem, tmp_path / "petab")
    row = _exported_parameters(path).loc["k"]
    assert (row["lowerBound"], row["upperBound"], row["parameterScale"]) == (-math.inf, math.inf, "lin")
    imported = load_petab(path)
    assert imported.fit_bounds[imported.fit_names.index("k")].tolist() == [-math.inf, math.inf]


def test_export_refuses_a_parameter_named_like_the_noise_scale(tmp_path):
    from kinetics.fitting.problem import load_fit_spec
    from kinetics.io.petab import PetabUnsupported, write_petab
    spec, _ = _write_case(tmp_path, "", extra_fit=', "noise_sigma"',
                          parameters="noise_sigma = { value = 1, min = 0.1, max = 10 }")
    spec.write_text(spec.read_text().replace("[fit]", '[fit]\nnoise = "constant"'))
    with pytest.raises(PetabUnsupported, match="already has a parameter of that name"):
        write_petab(load_fit_spec(spec), tmp_path / "petab")


def test_fit_cases_with_estimated_noise_reach_the_native_optimum_after_export(tmp_path):
    """Every fits/ case with estimated noise parameters, exported at its start values and
    re-imported, is the native optimization problem: the exported bounds contain the native
    optimum (the rates' own bounds, and noise_sigma's around the optimum's closed-form noise
    scale), the re-imported likelihood at that optimum is the native one, and fits of both from
    the same starts (the case's start values, then two Latin-hypercube points) reach the same
    best negative log-likelihood. (From the start values alone, plasma_clearance_1c's re-imported
    fit stops where the predictions collapse to ~1e-10 with noise_sigma ~1e6, nll 939.96, a local
    optimum of the native likelihood too, which the native fit avoids by its first stage with the
    measurements' weights.)"""
    import warnings
    from kinetics.errors import KineticsWarning
    from kinetics.fitting.optimize import fit
    from kinetics.fitting.problem import load_fit_spec, load_petab
    from kinetics.io.petab import write_petab
    checked = []
    for case in sorted(p.parent for p in (REPO / "fits").rglob("fit.toml")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", KineticsWarning)
            problem = load_fit_spec(case)
        path = write_petab(problem, tmp_path / case.name)
        table = _exported_parameters(path)
        estimated = table.index[table["estimate"] == 1]
        noise_parameters = [n for n in estimated if n not in problem.free or n.startswith("sigma")]
        if not noise_parameters:
            continue
        checked.append(case.name)
        native = fit(problem, multistart=3, seed=0, profiles=False, progress=False, executor=None)
        optimum = dict(native.best_values)
        if "noise_sigma" in noise_parameters:   # the profiled scale at the optimum, in closed form
            f = problem.predict(native.x)[0]
            e = problem.y - f if problem.noise == "constant" else (problem.y - f) / f
            optimum["noise_sigma"] = math.sqrt(np.mean(e ** 2))
        for name in estimated:
            lo, hi = table.loc[name, ["lowerBound", "upperBound"]]
            assert lo < optimum[name] < hi, (case.name, name, lo, optimum[name], hi)
            if name in problem.free:
                assert [lo, hi] == problem.fit_bounds[problem.fit_names.index(name)].tolist(), (case.name, name)
        imported = load_petab(path)
        at_optimum = imported.to_internal([optimum[n] for n in imported.free])
        assert imported.negative_loglik(at_optimum)[0] == pytest.approx(-native.loglik, rel=1e-9), case.name
        refit = fit(imported, multistart=3, seed=0, profiles=False, progress=False, executor=None)
        assert -refit.loglik == pytest.approx(-native.loglik, rel=1e-6), case.name
    assert "plasma_clearance_1c" in checked


def test_cli_petab_evaluate_json(tmp_path):
    problem, path = _petab_from_case(tmp_path)
    out = subprocess.run([sys.executable, "-m", "kinetics.cli", "petab", "evaluate", str(path), "--json"],
                         capture_output=True, text=True, cwd=REPO, check=True)
    result = json.loads(out.stdout)
    assert result["n_measurements"] == 12
    assert result["llh"] == pytest.approx(-problem.negative_loglik(problem.start())[0], rel=1e-10)


@pytest.mark.skipif(not SUITE.is_dir(), reason="the PEtab test suite copy (../shared/conformance/petab-suite-v1) "
                                                 "is not present; get it from github.com/PEtab-dev/petab_test_suite")
def test_petab_test_suite_passes_every_case(tmp_path):
    sys.path.insert(0, str(REPO / "conformance"))
    try:
        import petab_suite
    finally:
        sys.path.pop(0)
    cases = petab_suite.list_cases(SUITE)
    assert len(cases) == 20
    outcomes = {case: petab_suite.run_case(SUITE, case, tmp_path) for case in cases}
    assert outcomes == {case: "ok" for case in cases}
    assert json.loads((tmp_path / "0001.json").read_text())["llh"] == pytest.approx(-0.84750169713188, abs=1e-6)


@pytest.mark.skipif(not SUITE.is_dir(), reason="the PEtab test suite copy (../shared/conformance/petab-suite-v1) "
                                                 "is not present")
def test_preequilibration_gradient_matches_finite_differences():
    from kinetics.fitting.problem import load_petab
    problem = load_petab(SUITE / "0009" / "_0009.yaml")       # a0, b0, k2 estimated; k1 differs in pre-eq
    x = problem.start()
    np.testing.assert_allclose(problem.negative_loglik(x, gradient=True)[1], _fd_gradient(problem, x, 1e-5),
                               rtol=1e-4, atol=1e-6)


BENCHMARK_LLH = {"Perelson_Science1996": -432.0385498, "Bruno_JExpBot2016": 46.6881815,
                 "Boehm_JProteomeRes2014": -138.2219978, "Crauste_CellSystems2017": -190.9639785}


@pytest.mark.skipif(not BENCHMARK.is_dir(), reason="the PEtab benchmark copy (../shared/conformance/petab-benchmark) "
                                                     "is not present; get it from github.com/Benchmarking-Initiative/"
                                                     "Benchmark-Models-PEtab")
@pytest.mark.parametrize("name", sorted(BENCHMARK_LLH))
def test_benchmark_log_likelihood_at_nominal_values(name):
    from kinetics.fitting.problem import load_petab
    from kinetics.io.petab import evaluate
    result = evaluate(load_petab(BENCHMARK / name / f"{name}.yaml"))
    assert result["llh"] == pytest.approx(BENCHMARK_LLH[name], rel=1e-6)


#: best negative log-likelihoods a short fit must reach: Perelson's published optimum (issue 11)
#: and Bruno's nominal value (both rounded up in the last digit)
QUICK_FIT_TARGET = {"Perelson_Science1996": 222.2808, "Bruno_JExpBot2016": -46.68818}


@pytest.mark.skipif(not BENCHMARK.is_dir(), reason="the PEtab benchmark copy (../shared/conformance/petab-benchmark) "
                                                     "is not present; get it from github.com/Benchmarking-Initiative/"
                                                     "Benchmark-Models-PEtab")
@pytest.mark.parametrize("name", sorted(QUICK_FIT_TARGET))
def test_benchmark_three_start_fit_reaches_the_optimum(name):
    """Three starts (the nominal values and two Latin-hypercube points on the parameters' scales)
    reach the target: Perelson (a defective affine model: the compiled matrix exponential, the
    noise scale in closed form) and Bruno (six conditions of an affine model)."""
    from kinetics.fitting.optimize import fit
    from kinetics.fitting.problem import load_petab
    problem = load_petab(BENCHMARK / name / f"{name}.yaml")
    result = fit(problem, multistart=3, seed=0, profiles=False, progress=False, executor=None)
    assert -result.loglik <= QUICK_FIT_TARGET[name]
    assert result.loglik == pytest.approx(-problem.negative_loglik(result.x, priors=False)[0], rel=1e-12)
