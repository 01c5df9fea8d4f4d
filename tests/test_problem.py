"""FitProblem: residuals and their analytic Jacobian over conditions (overrides, doses, initial
values, events), observable scale/offset, log/linear parameter scales; pickling; and the fit
spec (fit.toml) loader with its error messages."""

from __future__ import annotations

import math
import pickle
import re

import numpy as np
import pandas as pd
import pytest

from kinetics import DataError
from kinetics.fitting.problem import Condition, FitProblem, load_fit_spec

from conftest import FIT_TASK_DIR
from fitting_helpers import (central_jacobian, clearance_data,
                             clearance_model, multi_condition_problem, variant_of, write_clearance_case)

REFERENCE_TASK = FIT_TASK_DIR


# ------------------------------------------------------------------ Jacobian
@pytest.mark.parametrize("nonlinear, log_scale", [(True, True), (False, True), (False, False)],
                         ids=["michaelis-menten", "affine", "affine-linear-scale"])
def test_analytic_jacobian_matches_central_differences(nonlinear, log_scale):
    problem = multi_condition_problem(nonlinear=nonlinear, log_scale=log_scale)
    # the problem exercises what it claims to: both scales, all conditions, the right solver path
    expected_log = {"k_mat": log_scale, "k_sec": log_scale, "k_lys": False, "kd": log_scale, "gain": False,
                    "off": False, "Vmax": log_scale, "Km": log_scale, "k_cl": log_scale}
    assert dict(zip(problem.free, problem.log_mask.tolist())) == {n: expected_log[n] for n in problem.free}
    assert problem.condition_names == ["control", "knockdown", "bolus", "switch"]
    assert problem.compiled.method == ("numerical" if nonlinear else "exact")

    x = problem.start() + np.linspace(-0.05, 0.05, problem.n_free)   # away from the start values
    r, J = problem.residuals_and_jacobian(x)
    # the integrator controls its error on states and sensitivities together, so on the numerical
    # path the residuals agree only to its tolerance
    np.testing.assert_allclose(r, problem.residuals(x), rtol=1e-6 if nonlinear else 1e-12, atol=1e-9 if nonlinear else 1e-12)
    assert J.shape == (problem.n_data, problem.n_free)
    fd = central_jacobian(problem.residuals, x, h=1e-6 if not nonlinear else 1e-5)
    for k, name in enumerate(problem.free):
        scale = np.abs(fd[:, k]).max()
        assert scale > 0, f"residuals do not depend on {name}: the test problem is broken"
        err = np.abs(J[:, k] - fd[:, k]).max() / scale
        assert err < (1e-5 if nonlinear else 1e-6), f"d residuals / d {problem.internal_names()[k]}: relative error {err:.2e}"


def test_jacobian_of_overrides_linear_and_nonlinear_in_the_fit_parameters():
    """dp/dphi of a condition whose overrides are linear in the fit parameters is a constant
    matrix, evaluated once per problem; of a nonlinear one, at each evaluation: both against
    central differences (exact affine path)."""
    from fitting_helpers import knockdown_problem, secretion_model
    data = knockdown_problem().data
    conditions = [Condition("control", overrides={"k_sec": "0.5 * k_sec + k_cl / 10"}),
                  Condition("knockdown", overrides={"k_sec": "k_sec * kd"})]
    parameters = {"kd": {"value": 1.0, "min": 1e-3, "max": 10}, "k_mat": {"value": 0.3},
                  "k_sec": {"value": 0.1}, "k_cl": {"value": 3.0}}
    problem = FitProblem(secretion_model(nonlinear=False), data, ["k_mat", "k_sec", "k_cl", "kd"],
                         conditions=conditions, parameters=parameters, noise="proportional")
    linear, nonlinear = problem.plans
    assert linear["dg_free"] is not None and nonlinear["dg_free"] is None
    x = problem.start() + np.linspace(-0.05, 0.05, problem.n_free)
    r, J = problem.residuals_and_jacobian(x)
    fd = central_jacobian(problem.residuals, x, h=1e-6)
    for k, name in enumerate(problem.free):
        scale = np.abs(fd[:, k]).max()
        assert scale > 0, name
        assert np.abs(J[:, k] - fd[:, k]).max() < 1e-6 * scale, name


