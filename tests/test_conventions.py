"""Python and command-line conventions (issue 13): kinetics.fit/compare/steady_state/pk_summary
at the top level (old module paths still work), FitResult with lmfit's names checked against an
lmfit MinimizerResult of the same problem, parameter DataFrames, notebook tables, condition
selection for steady/pk, and the CLI's --version, --help examples, --dose grammar and --json."""

from __future__ import annotations

import json
import subprocess
import sys

import lmfit
import numpy as np
import pytest

import kinetics
from kinetics.cli import main

from polish_helpers import TRUE, two_condition_fit, two_condition_problem


@pytest.fixture(scope="module")
def result():
    return two_condition_fit(profiles=True)


def test_top_level_functions_and_old_module_paths():
    code = """
import inspect, kinetics
from kinetics.fitting.optimize import fit
from kinetics.analysis.compare import compare
from kinetics.analysis.steady import steady_state
from kinetics.analysis.pk import pk_summary
assert kinetics.fit is fit and kinetics.compare is compare
assert kinetics.steady_state is steady_state and kinetics.pk_summary is pk_summary
from kinetics import fit as f, steady_state as s
assert f is fit and s is steady_state
import kinetics.fit, kinetics.compare          # the old modules: the attribute becomes the module ...
from kinetics.fit import fit as old_fit, FitResult
from kinetics.compare import Comparison
import kinetics.fit as fit_module
assert old_fit is fit and fit_module.FitResult is FitResult
assert callable(kinetics.fit) and callable(kinetics.compare)   # ... which is callable as the function
assert inspect.signature(kinetics.fit) == inspect.signature(fit)
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_callable_old_module_fits(tmp_path):
    import kinetics.fit as fit_module
    from conftest import write_fit_case
    out = fit_module(write_fit_case(tmp_path), multistart=1, profiles=False, progress=False, executor=None)
    assert isinstance(out, fit_module.FitResult) and out.success


def test_lmfit_names_match_an_lmfit_minimizer_result():
    # constant noise: the maximum-likelihood optimum is the least-squares one lmfit finds
    result = two_condition_fit(profiles=False, noise="constant")
    problem = result.problem
    # lmfit on the same residuals, started at our optimum: its result object is the reference
    params = lmfit.Parameters()
    for name, value in zip(problem.free, result.values):
        params.add(name, value=value, min=1e-6)

    def residual(p):
        x = problem.to_internal(np.array([p[n].value for n in problem.free]))
        return problem.residuals(x, result.weights)

    reference = lmfit.minimize(residual, params, method="least_squares")
    for name in ("params", "nvarys", "ndata", "nfree", "var_names", "covar", "residual", "init_values", "success",
                 "message", "aic", "bic", "chisqr", "redchi", "nfev", "method", "errorbars", "init_vals", "uvars", "aborted"):
        assert hasattr(reference, name), name          # the names are lmfit's ...
        assert hasattr(result, name), name             # ... and ours
    assert (result.nvarys, result.ndata, result.nfree) == (reference.nvarys, reference.ndata, reference.nfree)
    assert result.var_names == reference.var_names
    np.testing.assert_allclose(result.chisqr, reference.chisqr, rtol=1e-6)
    np.testing.assert_allclose(np.abs(result.residual), np.abs(reference.residual), rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(result.covar, reference.covar, rtol=2e-2)
    np.testing.assert_allclose(result.redchi, result.chisqr / result.nfree)
    np.testing.assert_allclose(result.chisqr, np.sum(result.residual ** 2))
    # best_fit: the data minus the unweighted residual
    np.testing.assert_allclose(result.best_fit, result.data - result.residual / result.weights, rtol=1e-10)
    assert result.init_values == {"k_el": 1.0, "V": 2.0, "kd": 0.7}
    assert result.init_vals == [1.0, 2.0, 0.7]
    assert result.errorbars and not result.aborted
    # uvars: correlated ufloats; the variance of a sum carries the covariance
    total = sum(result.uvars.values())
    np.testing.assert_allclose(total.std_dev ** 2, result.covar.sum(), rtol=1e-8)
    assert set(result.uvars) == set(reference.uvars)
    np.testing.assert_allclose(result.aic, 2 * (result.nvarys + result.n_noise) - 2 * result.loglik)


def test_eval_conf_interval_summary_and_frames(result):
    p = result.problem
    knockdown = p.data.for_condition("knockdown")
    curves = result.eval(condition="knockdown")
    np.testing.assert_allclose(curves["conc"], result.best_fit[len(knockdown):], rtol=1e-9)
    # eval with other parameter values: kd = 1 makes the knock-down curve the control's
    same = result.eval(params={"kd": 1.0}, condition="knockdown")
    np.testing.assert_allclose(same["conc"], result.eval(condition="control")["conc"], rtol=1e-9)
    with pytest.raises(kinetics.FitError, match="unknown_condition.*control, knockdown"):
        result.eval(condition="unknown_condition")
    ci = result.conf_interval()
    for name in p.free:
        (p_lo, lo), (p_best, best), (p_hi, hi) = ci[name]
        assert (p_lo, p_best, p_hi) == (0.95, 0.0, 0.95)
        assert (lo, hi) == result.ci95[name] and lo < best < hi
    frame = result.parameters_frame()
    assert list(frame.index) == p.fit_names
    np.testing.assert_allclose(frame.loc[p.free, "value"], result.values)
    np.testing.assert_allclose(frame.loc[p.free, "stderr"], result.stderr)
    assert frame.loc["kd", "ci95_lower"] == result.ci95["kd"][0]
    assert abs(frame.loc["kd", "value"] - TRUE["kd"]) < 0.1
    assert result.params_frame.equals(frame)
    summary = result.summary()
    assert summary["nvarys"] == 3 and summary["best_values"] == result.best_values
    json.dumps(summary, default=float)
    html = result._repr_html_()
    assert "<table" in html and "kd" in html and "aicc" in html


def test_notebook_tables():
    import pandas as pd
    model = kinetics.load_model("models/lifecycle.toml")
    assert "<table" in model._repr_html_() and "endocytosis" in model._repr_html_()
    sim = kinetics.simulate(model, [0.0, 1.0, 2.0])
    assert "<table" in sim._repr_html_()
    steady = kinetics.steady_state(model)
    frame = steady.to_frame()
    assert isinstance(frame, pd.DataFrame) and frame.loc["mvb", "value"] == steady.values["mvb"]
    assert "<table" in steady._repr_html_() and "secretion" in steady._repr_html_()


def test_steady_and_pk_of_one_condition(result):
    from kinetics.analysis.uncertainty import pk_uncertainty, steady_state_uncertainty
    from polish_helpers import unit_model
    model = unit_model()
    model.add_flow("production", "10", target="plasma")     # a steady state to speak of
    best = dict(zip(result.problem.free, result.values))
    table = pk_uncertainty(model, result, {"compartment": "plasma", "amount": 100}, "conc", n_samples=0,
                           condition="knockdown").set_index("quantity")
    expected = kinetics.pk_summary(model, {"compartment": "plasma", "amount": 100}, "conc",
                                   {"k_el": best["k_el"] * best["kd"], "V": best["V"]})
    np.testing.assert_allclose(table.loc["auc_inf", "estimate"], expected.auc_inf, rtol=1e-10)
    control = steady_state_uncertainty(model, result, n_samples=0, condition="control").set_index("quantity")
    np.testing.assert_allclose(control.loc["plasma", "estimate"], 10 / best["k_el"], rtol=1e-10)
    with pytest.raises(kinetics.KineticsError, match="no condition 'treated'.*control, knockdown"):
        steady_state_uncertainty(model, result, n_samples=0, condition="treated")


# ------------------------------------------------------------------------------ command line

def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"kinetics {kinetics.__version__}"


@pytest.mark.parametrize("command", ["", "models", "simulate", "fit", "compare", "steady", "pk", "export", "demo"])
def test_every_help_has_a_description_and_examples(command, capsys):
    with pytest.raises(SystemExit):
        main(([command] if command else []) + ["--help"])
    text = capsys.readouterr().out
    assert "examples:\n  kinetics " in text
    lines = text.split("\n\n")
    assert len(lines[1].strip()) > 10          # the description after the usage


def test_one_dose_grammar(capsys):
    code, _, err = run(capsys, "simulate", "circulation_1c", "--dose", "plasma:5")
    code2, _, err2 = run(capsys, "pk", "circulation_1c", "--dose", "plasma:5", "--observable", "plasma_conc")
    assert code == code2 == 1
    grammar = "COMPARTMENT=AMOUNT[@TIME]"
    assert grammar in err and grammar in err2
    # pk accepts the same grammar (time 0) and refuses another time
    assert run(capsys, "pk", "circulation_1c", "--dose", "plasma=1e10@0", "--observable", "plasma_conc", "--json")[0] == 0
    code, _, err = run(capsys, "pk", "circulation_1c", "--dose", "plasma=1e10@2", "--observable", "plasma_conc")
    assert code == 1 and "bolus at time 0" in err


def test_simulate_json_records(capsys):
    code, out, _ = run(capsys, "simulate", "circulation_1c", "--dose", "plasma=100@0", "--points", "3", "--t-end", "2",
                       "--json")
    assert code == 0
    data = json.loads(out)
    assert [r["time"] for r in data["records"]] == [0.0, 1.0, 2.0]
    assert data["time_unit"] == "h" and data["records"][0]["plasma"] == 100.0


def test_fit_json_and_figure_format(tmp_path, capsys):
    from conftest import write_fit_case
    case = write_fit_case(tmp_path / "case")
    code, out, err = run(capsys, "fit", str(case), "--out", str(tmp_path / "out"), "--no-profiles", "--no-progress",
                         "--serial", "--json", "--figure-format", "svg")
    assert code == 0, err
    data = json.loads(out)
    assert data["statistics"]["n_data"] == 10 and set(data["parameters"]) == {"k_el", "V"}
    assert (tmp_path / "out" / "fit.svg").is_file() and (tmp_path / "out" / "report.html").is_file()
    code, _, err = run(capsys, "fit", str(case), "--out", str(tmp_path / "out"), "--figure-format", "gif")
    assert code == 1 and "--figure-format 'gif'" in err


def test_steady_and_pk_condition_and_plot(result, tmp_path, capsys):
    folder = tmp_path / "fit"
    result.save(folder)
    model_file = tmp_path / "clearance_units.toml"
    model_file.write_text("""name = "clearance_units"