def test_jacobian_columns_follow_the_parameter_scale():
    """d/d log10(theta) = ln(10) theta d/d theta: the log and linear problems agree."""
    log_p = multi_condition_problem(nonlinear=False, log_scale=True)
    lin_p = multi_condition_problem(nonlinear=False, log_scale=False)
    natural = log_p.to_natural(log_p.start())
    np.testing.assert_allclose(lin_p.to_natural(lin_p.start()), natural)
    _, J_log = log_p.residuals_and_jacobian(log_p.to_internal(natural))
    _, J_lin = lin_p.residuals_and_jacobian(lin_p.to_internal(natural))
    factor = np.where(log_p.log_mask, natural * math.log(10.0), 1.0)
    np.testing.assert_allclose(J_log, J_lin * factor, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(log_p.to_natural(log_p.to_internal(natural)), natural, rtol=1e-14)


def test_override_scale_and_offset_enter_the_predictions():
    """Residuals at the truth are noise only: the knock-down override, gain and offset act."""
    problem = multi_condition_problem(nonlinear=False)
    truth = {"k_mat": 0.8, "k_sec": 0.3, "k_lys": 0.5, "kd": 0.4, "gain": 1.5, "off": 2.0, "k_cl": 1.2}
    x = problem.to_internal(np.array([truth[n] for n in problem.free]))
    r = problem.residuals(x)
    assert np.sqrt(np.mean(r ** 2)) < 0.08          # 5 % noise
    for name, wrong in (("kd", 1.0), ("gain", 1.0), ("off", 20.0)):
        bad = dict(truth, **{name: wrong})
        r_bad = problem.residuals(problem.to_internal(np.array([bad[n] for n in problem.free])))
        assert np.sum(r_bad ** 2) > 3 * np.sum(r ** 2), f"{name} does not act on the predictions"


def test_problem_pickles_through_its_recipe():
    problem = multi_condition_problem(nonlinear=False)
    clone = pickle.loads(pickle.dumps(problem))
    assert clone is not problem and clone.free == problem.free and clone.condition_names == problem.condition_names
    x = problem.start() + 0.1
    r0, J0 = problem.residuals_and_jacobian(x)
    r1, J1 = clone.residuals_and_jacobian(x)
    np.testing.assert_array_equal(r0, r1)
    np.testing.assert_array_equal(J0, J1)


def test_spec_loaded_problem_pickles():
    problem = load_fit_spec(REFERENCE_TASK)
    clone = pickle.loads(pickle.dumps(problem))
    x = problem.start()
    np.testing.assert_array_equal(problem.residuals(x), clone.residuals(x))
    assert clone.settings == problem.settings and clone.origin == problem.origin


# ------------------------------------------------------------------ Python API errors
def test_python_api_free_name_not_a_parameter_suggests():
    data = clearance_data(0)
    with pytest.raises(DataError) as info:
        FitProblem(clearance_model(), data, ["k_c1", "V"], conditions=[Condition("iv")])
    message = str(info.value)
    assert "'k_c1'" in message and "did you mean 'k_cl'" in message


def test_python_api_condition_in_data_not_in_spec():
    data = clearance_data(0).assign(condition="rab27a_kd")
    with pytest.raises(DataError) as info:
        FitProblem(clearance_model(), data, ["k_cl"], conditions=[Condition("control"), Condition("knockdown")])
    message = str(info.value)
    assert "DataFrame" in message and "rab27a_kd" in message and "[conditions.rab27a_kd]" in message


def test_new_fit_level_parameter_needs_a_value():
    with pytest.raises(DataError, match=r"\[parameters\.kd\].*needs a 'value'"):
        FitProblem(clearance_model(), clearance_data(0), ["kd"], parameters={"kd": {"min": 0.1}})


# ------------------------------------------------------------------ fit spec loading
@pytest.fixture
def case(tmp_path):
    return write_clearance_case(tmp_path / "case")


def spec_error(folder) -> str:
    with pytest.raises(DataError) as info:
        load_fit_spec(folder)
    return str(info.value)


def rewrite(folder, old, new, name="fit.toml"):
    path = folder / name
    path.write_text(variant_of(path.read_text(encoding="utf-8"), old, new), encoding="utf-8")
    return folder


def test_fit_spec_format_is_read_without_building_anything(case):
    """io.fit_spec parses, checks and resolves; it loads neither the model nor the data, so a
    spec's own mistakes are reported even when the model file is broken."""
    from kinetics.io.fit_spec import FitSpec, read_fit_spec
    spec = read_fit_spec(case)
    assert isinstance(spec, FitSpec) and spec.path == case / "fit.toml"
    assert spec.model_path == case / "model.toml" and spec.data_path == case / "data.csv"
    assert spec.fit["free"] == ["k_cl", "V", "kd"] and set(spec.conditions) == {"control", "knockdown"}
    (case / "model.toml").write_text("this is not TOML [", encoding="utf-8")
    assert read_fit_spec(case).model_path == case / "model.toml"
    rewrite(case, "[fit]", "[fit]\nnoyse = \"constant\"")
    with pytest.raises(DataError, match=r"\[fit\] unknown key 'noyse'.*did you mean 'noise'"):
        read_fit_spec(case)


def test_valid_spec_loads(case):
    problem = load_fit_spec(case)
    assert problem.free == ["k_cl", "V", "kd"]
    assert problem.condition_names == ["control", "knockdown"]
    assert problem.n_data == 16 and problem.noise == "proportional"
    assert problem.settings["multistart"] == 3
    # fit.toml itself is accepted as well as its folder
    assert load_fit_spec(case / "fit.toml").free == problem.free


def test_unknown_key_in_fit_section(case):
    message = spec_error(rewrite(case, "multistart = 3", "mulitstart = 3"))
    assert str(case / "fit.toml") in message
    assert "[fit]" in message and "'mulitstart'" in message and "did you mean 'multistart'" in message


def test_unknown_top_level_key(case):
    message = spec_error(rewrite(case, "[fit]", "[fitting]\n[fit]"))
    assert str(case / "fit.toml") in message and "'fitting'" in message


def test_free_name_not_a_parameter_suggests(case):
    message = spec_error(rewrite(case, '"k_cl", "V", "kd"', '"k_cll", "V", "kd"'))
    assert str(case / "fit.toml") in message
    assert "[fit] free" in message and "'k_cll'" in message and "did you mean 'k_cl'" in message


def test_free_parameter_listed_twice(case):
    message = spec_error(rewrite(case, '"k_cl", "V", "kd"', '"k_cl", "V", "k_cl"'))
    assert "twice" in message


def test_free_as_a_string_is_explained(case):
    """A string is not split into one-letter names (fixed in 284cdee; found by this test)."""
    message = spec_error(rewrite(case, 'free = ["k_cl", "V", "kd"]', 'free = "k_cl"'))
    assert str(case / "fit.toml") in message and "[fit] free" in message and "list" in message
    assert "'k'" not in message


def test_override_of_unknown_parameter(case):
    message = spec_error(rewrite(case, 'overrides = { k_cl = "k_cl * kd" }', 'overrides = { k_cll = "k_cl * kd" }'))
    assert str(case / "fit.toml") in message and "[conditions.knockdown]" in message
    assert "'k_cll'" in message and "did you mean 'k_cl'" in message


def test_override_expression_with_unknown_name(case):
    message = spec_error(rewrite(case, 'overrides = { k_cl = "k_cl * kd" }', 'overrides = { k_cl = "k_cl * kdd" }'))
    assert "[conditions.knockdown]" in message and "kdd" in message


def test_condition_in_data_not_in_spec(case):
    data = pd.read_csv(case / "data.csv")
    data.loc[data.condition == "knockdown", "condition"] = "rab27a_kd"
    data.to_csv(case / "data.csv", index=False)
    message = spec_error(case)
    assert str(case / "data.csv") in message
    assert "'rab27a_kd'" in message and "[conditions.rab27a_kd]" in message
    first_row = int(np.flatnonzero(data.condition == "rab27a_kd")[0]) + 2        # header is row 1
    assert re.search(rf"rows? {first_row}\b", message), message


@pytest.mark.parametrize("dose, fragments", [
    ('{ compartment = "P", amout = 100, time = 0 }', ["dose 1", "'amount'"]),
    ('{ compartment = "P", amount = "lots", time = 0 }', ["dose 1", "amount", "number"]),
    ('{ compartment = "Q", amount = 100, time = 0 }', ["'Q'", "P"]),
    ('{ compartment = "P", rate = 5, start = 2, end = 1 }', ["infusion", "ends"]),
    ('{ compartment = "P", amount = 100, time = 0, route = "iv" }', ["dose 1", "route"]),
], ids=["misspelled-amount", "amount-not-a-number", "unknown-compartment", "infusion-ends-before-start",
        "unknown-key"])
def test_bad_dose_table(case, dose, fragments):
    old = 'doses = [ { compartment = "P", amount = 100, time = 0 } ]\n\n[conditions.knockdown]'
    message = spec_error(rewrite(case, old, f"doses = [ {dose} ]\n\n[conditions.knockdown]"))
    assert str(case / "fit.toml") in message and "[conditions.control]" in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_model_path_missing(case):
    message = spec_error(rewrite(case, 'model = "model.toml"', 'model = "models/nope.toml"'))
    assert str(case / "fit.toml") in message and "'models/nope.toml'" in message and "not found" in message


def test_data_path_missing(case):
    message = spec_error(rewrite(case, 'data = "data.csv"', 'data = "dat.csv"'))
    assert "dat.csv" in message and "not found" in message


def test_spec_not_found_and_not_toml(tmp_path):
    assert "fit spec not found" in spec_error(tmp_path)
    (tmp_path / "fit.toml").write_text("model = \n", encoding="utf-8")
    assert "not valid TOML" in spec_error(tmp_path)


def test_unknown_noise_model(case):
    message = spec_error(rewrite(case, 'noise = "proportional"', 'noise = "gaussian"'))
    assert "gaussian" in message and "proportional" in message


def test_unknown_key_in_condition(case):
    message = spec_error(rewrite(case, "overrides = {", "override = {"))
    assert "[conditions.knockdown]" in message and "'override'" in message and "did you mean 'overrides'" in message


def test_parameter_value_outside_bounds(case):
    message = spec_error(rewrite(case, "kd = { value = 1.0, min = 0.01, max = 100 }",
                                 "kd = { value = 1000.0, min = 0.01, max = 100 }"))
    assert "[parameters.kd]" in message and "outside its bounds" in message


def test_unknown_key_in_observables_section(case):
    """A misspelled key is not silently ignored (fixed in 284cdee; found by this test)."""
    text = (case / "fit.toml").read_text(encoding="utf-8") + '\n[observables.conc]\nscael = "kd"\n'
    (case / "fit.toml").write_text(text, encoding="utf-8")
    message = spec_error(case)
    assert str(case / "fit.toml") in message and "[observables.conc]" in message and "scael" in message
    assert "scale" in message                      # what is allowed


@pytest.mark.parametrize("entry", ['conc = "kd"', 'conc = 2'])
def test_observables_entry_must_be_a_table(case, entry):
    text = (case / "fit.toml").read_text(encoding="utf-8") + f"\n[observables]\n{entry}\n"
    (case / "fit.toml").write_text(text, encoding="utf-8")
    message = spec_error(case)
    assert "[observables.conc]" in message and "table" in message


def test_observable_scale_with_unknown_name(case):
    text = (case / "fit.toml").read_text(encoding="utf-8") + '\n[observables.conc]\nscale = "gainn"\n'
    (case / "fit.toml").write_text(text, encoding="utf-8")
    message = spec_error(case)
    assert "[observables.conc]" in message and "gainn" in message


def test_reference_fit_task_loads():
    problem = load_fit_spec(REFERENCE_TASK)
    assert problem.model.name == "exo_linear"
    assert problem.free == ["k_mat", "k_lys", "k_sec", "k_pt", "k_tp", "k_cl"]
    assert problem.noise == "proportional" and problem.n_data == 40
    assert sorted(problem.data.observables) == ["MVB", "P"]
    assert problem.settings["multistart"] == 20 and problem.settings["seed"] == 0
    np.testing.assert_allclose(problem.to_natural(problem.start()), [1.5, 0.26667, 0.6, 0.66667, 1.5, 6.6667])
    assert problem.log_mask.all()
    np.testing.assert_allclose(problem.weights, 1 / np.abs(problem.y))


# ------------------------------------------------------- the one-call shortcut for data rows
def _shortcut_problem(model=None, observed=("P", "MVB", "release", "total"), seed=4):
    """Affine conditions that all take Schedule.row_evaluator: an initial value that is an
    expression of a free parameter, a bolus at t = 0, an override; observables whose
    coefficient (release = k_sec * MVB) or offset (total = EE + MVB + bg) is a parameter;
    data rows at t = 0."""
    from kinetics import simulate
    from fitting_helpers import add_noise, secretion_model, tidy

    m = model or secretion_model(nonlinear=False)
    if model is None:
        m.add_parameter("bg", 5.0, min=0.1, max=100, unit="particles")
        m.add_observable("total", "EE + MVB + bg", unit="particles")
    times = np.array([0.0, 0.5, 1.0, 2.0, 4.0, 8.0])
    conditions = [Condition("control"), Condition("knockdown", overrides={"k_sec": "k_sec * kd"}),
                  Condition("bolus", doses=[{"compartment": "P", "amount": 80.0, "time": 0.0}],
                            initial={"MVB": "k_sec * 100"})]
    rng = np.random.default_rng(seed)
    frames = []
    for c in conditions:
        sim = simulate(m, times, doses=c.doses, initial=c.initial)
        frames.append(add_noise(tidy(sim, list(observed), condition=c.name), rng, rel=0.05))
    data = pd.concat(frames, ignore_index=True)
    free = [n for n in ("k_mat", "k_sec", "k_lys", "k_cl", "bg") if n in m.parameters] + ["kd"]
    return FitProblem(m, data, free, conditions=conditions, parameters={"kd": {"value": 0.6, "min": 1e-3, "max": 10}},
                      noise="constant")


def _general_path(problem, x, jacobian=True):
    problem.row_shortcut = False
    try:
        return problem.predict(x, jacobian=jacobian)
    finally:
        problem.row_shortcut = True


def test_row_shortcut_matches_the_general_path_and_finite_differences():
    problem = _shortcut_problem()
    assert problem.row_shortcut and all(plan["row_evaluator"] is not None for plan in problem.plans)
    rng = np.random.default_rng(0)
    for trial in range(4):
        x = problem.start() + rng.uniform(-0.4, 0.4, problem.n_free)
        f, J = problem.predict(x, jacobian=True)
        f_general, J_general = _general_path(problem, x)
        np.testing.assert_allclose(f, f_general, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(J, J_general, rtol=1e-10, atol=1e-10 * np.abs(J_general).max())
        np.testing.assert_allclose(problem.predict(x)[0], f, rtol=1e-14, atol=0)   # without sensitivities
    fd = central_jacobian(lambda z: problem.predict(z)[0], x, h=1e-6)
    for k, name in enumerate(problem.free):
        scale = np.abs(fd[:, k]).max()
        assert scale > 0, f"predictions do not depend on {name}: the test problem is broken"
        assert np.abs(J[:, k] - fd[:, k]).max() / scale < 1e-6, name


def test_row_shortcut_rows_at_time_zero_are_the_initial_values_exactly():
    problem = _shortcut_problem()
    f, _ = problem.predict(problem.start(), jacobian=True)
    rows = problem.plans[2]["rows"]                      # the bolus condition
    at_zero = (rows["time"].to_numpy() == 0) & (rows["observable"].to_numpy() == "P")
    offset = sum(len(plan["rows"]) for plan in problem.plans[:2])
    assert f[offset:][at_zero].tolist() == [80.0]


def test_row_shortcut_with_complex_eigenvalues():
    """A cycle EE -> MVB -> P -> EE has a complex pair of eigenvalues: the complex kernel."""
    from fitting_helpers import secretion_model

    m = secretion_model(nonlinear=False)
    m.add_parameter("k_back", 2.0, min=1e-3, max=100, unit="1/h")
    m.add_flow("recycling", "k_back * P", source="P", target="EE")
    m.parameters["k_mat"].value, m.parameters["k_sec"].value = 3.0, 3.0
    problem = _shortcut_problem(m, observed=("P", "MVB", "release"))
    p = problem.phi(problem.start())[:problem.compiled.n_params]
    assert np.any(np.linalg.eigvals(problem.compiled.affine_matrices(p)[0]).imag != 0), "the test model has a real spectrum"
    x = problem.start() + 0.1
    f, J = problem.predict(x, jacobian=True)
    f_general, J_general = _general_path(problem, x)
    np.testing.assert_allclose(f, f_general, rtol=1e-11)
    np.testing.assert_allclose(J, J_general, rtol=1e-9, atol=1e-9 * np.abs(J_general).max())


def test_row_shortcut_of_a_defective_chain_takes_the_exponential():
    """Equal rates along a chain make the eigenvectors nearly parallel: the eigen path declines
    and the one-call shortcut answers by the compiled matrix exponential (it used to return None
    and leave the data rows to the general path), with the general path's answer."""
    from kinetics import Model, simulate
    from fitting_helpers import tidy

    m = Model("chain", time_unit="h")
    names = [f"X{i}" for i in range(12)]
    for name in names:
        m.add_compartment(name, initial=100.0 if name == "X0" else 0.0, unit="particles")
    m.add_parameter("k", 1.0, min=1e-3, max=100, unit="1/h")
    for a, b in zip(names, names[1:]):
        m.add_flow(f"{a}_to_{b}", f"k * {a}", source=a, target=b)
    m.add_flow("out", f"k * {names[-1]}", source=names[-1])
    data = tidy(simulate(m, [0.5, 2.0, 6.0]), [names[-1]])
    problem = FitProblem(m, data, ["k"], noise="constant")
    x = problem.start()
    plan = problem.plans[0]
    from kinetics.numerics import linear
    assert linear.eigen_decomposition(problem.compiled.affine_matrices(problem.phi(x)[:1])[0]) is None
    rows = plan["row_evaluator"](problem.phi(x)[:1], problem.free_directions)
    assert rows is not None
    f, J = problem.predict(x, jacobian=True)
    np.testing.assert_array_equal(f, rows[0])
    np.testing.assert_allclose(f, data["value"].to_numpy(), rtol=1e-10)
    f_general, J_general = _general_path(problem, x)
    np.testing.assert_allclose(f, f_general, rtol=1e-13)
    np.testing.assert_allclose(J, J_general, rtol=1e-12, atol=1e-13 * np.abs(J_general).max())


def test_row_shortcut_does_not_apply_where_the_plan_has_segments():
    problem = multi_condition_problem(nonlinear=False)
    has_shortcut = {plan["name"]: plan["row_evaluator"] is not None for plan in problem.plans}
    assert has_shortcut == {"control": True, "knockdown": True, "bolus": False, "switch": False}
    assert not problem.row_shortcut       # all conditions must have one, and no scale/offset


def test_loglik_of_a_perfect_fit_is_finite():
    """Exact synthetic data can be fitted to a sum of squares of exactly 0; the log-likelihood
    with the noise scale at its optimum then took log(0) and the start was reported failed
    ("ValueError: math domain error")."""
    import math as _math
    from kinetics import Model
    m = Model("decay")
    m.add_compartment("P", initial=100)
    m.add_parameter("k", 0.5, min=1e-3, max=10)
    m.add_flow("out", "k * P", source="P")
    data = pd.DataFrame({"time": [1.0, 2.0, 4.0], "observable": "P", "value": [60.0, 36.0, 13.0]})
    for noise in ("constant", "proportional"):
        problem = FitProblem(m, data, ["k"], noise=noise)
        assert _math.isfinite(problem.loglik(0.0)) and problem.loglik(0.0) > problem.loglik(1e-6)