time_unit = "h"
[compartments]
plasma = { initial = 0, unit = "particles" }
[parameters]
k_el = { value = 1.0, min = 1e-3, max = 100, unit = "1/h" }
V = { value = 2.0, min = 0.1, max = 10, unit = "mL" }
[flows]
production = { to = "plasma", rate = "10" }
elimination = { from = "plasma", rate = "k_el * plasma" }
[observables]
conc = { expr = "plasma / V", unit = "particles/mL" }
""")
    best = dict(zip(result.problem.free, result.values))
    code, out, err = run(capsys, "steady", str(model_file), "--fit", str(folder), "--condition", "knockdown",
                         "--samples", "0", "--json", "--plot", str(tmp_path / "steady.png"))
    assert code == 0, err
    data = json.loads(out)
    np.testing.assert_allclose(data["compartments"]["plasma"]["value"], 10 / (best["k_el"] * best["kd"]), rtol=1e-8)
    assert data["condition"] == "knockdown" and (tmp_path / "steady.png").stat().st_size > 10_000
    code, _, err = run(capsys, "steady", str(model_file), "--fit", str(folder), "--condition", "treated")
    assert code == 1 and "no condition 'treated'" in err and "control, knockdown" in err
    code, _, err = run(capsys, "pk", str(model_file), "--dose", "plasma=1", "--observable", "conc", "--condition", "x")
    assert code == 1 and "needs --fit DIR" in err
    code, _, err = run(capsys, "pk", str(model_file), "--dose", "plasma=100", "--observable", "conc", "--fit", str(folder),
                       "--condition", "control", "--samples", "0", "--plot", str(tmp_path / "pk.svg"))
    assert code == 0, err
    assert (tmp_path / "pk.svg").read_text().lstrip().startswith("<?xml")
